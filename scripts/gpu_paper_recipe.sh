#!/usr/bin/env bash
# The paper's full recipe on one GPU, timed: UNet with 64 filters, binary hemangioma output, Adam lr 1e-4, BCE,
# 128x128, 70 epochs (early stopping off so all 70 run), on about 2,400 slices; bf16 and channels-last memory. Data
# and augmentation stay on the GPU (train.py does that anyway). A checkpoint every 10 epochs and after each new best
# epoch: on an H100 one takes about 0.4 s, a fifth of an epoch.
#
#   python -m hemseg prepare ../shared/data/spine-mri build/paper-slices --seed 0 --slices-per-plane 12  # 2,556
#   scripts/gpu_paper_recipe.sh build/paper-slices runs/paper
#   DYNAMO=inductor scripts/gpu_paper_recipe.sh build/paper-slices runs/paper-compiled   # compiled
#
# Not compiled by default: on an H100 (docs/benchmarks.md) compiling took 63 s and the compiled epochs were no
# faster (1.9 s against 1.7 s). Extra arguments go to train.py; on an H100 `--batch-size 32` took 126 s and learned
# less than batch 16, `--batch-size 64` took 97 s and learned almost nothing in 70 epochs.
#
# Prints the wall clock of the whole run (start-up, loading, 70 epochs, checkpoints, final evaluation) and the sum of
# the epochs' own seconds from training_log.csv (training and validation only).
set -euo pipefail
data=${1:-build/paper-slices}
out=${2:-runs/paper}
start=$(date +%s.%N)
# One process on one GPU needs no launcher: `accelerate launch` would set these variables (and OMP_NUM_THREADS=1)
# after its own Python start-up (2-4 s on the 2-vCPU machine, `accelerate launch ... train.py --help` against
# `python train.py --help`).
ACCELERATE_MIXED_PRECISION=bf16 ACCELERATE_DYNAMO_BACKEND="${DYNAMO:-no}" python3 \
  train.py --recipe configs/paper.yaml --data "$data" --output-dir "$out" --set 'model.labels=[hemangioma]' \
  --set training.patience=1000 --set training.channels_last=true --set checkpoints.every=10 "${@:3}"
end=$(date +%s.%N)
python3 - "$out-checkpoints/training_log.csv" "$start" "$end" <<'EOF'
import csv
import statistics
import sys

rows = list(csv.DictReader(open(sys.argv[1])))
seconds = [float(r["seconds"]) for r in rows]
wall = float(sys.argv[3]) - float(sys.argv[2])
print(
    f"paper recipe: {wall:.0f} s wall clock; {len(rows)} epochs took {sum(seconds):.0f} s of it "
    f"(the first {seconds[0]:.1f} s, the median of the others {statistics.median(seconds[1:] or seconds):.2f} s)"
)
EOF
