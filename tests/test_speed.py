import json

import numpy as np
import pytest
import torch
from conftest import run

from hemseg import Segmenter, UNet
from hemseg.bench import markdown, training_speedup, training_step
from hemseg.speed import bf16_supported, fold_batchnorm


def model_with_real_batchnorm_statistics() -> UNet:
    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=8, labels=["vertebral_body", "hemangioma"])
    model.train()
    with torch.no_grad():
        for _ in range(3):  # a few batches give the BatchNorm layers non-trivial running statistics
            model(torch.rand(4, 1, 64, 64) * 3 + 1)
    return model.eval()


def test_folding_batchnorm_keeps_the_outputs():
    model = model_with_real_batchnorm_statistics()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 1, 96, 80)
    with torch.no_grad():
        assert torch.allclose(model(x), folded(x), atol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched


def test_optimized_segmenter_predicts_what_the_plain_model_predicts():
    model = model_with_real_batchnorm_statistics()
    image = np.random.default_rng(0).random((90, 70)).astype(np.float32)
    plain = Segmenter(model, "m", optimize=False).predict(image)
    fast = Segmenter(model, "m").predict(image)
    for label in plain.probabilities:
        np.testing.assert_allclose(plain.probabilities[label], fast.probabilities[label], atol=1e-5)
    if bf16_supported(torch.device("cpu")):
        bf16 = Segmenter(model, "m", precision="bf16").predict(image)
        assert np.abs(bf16.probabilities["hemangioma"] - plain.probabilities["hemangioma"]).max() < 0.05


def test_bench_measures_one_variant_in_its_own_process():
    result = run(["-m", "hemseg", "bench", "--variant", "bundled, fp32 eager", "--quick"])
    row = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["parameters_M"] == pytest.approx(1.94, abs=0.01)
    assert row["gflop_per_slice"] > 1 and row["latency_median_ms"] > 0 and row["peak_rss_MiB"] > 100
    height, width = map(int, row["input"].split("x"))  # the window of the model grid that holds the example
    assert height % 16 == 0 and width % 16 == 0 and width < height
    assert row["latency_p95_ms"] >= row["latency_median_ms"] and row["train_samples_per_s"] > 0
    table = markdown([row])
    assert table.count("\n") == 2 and f"| bundled, fp32 eager | 1.94 | {row['input']} |" in table


@pytest.mark.parametrize("fast, compiled", [(False, False), (True, False), (True, True)])
def test_training_step_updates_the_weights(fast, compiled):
    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=4, depth=2)
    before = [p.detach().clone() for p in model.parameters()]
    step = training_step(model, torch.device("cpu"), fast=fast, compiled=compiled)
    step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert model.inc.double_conv[3].weight.is_contiguous(memory_format=torch.channels_last) == fast


def test_training_speedup_times_every_loop_and_compares_with_the_plain_one():
    result = training_speedup(torch.device("cpu"), steps=2)
    rates = result["samples_per_s"]
    assert set(rates) == {"fp32_eager", "fast", "fast_compiled"} and result["steps"] == 2
    assert all(rate > 0 for rate in rates.values())
    for name in ("fast", "fast_compiled"):
        assert result["ratio"][name] == pytest.approx(rates[name] / rates["fp32_eager"])
