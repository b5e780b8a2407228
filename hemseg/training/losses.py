"""Training losses: the paper's binary cross-entropy, and soft Dice over the labels present."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    eps: float = 1.0,
    per_sample: bool = False,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """1 - soft Dice, averaged over the (sample, label) pairs whose truth is not empty; 0 when none is.
    ``per_sample``: one such average per sample, shape (N,).

    Empty truths are left to the cross-entropy term: there soft Dice would be 1 - eps / (sum of p + eps), a
    penalty near 1 for any faint response across the image, which teaches a model to miss small lesions. This
    matches the reported Dice_fg, the mean Dice of slices with the label.
    """
    probs = torch.sigmoid(logits.float())
    if weights is not None:  # ignored pixels count neither in the prediction nor in the truth
        probs, targets = probs * weights, targets * weights
    dims = (-2, -1)
    intersection = (probs * targets).sum(dims)
    truth = targets.sum(dims)
    dice = (2 * intersection + eps) / (probs.sum(dims) + truth + eps)
    has_truth = truth > 0
    terms = torch.where(has_truth, 1 - dice, 0)
    if per_sample:
        return terms.sum(-1) / has_truth.sum(-1).clamp(min=1)
    return terms.sum() / has_truth.sum().clamp(min=1)


LOSSES = ("bce", "bce+dice")


def make_loss(name: str, per_sample: bool = False):
    """``bce`` (the paper's binary cross-entropy) or ``bce+dice``; a scalar for the batch, or with ``per_sample``
    each sample's own loss, shape (N,) (what that sample alone would give).

    The loss takes optional ``weights`` of the targets' shape, 0 where a pixel is ignored (outside the image, or a
    label outside the rows where it is labelled): the cross-entropy is then the mean over the scored pixels."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}: choose bce or bce+dice")

    def loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        if weights is None:
            bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none" if per_sample else "mean")
            bce = bce.flatten(1).mean(1) if per_sample else bce
        else:
            bce = F.binary_cross_entropy_with_logits(logits, targets, weight=weights, reduction="none")
            if per_sample:
                bce = bce.flatten(1).sum(1) / weights.flatten(1).sum(1).clamp(min=1)
            else:
                bce = bce.sum() / weights.sum().clamp(min=1)
        if name == "bce+dice":
            return bce + soft_dice_loss(logits, targets, per_sample=per_sample, weights=weights)
        return bce

    return loss
