#!/usr/bin/env bash
# The bundled default model, from a slice folder to hemseg/bundled_model, in two steps:
#   1. UNet with 16 base filters on the 128x128 grid from scratch (fast: a GPU did it in ~7 s an epoch);
#   2. fine-tuned on the 192x192 grid, on 128x128 windows around the anatomy (same cost per sample as step 1,
#      1.5x the resolution: small lesions and thin slices keep their shape), which writes the model folder.
#
#   python -m hemseg prepare ../shared/data/spine-mri build/spine-slices --seed 0
#   scripts/train_default_model.sh build/spine-slices runs
#   cp runs/hemseg-unet16/{model.safetensors,config.json,README.md,metrics.json,training_log.csv,training_curves.png} \
#      hemseg/bundled_model/ && cp -r runs/hemseg-unet16/evaluation hemseg/bundled_model/
#
# Each step resumes where it stopped when run again (--resume-from-checkpoint latest).
set -euo pipefail
data=${1:-build/spine-slices}
runs=${2:-runs}
mkdir -p "$runs"
launch=(accelerate launch --num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend no train.py)
resume() { [ -d "$1-checkpoints/checkpoints" ] && echo --resume-from-checkpoint latest || true; }

[ -d "$runs/unet16" ] || "${launch[@]}" --data "$data" --output-dir "$runs/unet16" --base-channels 16 \
  --loss bce+dice --lr 1e-3 --epochs 200 --patience 15 --channels-last $(resume "$runs/unet16")
"${launch[@]}" --data "$data" --output-dir "$runs/hemseg-unet16" --base-channels 16 --image-size 192 --crop-size 128 \
  --loss bce+dice --lr 3e-4 --epochs 50 --patience 10 --channels-last --init-from "$runs/unet16" \
  $(resume "$runs/hemseg-unet16")
