"""Training recipes: every setting of a run but its data and folders, in one YAML file.

A recipe has five sections, each a dataclass below; `configs/paper.yaml` lists every key with its default. A file
may give only some keys: the others keep their defaults. ``--set section.key=value`` changes one key on the
command line, the value read as YAML (``--set model.labels=[hemangioma]``, ``--set training.crop_size=null``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from hemseg.preprocessing import DEFAULT_PREPROCESSING, SPACING_FIT
from hemseg.training.augment import AugmentConfig
from hemseg.training.losses import LOSSES
from hemseg.training.state import DEFAULT_SELECTION, NOISY_SELECTIONS, SELECTION_SCORES


@dataclass(frozen=True)
class ModelSettings:
    """The network and its input grid (saved in the model's config.json)."""

    labels: tuple[str, ...] = ("vertebral_body", "hemangioma")  # one sigmoid output each; the paper: hemangioma
    base_channels: int = 64
    depth: int = 4
    image_size: int = 128  # side of the square model grid (the paper's fit)
    # The physical contract instead: slices resampled to this pixel size (mm), the network run over the whole slice.
    spacing_mm: float | None = None


@dataclass(frozen=True)
class TrainingSettings:
    """Optimisation: Adam, with the learning rate halved when validation stalls for ``patience // 2 + 1`` epochs."""

    epochs: int = 70
    patience: int = 10  # epochs without a better validation score before stopping
    batch_size: int = 16  # per process
    lr: float = 1e-4
    loss: str = "bce"  # or bce+dice
    seed: int = 0
    crop_size: int | None = None  # train on windows of this side around the anatomy instead of the whole grid
    channels_last: bool = False  # faster with bf16 on CPUs with AMX
    # Stop after the epoch that passes this many minutes, counted from the start of this invocation (loading
    # included; a resume starts the clock again).
    time_limit_min: float | None = None


@dataclass(frozen=True)
class AugmentationSettings(AugmentConfig):
    """``hemseg.training.augment.AugmentConfig``, and whether to use it at all."""

    enabled: bool = True

    def config(self) -> AugmentConfig | None:
        """What ``augment`` gets: these settings, or None when ``enabled`` is false."""
        if not self.enabled:
            return None
        return AugmentConfig(**{f.name: getattr(self, f.name) for f in fields(AugmentConfig)})


@dataclass(frozen=True)
class ValidationSettings:
    """How each epoch is scored and the best one chosen."""

    select_by: str = DEFAULT_SELECTION  # or dice_fg, dice_fg_clean_and_noisy (hemseg.training.state.SELECTION_SCORES)
    noise: float = 0.0  # also validate with Gaussian noise of this sd added (noisyval_* columns)
    choose_seed_thresholds: tuple[str, ...] = ()  # labels whose seed threshold is chosen on the validation cases


@dataclass(frozen=True)
class CheckpointSettings:
    every: int = 1  # epochs between checkpoints; also after each new best epoch and at the end


@dataclass(frozen=True)
class Recipe:
    model: ModelSettings = field(default_factory=ModelSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    augmentation: AugmentationSettings = field(default_factory=AugmentationSettings)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    checkpoints: CheckpointSettings = field(default_factory=CheckpointSettings)

    def preprocessing(self) -> dict[str, Any]:
        """The model's preprocessing contract (its config.json's ``preprocessing``): the paper's square grid of
        ``model.image_size``, or with ``model.spacing_mm`` the physical one."""
        if self.model.spacing_mm is None:
            return {**DEFAULT_PREPROCESSING, "size": [self.model.image_size] * 2}
        return {**DEFAULT_PREPROCESSING, **SPACING_FIT, "spacing_mm": self.model.spacing_mm}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Recipe:
        """A recipe from nested mappings; unknown sections or keys and values of the wrong type are refused."""
        if not isinstance(values, dict):
            raise ValueError("a recipe is a mapping of sections (model, training, augmentation, ...)")
        sections = {f.name: f for f in fields(cls)}
        unknown(values, sections, "section")
        settings = {}
        for name, section in values.items():
            kind = typing.get_type_hints(cls)[name]
            if not isinstance(section, dict):
                raise ValueError(f"recipe section {name!r} must be a mapping of settings")
            hints = typing.get_type_hints(kind)
            unknown(section, hints, f"key in {name!r}")
            settings[name] = kind(**{key: coerce(value, hints[key], f"{name}.{key}") for key, value in section.items()})
        return cls(**settings).checked()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested values (lists for tuples), as YAML and JSON write them."""
        return {name: plain(dataclasses.asdict(getattr(self, name))) for name in (f.name for f in fields(self))}

    def to_yaml(self) -> str:
        """The recipe as a file ``load_recipe`` reads: a block per section, a line per setting."""
        lines = []
        for section, values in self.to_dict().items():
            lines.append(f"{section}:")
            for key, value in values.items():  # a plain scalar's document ends with "...": not wanted here
                text = yaml.safe_dump(value, default_flow_style=True).removesuffix("...\n").strip()
                lines.append(f"  {key}: {text}")
        return "\n".join(lines) + "\n"

    def with_overrides(self, assignments: list[str]) -> Recipe:
        """The recipe with each ``section.key=value`` applied in turn, the value read as YAML."""
        values = self.to_dict()
        for assignment in assignments:
            path, sep, text = assignment.partition("=")
            section, dot, key = path.strip().partition(".")
            if not (sep and dot and key):
                raise ValueError(f"--set {assignment!r}: write section.key=value, e.g. training.lr=3e-4")
            unknown({section: None}, values, "section")
            values[section][key] = yaml.safe_load(text)
        return Recipe.from_dict(values)

    def checked(self) -> Recipe:
        """The recipe itself, or ValueError naming the first setting that cannot work."""
        model, training, aug, val = self.model, self.training, self.augmentation, self.validation
        step = 2**model.depth  # the U-Net's poolings halve a window that many times
        problems = [
            (not model.labels, "model.labels must name at least one label"),
            (model.base_channels < 1 or model.depth < 1, "model.base_channels and model.depth must be at least 1"),
            (model.image_size < step, f"model.image_size must be at least {step} (2 ** model.depth)"),
            (model.spacing_mm is not None and model.spacing_mm <= 0, "model.spacing_mm must be above 0"),
            (
                training.crop_size is not None and not (step <= training.crop_size and training.crop_size % step == 0),
                f"training.crop_size must be a multiple of {step} (2 ** model.depth)",
            ),
            (
                model.spacing_mm is None and (training.crop_size or 0) > model.image_size,
                "training.crop_size must be at most model.image_size",
            ),
            (training.loss not in LOSSES, f"training.loss must be one of {', '.join(LOSSES)}"),
            (min(training.epochs, training.patience) < 0, "training.epochs and training.patience must be 0 or more"),
            (training.batch_size < 1, "training.batch_size must be at least 1"),
            (training.lr < 0, "training.lr must be 0 or more"),  # 0: only BatchNorm statistics move
            (
                training.time_limit_min is not None and training.time_limit_min <= 0,
                "training.time_limit_min must be above 0",
            ),
            (min(aug.noise_std) < 0, "augmentation.noise_std must be 0 or more"),
            (not 0 <= aug.curve_p <= 1, "augmentation.curve_p must be between 0 and 1"),
            (not 0 <= aug.blur_p <= 1, "augmentation.blur_p must be between 0 and 1"),
            (not 0 <= aug.tissue_p <= 1, "augmentation.tissue_p must be between 0 and 1"),
            (not 0 <= aug.fov_p <= 1, "augmentation.fov_p must be between 0 and 1"),
            (not 2 <= aug.tissue_classes[0] <= aug.tissue_classes[1], "augmentation.tissue_classes: 2 <= low <= high"),
            (aug.fov_min < step, f"augmentation.fov_min must be at least {step} pixels"),
            (
                val.select_by not in SELECTION_SCORES,
                f"validation.select_by must be one of {', '.join(SELECTION_SCORES)}",
            ),
            (val.noise < 0, "validation.noise must be 0 or more"),
            (
                val.select_by in NOISY_SELECTIONS and not val.noise,
                f"validation.select_by {val.select_by} needs validation.noise above 0",
            ),
            (
                bool(set(val.choose_seed_thresholds) - set(model.labels)),
                f"validation.choose_seed_thresholds names {sorted(set(val.choose_seed_thresholds) - set(model.labels))}"
                ", which model.labels does not",
            ),
            (self.checkpoints.every < 1, "checkpoints.every must be at least 1"),
        ]
        for failed, message in problems:
            if failed:
                raise ValueError(message)
        return self


def load_recipe(path: str | Path) -> Recipe:
    """A recipe from a YAML file; ValueError, naming the file, for one that is not a recipe."""
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not a YAML file ({err})") from err
    try:
        return Recipe.from_dict(values)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def unknown(given: dict, known: Iterable[str], kind: str) -> None:
    extra = sorted(set(given) - set(known))
    if extra:
        raise ValueError(f"unknown {kind}: {', '.join(map(repr, extra))}; known: {', '.join(known)}")


def coerce(value: Any, hint: Any, name: str) -> Any:
    """``value`` as the type ``hint`` (tuples from lists, floats from integers and from strings such as 1e-4,
    which YAML reads as text), or ValueError naming the setting."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # X | None
        return None if value is None else coerce(value, next(a for a in args if a is not type(None)), name)
    if origin is tuple:
        if not isinstance(value, list | tuple) or (args[-1] is not Ellipsis and len(value) != len(args)):
            size = "a list" if args[-1] is Ellipsis else f"a list of {len(args)} values"
            raise ValueError(f"{name} must be {size}, not {value!r}")
        kinds = [args[0]] * len(value) if args[-1] is Ellipsis else args
        return tuple(coerce(item, kind, name) for item, kind in zip(value, kinds, strict=True))
    if hint is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ValueError(f"{name} must be {hint.__name__}, not {value!r}")
    return value


def plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
