"""One epoch of training and one of validation, in the shape of Accelerate's examples."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from hemseg.metrics import confusion_counts
from hemseg.training.augment import NO_AUGMENT, AugmentConfig, augment
from hemseg.training.recipe import ValidationSettings
from hemseg.training.state import epoch_metrics
from hemseg.training.tensors import SliceTensors


def slice_noise(idx: torch.Tensor, shape: torch.Size, sd: float) -> torch.Tensor:
    """Gaussian noise of ``sd`` for the slices ``idx``, drawn from generators seeded with their indices: the same
    in every epoch, however the slices are shared among processes."""
    generator = torch.Generator(idx.device)
    return sd * torch.stack(
        [torch.randn(shape, generator=generator.manual_seed(i), device=idx.device) for i in idx.tolist()]
    )


def with_slice_noise(images: torch.Tensor, idx: torch.Tensor, sd: float) -> torch.Tensor:
    """``images`` (the slices ``idx``) with ``slice_noise`` added, clipped to [0, 1] as the augmentation clips its
    noise and as a noisy scan arrives after percentile scaling: the model never sees values outside that range."""
    return (images + slice_noise(idx, images.shape[1:], sd)).clamp(0, 1)


@torch.no_grad()
def validate(
    model, loader, data: SliceTensors, per_sample_loss, accelerator, noise_sd: float = 0.0
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Validation loss (the mean of each slice's loss) and per-slice counts, gathered from every process without
    duplicates; with ``noise_sd``, on the slices ``with_slice_noise``."""
    model.eval()
    losses, counts, planes = [], [], []
    for (idx,) in loader:
        images, masks, weights, batch_planes = data.batch(idx, accelerator.device)
        if noise_sd:
            images = with_slice_noise(images, idx, noise_sd)
        logits = model(images)
        # One loss per slice, so the duplicates that pad the last batch of a process are dropped exactly.
        loss = per_sample_loss(logits, masks, weights)
        batch = accelerator.gather_for_metrics((loss, confusion_counts(logits > 0, masks, weights), batch_planes))
        losses.append(batch[0])
        counts.append(batch[1])
        planes.append(batch[2])
    return float(torch.cat(losses).mean()), torch.cat(counts), torch.cat(planes)


def train_epoch(
    model,
    loader,
    data: SliceTensors,
    loss_fn,
    optimizer,
    accelerator,
    augmentation: AugmentConfig | None,
    crop: int | None,
    generator: torch.Generator,
    memory_format: torch.memory_format,
    desc: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pass over the training slices, augmented on the device (``augmentation`` None: not at all, though
    windows of side ``crop`` are still cut); the per-slice losses (its step's), counts and planes, gathered from
    every process."""
    model.train()
    losses, counts, planes = [], [], []
    bar = tqdm(loader, desc=desc, disable=not accelerator.is_local_main_process)
    for step, (idx,) in enumerate(bar):
        images, masks, weights, batch_planes = data.batch(idx, accelerator.device)
        if augmentation or crop:
            images, masks, weights = augment(images, masks, generator, augmentation or NO_AUGMENT, crop, weights)
        logits = model(images.contiguous(memory_format=memory_format))
        loss = loss_fn(logits, masks, weights)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        batch_counts = confusion_counts(logits.detach() > 0, masks, weights)
        gathered = accelerator.gather_for_metrics((loss.detach().expand(len(idx)), batch_counts, batch_planes))
        losses.append(gathered[0])
        counts.append(gathered[1])
        planes.append(gathered[2])
        if step % 50 == 0:  # .item() waits for the device: not on every step
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    return torch.cat(losses), torch.cat(counts), torch.cat(planes)


def validate_epoch(
    model, loader, data: SliceTensors, per_sample_loss, accelerator, labels: list[str], settings: ValidationSettings
) -> tuple[float, dict[str, float]]:
    """The validation loss and the epoch's ``val_*`` log columns; with ``settings.noise``, also the ``noisyval_*``
    ones, from the same slices with noise added."""
    val_loss, counts, planes = validate(model, loader, data, per_sample_loss, accelerator)
    columns = epoch_metrics("val", counts, planes, labels)
    if settings.noise:
        noisy_loss, noisy_counts, _ = validate(model, loader, data, per_sample_loss, accelerator, settings.noise)
        columns |= {"noisyval_loss": noisy_loss, **epoch_metrics("noisyval", noisy_counts, planes, labels)}
    return val_loss, columns
