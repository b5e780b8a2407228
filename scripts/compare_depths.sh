#!/usr/bin/env bash
# Depth of the U-Net at the bundled model's width (16 filters) and grid (192, trained on 128x128 windows): the same
# recipe from scratch at depths 3, 4 and 5, one run after another, each for the same number of epochs.
#
#   python -m hemseg prepare ../shared/data/spine-mri build/spine-slices --seed 0
#   scripts/compare_depths.sh build/spine-slices runs/depth
#   python -m hemseg lab compare runs/depth/*-checkpoints
set -euo pipefail
data=${1:-build/spine-slices}
runs=${2:-runs/depth}
epochs=${EPOCHS:-8}
mkdir -p "$runs"
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-30}
for depth in 3 4 5; do
  accelerate launch --cpu --num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend no train.py \
    --recipe configs/bundled-v1.yaml --data "$data" --output-dir "$runs/unet16-depth$depth" --set model.depth="$depth" \
    --set augmentation.curve_p=0 --set validation.noise=0 --set validation.select_by=pooled_dice \
    --set 'validation.choose_seed_thresholds=[]' --set training.patience="$epochs" --lr 1e-3 --epochs "$epochs" \
    --seed 0 > "$runs/unet16-depth$depth.log" 2>&1
done
