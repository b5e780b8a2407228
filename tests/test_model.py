import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from hemseg import UNet
from hemseg.model import CheckpointMismatchError, count_parameters


def test_paper_network_has_31_04_million_parameters():
    assert round(count_parameters(UNet(1, 1, 64)) / 1e6, 2) == 31.04


@pytest.mark.parametrize("size", [(128, 128), (130, 97), (16, 33)])
def test_output_keeps_input_size(size):
    model = UNet(1, 2, base_channels=8).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, *size))
    assert out.shape == (2, 2, *size)


def test_paper_network_keeps_odd_sizes():
    with torch.no_grad():
        assert UNet(1, 1, 64).eval()(torch.randn(1, 1, 130, 97)).shape == (1, 1, 130, 97)


def test_input_smaller_than_the_network_depth_is_refused():
    with pytest.raises(ValueError, match="smaller than 16"):
        UNet(1, 1, 4)(torch.randn(1, 1, 15, 64))


def test_label_names_must_match_channels():
    with pytest.raises(ValueError, match="2 label names"):
        UNet(1, 1, 4, labels=["a", "b"])


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=8, depth=3, labels=["vertebral_body", "hemangioma"], threshold=0.4).eval()
    x = torch.randn(3, 1, 40, 56)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["base_channels"] == 8 and config["depth"] == 3
    assert config["labels"] == ["vertebral_body", "hemangioma"] and config["threshold"] == 0.4
    assert config["preprocessing"]["size"] == [128, 128]
    assert config["preprocessing"]["normalization"] == "percentile"
    loaded = UNet.from_pretrained(tmp_path)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.labels == model.labels and loaded.threshold == 0.4


def test_checkpoint_for_another_architecture_is_refused(tmp_path):
    UNet(1, 1, base_channels=8, depth=3).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "base_channels": 16}))
    with pytest.raises(CheckpointMismatchError, match="do not match"):
        UNet.from_pretrained(tmp_path)


def test_checkpoint_with_missing_tensor_is_refused(tmp_path):
    UNet(1, 1, base_channels=8, depth=3).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["outc.conv.bias"]
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"outc\.conv\.bias"):
        UNet.from_pretrained(tmp_path)


def test_pickled_checkpoint_is_also_strict(tmp_path):
    model = UNet(1, 1, base_channels=8, depth=3)
    weights = model.state_dict()
    weights["extra"] = torch.zeros(1)
    torch.save(weights, tmp_path / "weights.pt")
    with pytest.raises(CheckpointMismatchError, match="extra"):
        UNet._load_as_pickle(UNet(1, 1, base_channels=8, depth=3), str(tmp_path / "weights.pt"), "cpu", False)
