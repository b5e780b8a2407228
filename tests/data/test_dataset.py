import numpy as np
import pytest
from PIL import Image

from hemseg.data.dataset import label_names, load
from hemseg.data.prepare import SamplingConfig, prepare

SMALL = SamplingConfig(slices_per_plane=6)


@pytest.fixture
def folder(tmp_path, nifti_cases):
    return prepare([nifti_cases], tmp_path / "slices", seed=0, sampling=SMALL, workers=1)


def test_slice_folder_loads_as_a_dataset(folder):
    ds = load(folder)
    assert ds.num_rows == 2 * 3 * 6
    assert label_names(ds) == ["vertebral_body", "hemangioma"]
    assert ds.features["plane"].names == ["axial", "coronal", "sagittal"]
    assert ds.cache_files  # Arrow on disk, memory-mapped
    example = ds.with_format("numpy")[0]
    assert example["image"].shape == example["hemangioma"].shape
    assert set(np.unique(example["vertebral_body"])) <= {0, 255}
    assert example["spacing"].tolist() == [1.0, 1.0]
    assert set(ds["split"]) <= {"train", "val", "test"}
    # Whole slices: coronal and sagittal ones are labelled only between two rows, axial ones on every row.
    for first, end, height, plane in zip(
        *np.asarray(ds["labelled_rows"]).T, (image.height for image in ds["image"]), ds["plane"], strict=True
    ):
        if plane == 0:  # axial
            assert (first, end) == (0, height)
        else:
            assert 0 < first < end < height


def test_saved_dataset_round_trip(folder, tmp_path):
    ds = load(folder)
    ds.save_to_disk(tmp_path / "arrow")
    again = load(tmp_path / "arrow")
    assert again.num_rows == ds.num_rows and again.features == ds.features
    first, second = ds.with_format("numpy")[5], again.with_format("numpy")[5]
    assert np.array_equal(first["image"], second["image"]) and first["case"] == second["case"]


def test_edited_folder_is_reloaded_not_served_from_cache(folder):
    before = load(folder)
    row = before[0]["file"]
    mask_path = folder / row.replace(".png", "_hemangioma.png")
    mask = np.asarray(Image.open(mask_path)).copy()
    mask[:3, :3] = 255 - mask[:3, :3]
    Image.fromarray(mask).save(mask_path)
    after = load(folder).with_format("numpy")[0]["hemangioma"]
    assert np.array_equal(after, mask)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("grey", "not binary"),
        ("small", "differs from its image"),
        ("corrupt", "not a readable image"),
        ("missing", "missing"),
    ],
)
def test_bad_masks_are_named(folder, damage, message):
    path = folder / (load(folder)[3]["file"].removesuffix(".png") + "_vertebral_body.png")
    if damage == "grey":
        Image.fromarray(np.full((20, 20), 128, np.uint8)).resize(Image.open(path).size).save(path)
    elif damage == "small":
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(path)
    elif damage == "corrupt":
        path.write_bytes(path.read_bytes()[:40])
    else:
        path.unlink()
    with pytest.raises(ValueError, match=message) as err:
        load(folder)
    assert path.name in str(err.value)


def test_empty_folder_and_missing_path_are_explained(tmp_path):
    with pytest.raises(ValueError, match="neither a slice folder"):
        load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load(tmp_path / "nope")


def test_unreachable_hub_dataset_is_explained():
    with pytest.raises(ValueError, match="could not load the Hub data set"):
        load("hemseg/no-such-dataset")
