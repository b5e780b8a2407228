import numpy as np
import torch

from hemseg import Segmenter, UNet
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
