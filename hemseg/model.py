"""The paper's U-Net: DoubleConv, Down, Up and OutConv blocks, saved and loaded through the Hugging Face Hub."""

from __future__ import annotations

from typing import Any

import safetensors.torch
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from hemseg.preprocessing import DEFAULT_PREPROCESSING, physical

REPO_URL = "https://github.com/hemseg/hemseg"


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not fit the architecture its config describes."""


class DoubleConv(nn.Module):
    """(3x3 conv -> BatchNorm -> ReLU) twice; padding keeps the height and width."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class Down(nn.Module):
    """2x2 max-pool, then DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """2x2 transposed conv, concatenation with the skip connection, then DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        # Odd sizes lose a row or column to max-pooling; pad the upsampled map back to the skip's size (only then:
        # a zero pad still copies the map).
        dy = skip.shape[-2] - x.shape[-2]
        dx = skip.shape[-1] - x.shape[-1]
        if dx or dy:
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class OutConv(nn.Module):
    """1x1 conv to one logit per label."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UNet(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="hemseg",
    repo_url=REPO_URL,
    pipeline_tag="image-segmentation",
    license="mit",
    tags=["medical-imaging", "mri", "spine", "segmentation", "unet"],
):
    """U-Net returning one logit map per label, for any input height and width.

    Everything passed to the constructor lands in ``config.json`` when the model is saved, so the
    preprocessing contract (``preprocessing``), the label names, the threshold and the seed thresholds (per label: a
    predicted component is kept only where its probability reaches the seed somewhere; see
    ``hemseg.inference.cut``) travel with the weights.
    Loading with ``from_pretrained`` is strict: missing, unexpected or mis-shaped tensors raise
    ``CheckpointMismatchError``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 64,
        depth: int = 4,
        labels: list[str] | None = None,
        threshold: float = 0.5,
        preprocessing: dict[str, Any] | None = None,
        seed_thresholds: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        if labels is None:
            labels = ["hemangioma"] if out_channels == 1 else [f"label_{i}" for i in range(out_channels)]
        if len(labels) != out_channels:
            raise ValueError(f"{len(labels)} label names given for {out_channels} output channels")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.labels = list(labels)
        self.threshold = threshold
        self.depth = depth
        self.preprocessing = {**DEFAULT_PREPROCESSING, **(preprocessing or {})}
        if physical(self.preprocessing):  # no square grid: its size would only mislead
            self.preprocessing.pop("size")
        # The mixin writes the arguments as passed; store the resolved values so config.json is self-contained.
        self._hub_mixin_config.update(labels=self.labels, preprocessing=self.preprocessing)
        self.set_seed_thresholds(seed_thresholds or {})

        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.inc = DoubleConv(in_channels, widths[0])
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1]) for i in range(depth))
        self.ups = nn.ModuleList(Up(widths[i + 1], widths[i]) for i in reversed(range(depth)))
        self.outc = OutConv(widths[0], out_channels)

    def set_seed_thresholds(self, seeds: dict[str, float]) -> None:
        """Seed thresholds per label (``hemseg.inference.cut``), also in the ``config.json`` a save writes."""
        unknown = set(seeds) - set(self.labels)
        if unknown:
            raise ValueError(f"seed thresholds for {sorted(unknown)}, which are not among the labels {self.labels}")
        if not all(0 < seed <= 1 for seed in seeds.values()):
            raise ValueError(f"seed thresholds must be probabilities above 0 and at most 1: {seeds}")
        self.seed_thresholds = dict(seeds)
        self._hub_mixin_config["seed_thresholds"] = self.seed_thresholds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < 2 ** len(self.downs):
            raise ValueError(f"input {tuple(x.shape[-2:])} is smaller than {2 ** len(self.downs)} pixels on a side")
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x)

    @classmethod
    def _load_as_safetensor(cls, model: UNet, model_file: str, map_location: str, strict: bool) -> UNet:
        # The mixin loads non-strictly by default, which would silently keep random weights.
        try:
            safetensors.torch.load_model(model, model_file, strict=True, device=map_location)
        except RuntimeError as err:
            raise CheckpointMismatchError(
                f"The weights in {model_file} do not match the architecture in its config.json "
                f"(UNet with in_channels={model.in_channels}, out_channels={model.out_channels}):\n{err}"
            ) from err
        return model.eval()

    @classmethod
    def _load_as_pickle(cls, model: UNet, model_file: str, map_location: str, strict: bool) -> UNet:
        try:
            state_dict = torch.load(model_file, map_location=torch.device(map_location), weights_only=True)
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as err:
            raise CheckpointMismatchError(f"The weights in {model_file} do not match its config.json:\n{err}") from err
        return model.eval()


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
