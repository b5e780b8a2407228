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


@pytest.mark.parametrize("name", ["bce", "bce+dice"])
def test_ignored_pixels_weigh_nothing(name):
    torch.manual_seed(0)
    logits, targets = torch.randn(3, 2, 16, 16), (torch.rand(3, 2, 16, 16) > 0.7).float()
    weights = torch.ones_like(targets)
    weights[:, 0, :8] = 0  # the first label unscored in the upper half
    changed = logits.clone()
    changed[:, 0, :8] = 50.0  # wildly wrong where nothing is scored
    for per_sample in (False, True):
        loss = make_loss(name, per_sample=per_sample)
        assert torch.allclose(loss(logits, targets, weights), loss(changed, targets, weights))
        assert not torch.allclose(loss(logits, targets), loss(changed, targets))
    assert torch.allclose(make_loss(name)(logits, targets, torch.ones_like(targets)), make_loss(name)(logits, targets))
