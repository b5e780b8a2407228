import json

import pytest
import torch
from conftest import run

from hemseg import UNet
from hemseg.lab.bench import markdown, training_speedup, training_step


@pytest.mark.slow  # a benchmark process of its own
def test_bench_measures_one_variant_in_its_own_process():
    result = run(["-m", "hemseg", "lab", "bench", "--variant", "bundled, fp32 eager", "--quick"])
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["parameters_M"] == pytest.approx(1.94, abs=0.01)
    assert row["gflop_per_slice"] > 1 and row["latency_median_ms"] > 0 and row["peak_rss_MiB"] > 100
    height, width = map(int, row["input"].split("x"))  # the window of the model grid that holds the example
    assert height % 16 == 0 and width % 16 == 0 and width < height
    assert row["latency_p95_ms"] >= row["latency_median_ms"] and row["train_samples_per_s"] > 0
    table = markdown([row])
    assert table.count("\n") == 2 and f"| bundled, fp32 eager | 1.94 | {row['input']} |" in table


@pytest.mark.parametrize(
    "fast, compiled",
    [(False, False), (True, False), pytest.param(True, True, marks=pytest.mark.slow)],  # compiling: 30 s
)
def test_training_step_updates_the_weights(fast, compiled):
    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=4, depth=2)
    before = [p.detach().clone() for p in model.parameters()]
    step = training_step(model, torch.device("cpu"), fast=fast, compiled=compiled)
    step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert model.inc.double_conv[3].weight.is_contiguous(memory_format=torch.channels_last) == fast


@pytest.mark.slow  # it times three training loops
def test_training_speedup_times_every_loop_and_compares_with_the_plain_one():
    result = training_speedup(torch.device("cpu"), steps=2)
    rates = result["samples_per_s"]
    assert set(rates) == {"fp32_eager", "fast", "fast_compiled"} and result["steps"] == 2
    assert all(rate > 0 for rate in rates.values())
    for name in ("fast", "fast_compiled"):
        assert result["ratio"][name] == pytest.approx(rates[name] / rates["fp32_eager"])
