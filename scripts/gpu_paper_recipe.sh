#!/usr/bin/env bash
# The paper's full recipe on one GPU, timed: 64 filters, about 2,400 slices, up to 70 epochs, with bf16,
# channels-last memory and a compiled graph (Accelerate's dynamo backend); data and augmentation stay on the GPU.
#
#   python -m hemseg prepare ../shared/data/spine-mri build/paper-slices --seed 0 --slices-per-plane 11  # 2,343
#   scripts/gpu_paper_recipe.sh build/paper-slices runs/paper
set -euo pipefail
data=${1:-build/paper-slices}
out=${2:-runs/paper}
start=$(date +%s)
accelerate launch --num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend inductor \
  train.py --data "$data" --output-dir "$out" --base-channels 64 --epochs 70 --patience 1000 --channels-last "${@:3}"
echo "paper recipe: $(($(date +%s) - start)) s wall clock (loading, compiling, 70 epochs, final evaluation)"
