"""The resident tensors training reads: each slice by the model's contract, with the regions scored per label."""

import numpy as np
import torch

from hemseg.data.dataset import load
from hemseg.preprocessing import DEFAULT_PREPROCESSING, SPACING_FIT, preprocess, to_model_grid
from hemseg.training.tensors import (
    LOAD_CHUNK,
    REGION_IMAGE,
    REGION_LABELLED,
    REGION_OUTSIDE,
    canvas_side,
    label_weights,
    load_tensors,
    slice_bytes,
)

LABELS = ("vertebral_body", "hemangioma")


def test_resident_tensors_hold_each_slice_preprocessed_in_order(tiny_slices):
    dataset = load(tiny_slices)
    assert len(dataset) > LOAD_CHUNK  # several chunks, read by several threads
    preprocessing = {**DEFAULT_PREPROCESSING, "size": [48, 48]}
    data = load_tensors(dataset, list(LABELS), preprocessing, progress=False, threads=3)
    assert data.images.shape == (len(dataset), 1, 48, 48) and data.masks.shape == (len(dataset), 2, 48, 48)
    for i in (0, LOAD_CHUNK - 1, LOAD_CHUNK, len(dataset) - 1):
        example = dataset[i]
        assert torch.equal(data.images[i], preprocess(np.asarray(example["image"]), preprocessing)[0].half())
        for c, label in enumerate(LABELS):
            truth = torch.from_numpy(np.asarray(example[label]) > 0).to(torch.uint8)[None, None]
            assert torch.equal(data.masks[i, c], to_model_grid(truth, (48, 48), mode="nearest")[0, 0])
        assert data.splits[i] == example["split"]
    stored = data.images.element_size() * data.images.numel() + data.masks.numel() + data.regions.numel()
    assert stored == slice_bytes(len(dataset), 2, 48)
    images, masks, weights, planes = data.batch(torch.tensor([LOAD_CHUNK, 0]), torch.device("cpu"))
    assert images.dtype == masks.dtype == weights.dtype == torch.float32
    assert torch.equal(images[1], data.images[0].float()) and torch.equal(masks[0], data.masks[LOAD_CHUNK].float())
    assert planes.tolist() == data.planes[[LOAD_CHUNK, 0]].tolist() and weights.shape == masks.shape


def test_regions_say_where_each_label_is_scored(tiny_slices):
    dataset = load(tiny_slices)
    sagittal = next(i for i, plane in enumerate(dataset["plane"]) if plane == 2)  # labelled between two rows
    first, end = dataset[sagittal]["labelled_rows"]
    height = np.asarray(dataset[sagittal]["image"]).shape[0]
    assert 0 < first < end < height
    data = load_tensors(dataset.select([sagittal]), list(LABELS), {**DEFAULT_PREPROCESSING, "size": [96, 96]}, False)
    regions = data.regions[0, 0]
    rows = regions.amax(1)
    # The square grid: the slice's rows fill the height; above and below the labelled ones only its image counts.
    assert rows[0] == REGION_IMAGE and rows[-1] == REGION_IMAGE and (rows == REGION_LABELLED).any()
    assert (regions.amin(0) == REGION_OUTSIDE).any()  # the padding beside a slice taller than wide
    weights = label_weights(data.regions, list(LABELS))
    top = 0
    assert weights[0, 0, top].sum() == 0 and weights[0, 1, top].sum() > 0  # bodies ignored there, lesions not


def test_the_physical_contract_puts_every_slice_at_the_model_pixel_size_on_one_canvas(tiny_slices):
    dataset = load(tiny_slices)
    contract = {**DEFAULT_PREPROCESSING, **SPACING_FIT, "spacing_mm": 2.0}
    side = canvas_side(dataset, contract, 16)
    longest = max(max(np.asarray(image).shape) for image in dataset["image"])  # 1 mm pixels in the tiny set
    assert side == -(-round(longest / 2) // 16) * 16
    data = load_tensors(dataset, list(LABELS), contract, progress=False)
    assert data.images.shape[-2:] == (side, side)
    i = 5
    x = preprocess(np.asarray(dataset[i]["image"]), contract, (1.0, 1.0))[0, 0]
    inside = data.regions[i, 0] > REGION_OUTSIDE
    assert inside.sum() == x.numel()  # the slice at 2 mm pixels, centred, the rest of the canvas outside
    assert torch.equal(data.images[i, 0][inside].reshape(x.shape), x.half())
