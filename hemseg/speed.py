"""Faster inference for the same model: BatchNorm folded into the convolutions, channels-last memory, and bf16
on CPUs whose oneDNN supports it (AMX / AVX-512 BF16). Each is measured by `hemseg lab bench`."""

from __future__ import annotations

import copy
import os
from contextlib import nullcontext

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from hemseg.model import UNet


def fold_batchnorm(model: UNet) -> UNet:
    """A copy of ``model`` in eval mode with every Conv2d -> BatchNorm2d pair merged into one Conv2d."""
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if isinstance(module, nn.Sequential):
            layers = list(module)
            for i in range(len(layers) - 1):
                if isinstance(layers[i], nn.Conv2d) and isinstance(layers[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(layers[i], layers[i + 1])
                    module[i + 1] = nn.Identity()
    return folded


def bf16_supported(device: torch.device) -> bool:
    """bf16 autocast pays off on CUDA and on CPUs with native bf16 in oneDNN; elsewhere it is emulated."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return (
        device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity where the platform has one, as in a container)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def fused_adam(device: torch.device) -> bool | None:
    """``fused`` for ``torch.optim.Adam``: torch's fused kernel on CUDA and CPU (one pass over every parameter
    instead of several small ops per tensor), its default elsewhere."""
    return True if device.type in ("cuda", "cpu") else None


def precision_context(device: torch.device, precision: str):
    """Autocast for ``precision`` "bf16" (falling back to fp32 where bf16 is not native), else nothing."""
    if precision == "bf16" and bf16_supported(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
