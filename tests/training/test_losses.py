import pytest
import torch

from hemseg.training.losses import make_loss, soft_dice_loss


def test_soft_dice_scores_only_labels_that_are_present():
    targets = torch.zeros(2, 2, 8, 8)
    targets[0, 0, 2:6, 2:6] = 1  # sample 0 has label 0; nothing else is present
    perfect = torch.where(targets > 0, 20.0, -20.0)
    assert soft_dice_loss(perfect, targets) < 1e-3
    faint = perfect.clone()
    faint[1] = -2.0  # a faint response where the truth is empty: the cross-entropy's business, not Dice's
    assert soft_dice_loss(faint, targets) == pytest.approx(soft_dice_loss(perfect, targets))
    half = perfect.clone()
    half[0, 0, 2:4] = -20.0  # half the square missed: Dice 2*8/(8+16) on the one present pair
    assert soft_dice_loss(half, targets) == pytest.approx(1 - 17 / 25, abs=1e-3)
    assert soft_dice_loss(perfect, torch.zeros_like(targets)) == 0
    assert make_loss("bce+dice")(half, targets) > make_loss("bce")(half, targets)
