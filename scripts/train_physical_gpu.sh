#!/usr/bin/env bash
# The physical-contract models on one GPU, at once: the bundled candidate (every source, cases split by patient)
# and the two held-out-source runs (train on one source, test on the other: our stand-in for a new hospital).
# Each trains from scratch with configs/physical.yaml within a time budget, then evaluates its best epoch.
#
#   scripts/train_physical_gpu.sh VOLUMES OUT [MINUTES [TRAIN.PY ARGUMENTS...]]
#
# VOLUMES: a folder of <case>_image.nii(.gz) with <case>_label.nii(.gz), e.g. ../shared/data/spine-mri.
set -euo pipefail
volumes=$1
out=$2
minutes=${3:-5.5}
mkdir -p "$out"
prepare() {
  python3 -m hemseg prepare "$volumes" "$out/$1" --seed 0 --workers 5 "${@:2}" > "$out/$1.log" 2>&1
}
prepare slices --train-simulations 2 &
prepare slices-test-vb2 --test-sources vb2 --train-simulations 2 &
prepare slices-test-vb3 --test-sources vb3 --train-simulations 4 &  # vb2 trains alone: 14 cases, more draws
wait
train() {  # slice folder, model folder
  ACCELERATE_MIXED_PRECISION=${ACCELERATE_MIXED_PRECISION:-bf16} python3 train.py --recipe configs/physical.yaml \
    --data "$out/$1" --output-dir "$out/$2" --set training.time_limit_min="$minutes" "${@:3}" > "$out/$2.log" 2>&1
}
train slices physical "${@:4}" &
train slices-test-vb2 physical-test-vb2 "${@:4}" &
train slices-test-vb3 physical-test-vb3 "${@:4}" &
wait
