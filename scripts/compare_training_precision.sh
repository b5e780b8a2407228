#!/usr/bin/env bash
# Does the fast training path change validation Dice? Four fine-tunes of the previous bundled model (v1, a square
# 192 grid), two epochs each, on one slice folder: fp32 eager, bf16 + channels-last eager, the same compiled (all seed
# 7), and fp32 with seed 8 for the spread that a different seed alone gives. Then every model is scored by the same
# fp32 evaluation.
#
#   python -m hemseg prepare ../shared/data/spine-mri build/spine-slices --seed 0
#   mkdir -p build/bundled-v1 && git archive 1808b8f hemseg/bundled_model | tar -x -C build/bundled-v1
#   scripts/compare_training_precision.sh build/spine-slices build/precision build/bundled-v1/hemseg/bundled_model
#
# Prints the validation Dice of each run and its difference from the fp32 seed-7 run. About 15 minutes of
# training on a 2-core CPU.
set -euo pipefail
data=${1:-build/spine-slices}
out=${2:-build/precision}
start_from=${3:-build/bundled-v1/hemseg/bundled_model}
mkdir -p "$out"

train() {  # name mixed_precision dynamo_backend seed
  [ -f "$out/$1/metrics.json" ] && return
  local start=$SECONDS
  accelerate launch --cpu --num_processes 1 --num_machines 1 --mixed_precision "$2" --dynamo_backend "$3" \
    train.py --recipe configs/bundled-v1.yaml --data "$data" --output-dir "$out/$1" --set augmentation.curve_p=0 \
    --set validation.noise=0 --set validation.select_by=pooled_dice --set 'validation.choose_seed_thresholds=[]' \
    --lr 1.5e-4 --epochs 2 --seed "$4" --init-from "$start_from" > "$out/$1.log" 2>&1
  echo "$1: trained and evaluated in $((SECONDS - start)) s"
}

train fp32 no no 7
train bf16 bf16 no 7
train bf16-compiled bf16 inductor 7
train fp32-seed8 no no 8
for run in fp32 bf16 bf16-compiled fp32-seed8; do
  python -m hemseg evaluate --model "$out/$run" --data "$data" --split val --precision fp32 --out "$out/$run-val" \
    > "$out/$run-val.log" 2>&1
done
python3 - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
runs = ["fp32", "bf16", "bf16-compiled", "fp32-seed8"]
scores = {run: json.load(open(f"{out}/{run}-val/metrics.json")) for run in runs}
print("| label | plane | score | " + " | ".join(runs) + " |")
print("|" + " --- |" * (3 + len(runs)))
for label, planes in scores["fp32"].items():
    for plane in planes:
        for key in ("dice_fg", "pooled_dice"):
            ref = planes[plane][key]
            cells = [f"{ref:.4f}"] + [f"{scores[r][label][plane][key] - ref:+.4f}" for r in runs[1:]]
            print(f"| {label} | {plane} | {key} | " + " | ".join(cells) + " |")
EOF
