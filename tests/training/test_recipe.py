"""Recipes: the files in configs/, --set, and the settings refused with the key that is wrong."""

import re

import pytest
import yaml
from conftest import REPO

from hemseg.training.augment import AugmentConfig
from hemseg.training.recipe import Recipe, load_recipe


def test_the_papers_recipe_file_is_the_default_and_lists_every_setting():
    paper = REPO / "configs" / "paper.yaml"
    assert load_recipe(paper) == Recipe()
    given = yaml.safe_load(paper.read_text())
    assert {section: set(keys) for section, keys in given.items()} == {
        section: set(keys) for section, keys in Recipe().to_dict().items()
    }
    assert Recipe().model.base_channels == 64 and Recipe().training.lr == 1e-4 and Recipe().training.loss == "bce"


def test_the_bundled_recipes_give_only_what_differs():
    physical = load_recipe(REPO / "configs" / "physical.yaml")  # the bundled model's
    assert physical.model.spacing_mm == 1.25 and physical.training.crop_size == 192
    assert physical.augmentation.tissue_p == 0.3 and physical.augmentation.fov_p == 0.3
    assert physical.preprocessing()["fit"] == "spacing"
    previous = load_recipe(REPO / "configs" / "bundled-v1.yaml")  # the previous bundled model's last step
    assert (
        previous.model.base_channels == 16 and previous.model.image_size == 192 and previous.training.crop_size == 128
    )
    assert previous.validation.choose_seed_thresholds == ("hemangioma",) and previous.augmentation.curve_p == 0.3
    assert previous.model.depth == 4 and previous.augmentation.rotation_deg == 15.0  # not in the file: the defaults


def test_a_recipe_survives_its_own_yaml(tmp_path):
    recipe = Recipe().with_overrides(
        ["model.labels=[hemangioma]", "training.crop_size=64", "augmentation.scale=[1, 2]"]
    )
    (tmp_path / "r.yaml").write_text(recipe.to_yaml())
    assert load_recipe(tmp_path / "r.yaml") == recipe
    assert recipe.model.labels == ("hemangioma",) and recipe.augmentation.scale == (1.0, 2.0)


def test_a_physical_recipe_puts_the_pixel_size_in_the_contract_and_lets_windows_exceed_the_grid():
    recipe = Recipe().with_overrides(["model.spacing_mm=1.25", "training.crop_size=256"])
    contract = recipe.preprocessing()
    assert contract["fit"] == "spacing" and contract["spacing_mm"] == 1.25 and "percentiles" in contract
    assert Recipe().preprocessing()["fit"] == "pad-to-square" and Recipe().preprocessing()["size"] == [128, 128]


def test_overrides_read_their_values_as_yaml():
    recipe = Recipe().with_overrides(["training.lr=1e-3", "training.crop_size=null", "augmentation.enabled=false"])
    assert recipe.training.lr == 1e-3 and recipe.training.crop_size is None  # "1e-3" is text to YAML: read as float
    assert recipe.augmentation.config() is None and isinstance(Recipe().augmentation.config(), AugmentConfig)
    assert Recipe().augmentation.config() == AugmentConfig()  # what augment gets, the switch left out
    later = Recipe().with_overrides(["training.seed=1", "training.seed=2"])
    assert later.training.seed == 2  # in order: the last one wins


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("lr=3e-4", "write section.key=value"),
        ("optimiser.lr=1", "unknown section: 'optimiser'"),
        ("training.learning_rate=1", "unknown key in 'training': 'learning_rate'"),
        ("training.lr=fast", "training.lr must be float"),
        ("training.epochs=2.5", "training.epochs must be int"),
        ("training.channels_last=1", "training.channels_last must be bool"),
        ("augmentation.scale=[1]", "augmentation.scale must be a list of 2 values"),
        ("model.labels=hemangioma", "model.labels must be a list"),
        ("model.labels=[]", "model.labels must name at least one label"),
        ("model.image_size=8", "model.image_size must be at least 16"),
        ("training.crop_size=100", "training.crop_size must be a multiple of 16 (2 ** model.depth)"),
        ("training.crop_size=256", "training.crop_size must be at most model.image_size"),
        ("model.spacing_mm=0", "model.spacing_mm must be above 0"),
        ("augmentation.tissue_p=2", "augmentation.tissue_p must be between 0 and 1"),
        ("augmentation.tissue_classes=[1, 4]", "augmentation.tissue_classes: 2 <= low <= high"),
        ("augmentation.fov_p=-0.5", "augmentation.fov_p must be between 0 and 1"),
        ("augmentation.fov_min=8", "augmentation.fov_min must be at least 16 pixels"),
        ("training.batch_size=0", "training.batch_size must be at least 1"),
        ("training.lr=-1e-4", "training.lr must be 0 or more"),
        ("training.loss=dice", "training.loss must be one of bce, bce+dice"),
        ("augmentation.noise_std=[0, -0.1]", "augmentation.noise_std must be 0 or more"),
        ("augmentation.curve_p=1.5", "augmentation.curve_p must be between 0 and 1"),
        ("augmentation.blur_p=-1", "augmentation.blur_p must be between 0 and 1"),
        ("validation.select_by=f1", "validation.select_by must be one of pooled_dice, dice_fg"),
        ("validation.noise=-1", "validation.noise must be 0 or more"),
        ("validation.select_by=dice_fg_clean_and_noisy", "needs validation.noise above 0"),
        ("validation.choose_seed_thresholds=[spine]", "names ['spine'], which model.labels does not"),
        ("checkpoints.every=0", "checkpoints.every must be at least 1"),
        ("training.time_limit_min=0", "training.time_limit_min must be above 0"),
    ],
)
def test_settings_that_cannot_work_are_refused_by_name(assignment, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Recipe().with_overrides([assignment])


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: [unclosed", "not a YAML file"),
        ("- model\n", "a recipe is a mapping of sections"),
        ("model:\n  base_chanels: 8\n", "unknown key in 'model': 'base_chanels'"),
    ],
)
def test_a_file_that_is_not_a_recipe_is_named(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"mine.yaml: {re.escape(message)}"):
        load_recipe(path)


def test_an_empty_recipe_file_is_the_default(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# every setting at its default\n")
    assert load_recipe(empty) == Recipe()
