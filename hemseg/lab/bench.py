"""`hemseg lab bench`: speed and memory of the paper's U-Net, the bundled model and faster variants.

Each variant runs in a fresh process (so peak resident memory is its own) on the same machine, one after another:

- parameters and GFLOP for one slice (torch's FlopCounterMode; a multiply-add counts 2) on the input the model
  really gets: the paper's full 128x128 square for the paper U-Net; for the bundled model the example slice at its
  pixel size, padded to a multiple of 16 (a physical contract), or the part of its grid that holds the slice
  (``Segmenter.window``, a square grid). The example's pixel size, 1 mm, is given, as a DICOM or NIfTI file gives
  its own: the estimate for files without one is not timed here (``hemseg lab scale`` measures its accuracy);
- the plain fp32 eager forward pass alone on that input (median);
  (the end-to-end and batch columns go through ``Segmenter``, which windows every model, the paper's too);
- end-to-end latency for one slice through ``Segmenter.predict`` and its masks (read array -> preprocess -> model
  -> resize back -> threshold, with the seed thresholds the model has), median and 95th percentile;
- batch throughput: ``Segmenter.probabilities`` on 32 slices, slices/s;
- training throughput: forward, backward and Adam step at batch 16, 128x128, samples/s (fp32 eager, or bf16
  autocast with channels-last memory and fused Adam for the bf16 variants, as train.py runs them, compiled with
  torch.compile where named);
- peak resident memory of the process.

Then the training speed-up of the bundled architecture: train.py's fast step (bf16 autocast, channels-last, fused
Adam), eager and compiled, against a plain fp32 eager loop, the loops taking steps in turn in one process. On a
shared machine the load drifts between the variants' processes; taking turns exposes every loop to the same drift,
so their ratios are fair.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from hemseg.inference.segmenter import BUNDLED_MODEL, Segmenter
from hemseg.model import UNet, count_parameters
from hemseg.preprocessing import pad_to_multiple, preprocess
from hemseg.speed import fused_adam, precision_context

EXAMPLE = Path(__file__).parents[2] / "examples" / "vb2_07_sagittal_042.png"
EXAMPLE_SPACING = (1.0, 1.0)  # examples/manifest.csv; given as DICOM or NIfTI give theirs (no estimate is timed)
# name: (model, optimize, precision, compile the training step)
VARIANTS = {
    "paper U-Net, fp32 eager": ("paper", False, "fp32", False),
    "bundled, fp32 eager": ("bundled", False, "fp32", False),
    "bundled, BN folded + channels-last, fp32": ("bundled", True, "fp32", False),
    "bundled, BN folded + channels-last, bf16": ("bundled", True, "bf16", False),
    "bundled, bf16 + channels-last, training compiled": ("bundled", True, "bf16", True),
    "paper U-Net, BN folded + channels-last, bf16": ("paper", True, "bf16", False),
}


def timed(fn, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def synchronized(result, device: torch.device):
    """``result`` once the device has finished computing it (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result


def training_step(model: UNet, device: torch.device, fast: bool, compiled: bool = False) -> Callable[[], None]:
    """One forward, backward and Adam step at batch 16, 128x128, on ``model`` as it is: the plain fp32 eager loop,
    or with ``fast`` train.py's fast setting (bf16 autocast where native, channels-last memory, fused Adam)."""
    model = model.train().to(device)
    if fast:
        model = model.to(memory_format=torch.channels_last)
    if compiled:  # what `accelerate launch --dynamo_backend inductor` does to the model
        model = torch.compile(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=fused_adam(device) if fast else None)
    x = torch.rand(16, 1, 128, 128, device=device)
    y = (torch.rand(16, model.out_channels, 128, 128, device=device) > 0.9).float()
    if fast:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with precision_context(device, "bf16" if fast else "fp32"):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        synchronized(loss, device)

    return step


def training_throughput(model: UNet, device: torch.device, fast: bool, steps: int, compiled: bool) -> float:
    step = training_step(model, device, fast, compiled)
    return 16 / float(np.median(timed(step, steps, warmup=2 if compiled else 1)))


def training_speedup(device: torch.device, steps: int) -> dict:
    """samples/s of the plain fp32 eager loop and of train.py's fast step, eager and compiled, on copies of the
    bundled architecture (same initial weights), their steps taken in turn; each fast loop's ratio of the medians
    to the plain loop's."""
    model = UNet.from_pretrained(BUNDLED_MODEL)
    loops = {
        "fp32_eager": training_step(copy.deepcopy(model), device, fast=False),
        "fast": training_step(copy.deepcopy(model), device, fast=True),
        "fast_compiled": training_step(copy.deepcopy(model), device, fast=True, compiled=True),
    }
    times: dict[str, list[float]] = {name: [] for name in loops}
    for step in loops.values():  # warm-up: oneDNN picks its kernels on the first call, torch.compile compiles
        step()
        step()
    for _ in range(steps):
        for name, step in loops.items():
            times[name].append(timed(step, 1, warmup=0)[0])
    rates = {name: 16 / float(np.median(t)) for name, t in times.items()}
    ratios = {name: rate / rates["fp32_eager"] for name, rate in rates.items() if name != "fp32_eager"}
    return {"samples_per_s": rates, "ratio": ratios, "steps": steps}


def measure(name: str, device: torch.device, quick: bool) -> dict:
    which, optimize, precision, compiled = VARIANTS[name]
    model = UNet.from_pretrained(BUNDLED_MODEL) if which == "bundled" else UNet(1, 1, 64)
    segmenter = Segmenter(model, which, device=device, precision=precision, optimize=optimize)
    image = np.asarray(Image.open(EXAMPLE))
    x = preprocess(image, model.preprocessing, EXAMPLE_SPACING).to(device)  # the paper U-Net: its 128x128 square
    if segmenter.physical:  # the whole slice at the model's pixel size, as Segmenter runs it
        x = pad_to_multiple(x, 2**model.depth)[0]
    elif which == "bundled":
        x = x[..., *segmenter.window(image.shape, tuple(x.shape[-2:]))]
    with FlopCounterMode(display=False) as counter:
        model.eval()(x)
    with torch.inference_mode():
        forward = timed(lambda: synchronized(model(x), device), 5 if quick else 20)
        # Masks are made on demand: timed with the prediction.
        latency = timed(lambda: segmenter.predict(image, EXAMPLE_SPACING).masks, 10 if quick else 50)
        images, spacings = [image] * 32, [EXAMPLE_SPACING] * 32
        batch = timed(lambda: segmenter.probabilities(images, spacings, batch_size=32), 2 if quick else 5, warmup=1)
    steps = 2 if quick or which == "paper" else 10
    train = training_throughput(model, device, precision == "bf16", steps, compiled)
    return {
        "variant": name,
        "parameters_M": count_parameters(model) / 1e6,
        "input": "x".join(map(str, x.shape[-2:])),
        "gflop_per_slice": counter.get_total_flops() / 1e9,
        "forward_ms": 1000 * float(np.median(forward)),
        "latency_median_ms": 1000 * float(np.median(latency)),
        "latency_p95_ms": 1000 * float(np.percentile(latency, 95)),
        "batch32_slices_per_s": 32 / float(np.median(batch)),
        "train_samples_per_s": train,
        "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def markdown(results: list[dict]) -> str:
    head = (
        "variant | parameters (M) | model input (px) | GFLOP/slice | fp32 eager forward alone (ms) | one slice end "
        "to end, median / p95 (ms) | batch 32 (slices/s) | training (samples/s) | peak RSS (MiB)"
    )
    lines = [f"| {head} |", "|" + " --- |" * 9]
    for r in results:
        lines.append(
            f"| {r['variant']} | {r['parameters_M']:.2f} | {r['input']} | {r['gflop_per_slice']:.2f} | "
            f"{r['forward_ms']:.1f} | "
            f"{r['latency_median_ms']:.1f} / {r['latency_p95_ms']:.1f} | {r['batch32_slices_per_s']:.1f} | "
            f"{r['train_samples_per_s']:.1f} | {r['peak_rss_MiB']:.0f} |"
        )
    return "\n".join(lines)


def add_bench_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("bench", help="speed and memory of the paper's U-Net and the bundled model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (for tests)")
    parser.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)  # one, in this process
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.set_defaults(command=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    if not EXAMPLE.exists():
        raise FileNotFoundError(f"{EXAMPLE}: the bench times this example slice of a clone's examples/ folder")
    if args.variant:
        print(json.dumps(measure(args.variant, device, args.quick)))
        return 0
    results = []
    for name in VARIANTS:
        command = [sys.executable, "-m", "hemseg", "lab", "bench", "--variant", name, "--device", args.device]
        out = subprocess.run(command + (["--quick"] if args.quick else []), capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    table = markdown(results)
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "unknown CPU",
        )
        if Path("/proc/cpuinfo").exists()
        else "unknown"
    )
    print(
        f"{device.type.upper()}: {torch.cuda.get_device_name() if device.type == 'cuda' else cpu}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}\n"
    )
    print(table)
    speedup = training_speedup(device, 3 if args.quick else 30)
    rates, ratios = speedup["samples_per_s"], speedup["ratio"]
    print(
        f"\nTraining the bundled architecture, the loops taking steps in turn ({speedup['steps']} steps each, batch "
        f"16, 128x128): plain fp32 eager {rates['fp32_eager']:.1f} samples/s; bf16 + channels-last + fused Adam "
        f"{rates['fast']:.1f} samples/s ({ratios['fast']:.2f}x), the same compiled {rates['fast_compiled']:.1f} "
        f"samples/s ({ratios['fast_compiled']:.2f}x)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"variants": results, "training_speedup": speedup}, indent=1))
    return 0
