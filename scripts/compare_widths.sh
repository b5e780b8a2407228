#!/usr/bin/env bash
# The width table of docs/experiments.md: one recipe at four widths, plus the paper's own recipe (BCE,
# lr 1e-4) at widths 16 and 64, on the 128x128 grid. Written for one GPU: the runs share it, in parallel.
#
#   python -m hemseg prepare ../shared/data/spine-mri build/spine-slices --seed 0
#   scripts/compare_widths.sh build/spine-slices runs
#   python -m hemseg lab compare runs/*-checkpoints
#
# Its unet16 run is step 1 of scripts/train_default_model.sh.
set -uo pipefail
data=${1:-build/spine-slices}
runs=${2:-runs}
limit=${RUN_TIME_LIMIT:-3600}  # seconds per run; a run stopped early keeps its checkpoints and log
mkdir -p "$runs"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TQDM_MININTERVAL=${TQDM_MININTERVAL:-30}

launch() {
  local name=$1; shift
  timeout "$limit" accelerate launch --num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend no \
    train.py --data "$data" --output-dir "$runs/$name" --epochs 50 "$@" > "$runs/$name.log" 2>&1
  echo "$name finished with exit code $?"
}

ours=(--set training.loss=bce+dice --lr 1e-3)
paper=(--set training.loss=bce --lr 1e-4)
launch unet8 --set model.base_channels=8 "${ours[@]}" &
launch unet16 --set model.base_channels=16 "${ours[@]}" &
launch unet32 --set model.base_channels=32 "${ours[@]}" &
launch unet64 --set model.base_channels=64 "${ours[@]}" &
launch unet16-paper --set model.base_channels=16 "${paper[@]}" &
launch unet64-paper --set model.base_channels=64 "${paper[@]}" &
wait
