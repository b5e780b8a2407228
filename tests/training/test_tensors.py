import numpy as np
import torch

from hemseg.data.dataset import load
from hemseg.preprocessing import DEFAULT_PREPROCESSING, preprocess, to_model_grid
from hemseg.training.tensors import LOAD_CHUNK, load_tensors, slice_bytes

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
    assert data.images.element_size() * data.images.numel() + data.masks.numel() == slice_bytes(len(dataset), 2, 48)
    images, masks, planes = data.batch(torch.tensor([LOAD_CHUNK, 0]), torch.device("cpu"))
    assert images.dtype == masks.dtype == torch.float32 and torch.equal(images[1], data.images[0].float())
    assert (
        torch.equal(masks[0], data.masks[LOAD_CHUNK].float())
        and planes.tolist() == data.planes[[LOAD_CHUNK, 0]].tolist()
    )
