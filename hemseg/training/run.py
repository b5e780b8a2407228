"""Train the hemseg U-Net with Hugging Face Accelerate (`accelerate launch train.py`, or `hemseg train`).

    accelerate launch train.py --recipe configs/physical.yaml --data build/spine-slices --output-dir runs/m
    accelerate launch --cpu train.py ...   # no GPU: --cpu lets the process use every core
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 train.py ...  # two CPU processes
    accelerate launch --multi_gpu --num_processes 4 --mixed_precision bf16 train.py ...  # four GPUs

The recipe (YAML, `configs/`) holds every setting but the data and folders; without --recipe, the paper's
(`configs/paper.yaml`): UNet with 64 base filters, Adam at lr 1e-4 halved when validation stalls, binary
cross-entropy, up to 70 epochs with early stopping on the validation pooled Dice, 128x128 inputs. --set changes one
setting; --epochs, --batch-size, --lr and --seed the recipe's training ones. Checkpoints go to
<output-dir>-checkpoints; the finished model folder is written to a temporary folder and renamed to <output-dir>.
A resumed run reuses the recipe it recorded unless --recipe is given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import ProjectConfiguration, set_seed
from torch.utils.data import DataLoader, TensorDataset

from hemseg.data.dataset import label_names, load
from hemseg.files import atomic_folder, clear_partials, write_csv, write_failure
from hemseg.hub import push_folder
from hemseg.inference.segmenter import load_model
from hemseg.model import UNet
from hemseg.speed import fused_adam
from hemseg.training.checkpoints import (
    COMMANDS_FILE,
    RUN_FILE,
    clear_later_checkpoints,
    record_invocation,
    refuse_earlier_run,
    resolve_checkpoint,
    resume_hint,
)
from hemseg.training.finish import finish
from hemseg.training.launch import command_line, idle_cores_note, launch_command, one_cpu_process_note
from hemseg.training.loop import train_epoch, validate_epoch
from hemseg.training.losses import make_loss
from hemseg.training.recipe import Recipe, load_recipe
from hemseg.training.state import TrainingState, epoch_metrics, read_log, selection_score
from hemseg.training.tensors import (
    SliceTensors,
    canvas_side,
    check_host_memory,
    load_tensors,
    resident_device,
    slice_bytes,
)

# Flags that change one training setting of the recipe.
TRAINING_FLAGS = {"epochs": int, "batch_size": int, "lr": float, "seed": int}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", help="YAML recipe (configs/); default: the paper's, or a resumed run's own")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="change one recipe setting, the value read as YAML (repeatable): --set training.crop_size=128",
    )
    parser.add_argument("--data", required=True, help="slice folder, saved data set folder or Hub data set id")
    parser.add_argument("--output-dir", required=True, help="model folder to create")
    for name, kind in TRAINING_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        per_process = " (per process)" if name == "batch_size" else ""
        parser.add_argument(flag, type=kind, help=f"the recipe's training.{name}{per_process}")
    parser.add_argument("--init-from", help="start from this model's weights (folder or Hub id); same architecture")
    parser.add_argument("--resume-from-checkpoint", help="a checkpoint folder, or 'latest'")
    parser.add_argument("--push-to-hub", action="store_true")
    parser.add_argument("--hub-model-id", help="user/name on the Hub (with --push-to-hub)")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")


def add_train_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "train",
        help="train a model from a recipe (in this process; `accelerate launch train.py` for several)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(command=train, program="-m hemseg train")


def invocation(args: argparse.Namespace) -> list[str]:
    """The arguments of this invocation, rebuilt from ``args`` in one order (--recipe, --set, the rest), so that
    `train.py` and `hemseg train` record a run alike."""
    words = ["--recipe", args.recipe] if args.recipe else []
    words += [word for assignment in args.set for word in ("--set", assignment)]
    for name in ("data", "output_dir", *TRAINING_FLAGS, "init_from", "resume_from_checkpoint"):
        if getattr(args, name) is not None:
            words += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    if args.push_to_hub:
        words += ["--push-to-hub", "--hub-model-id", args.hub_model_id] + ["--private"] * args.private
    return words


def resolve_recipe(args: argparse.Namespace, work_dir: Path) -> Recipe:
    """The --recipe file (else a resumed run's recorded recipe, else the paper's), then --set, then the flags."""
    recorded = work_dir / RUN_FILE
    if args.recipe:
        recipe = load_recipe(args.recipe)
    elif args.resume_from_checkpoint and recorded.exists():
        run = json.loads(recorded.read_text())
        if "recipe" not in run:
            raise ValueError(f"{recorded} is from a run made before recipes: resume it with --recipe FILE")
        recipe = Recipe.from_dict(run["recipe"])
    else:
        recipe = Recipe()
    recipe = recipe.with_overrides(args.set)
    flags = {name: getattr(args, name) for name in TRAINING_FLAGS if getattr(args, name) is not None}
    return replace(recipe, training=replace(recipe.training, **flags)).checked()


def initial_model(recipe: Recipe, init_from: str | None, say) -> UNet:
    """A fresh UNet for the recipe, or with ``init_from``'s weights (fine-tuning): strict, so an architecture
    mismatch is an error, not random weights."""
    labels, size = list(recipe.model.labels), recipe.model
    model = UNet(1, len(labels), size.base_channels, size.depth, labels, preprocessing=recipe.preprocessing())
    if not init_from:
        return model
    start = load_model(init_from)
    fits = start.preprocessing.get("fit"), recipe.preprocessing()["fit"]
    if fits[0] != fits[1]:  # the same weights would meet slices of another scale than they learned
        raise ValueError(
            f"--init-from {init_from} was trained on slices fitted by {fits[0]!r}, but the recipe fits them by "
            f"{fits[1]!r}: start from a model of the same fit, or set model.spacing_mm to match"
        )
    if start.labels != labels:  # same shapes, but each output channel would start as another label's
        raise ValueError(
            f"--init-from {init_from} predicts the labels {start.labels} in this order, but the recipe gives {labels}; "
            f"to fine-tune it, --set 'model.labels=[{','.join(start.labels)}]'"
        )
    try:
        model.load_state_dict(start.state_dict())
    except RuntimeError as err:
        raise ValueError(
            f"--init-from {init_from}: its weights do not fit UNet(base_channels={recipe.model.base_channels}, "
            f"depth={recipe.model.depth}, labels={labels}); use the same architecture ({err})"
        ) from err
    if start.seed_thresholds and not recipe.validation.choose_seed_thresholds:  # chosen for other weights
        say(
            f"note: {init_from} has seed thresholds {start.seed_thresholds}; this model will have none unless "
            "validation.choose_seed_thresholds chooses them again"
        )
    return model


def resident_slices(dataset, recipe: Recipe, accelerator: Accelerator, started: float):
    """Every slice preprocessed once; on the device when it fits (no loader workers, no per-batch decoding)."""
    labels, preprocessing, multiple = list(recipe.model.labels), recipe.preprocessing(), 2**recipe.model.depth
    side = canvas_side(dataset, preprocessing, multiple)
    needed = slice_bytes(len(dataset), len(labels), side)
    check_host_memory(needed, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))  # torchrun's processes on this machine
    data = load_tensors(dataset, labels, preprocessing, accelerator.is_local_main_process, side=side)
    resident = resident_device(needed, accelerator.device)
    data = data.to(resident)
    accelerator.print(
        f"{len(data.splits)} slices ({needed / 2**20:.0f} MiB) on {resident} after "
        f"{time.perf_counter() - started:.1f} s"
        + (f"; a batch at a time is copied to {accelerator.device}" if resident != accelerator.device else "")
    )
    return data


def resume(accelerator: Accelerator, checkpoint: str, work_dir: Path, state: TrainingState, scheduler, recipe: Recipe):
    """Load the checkpoint; a run resumed with another validation.select_by chooses its best epoch afresh."""
    accelerator.load_state(resolve_checkpoint(checkpoint, work_dir))
    clear_later_checkpoints(work_dir, state.epoch, accelerator.is_main_process)
    accelerator.wait_for_everyone()
    accelerator.print(f"resumed after epoch {state.epoch} (best validation {state.select_by} {state.best_score:.4f})")
    select_by = recipe.validation.select_by
    if state.select_by != select_by:  # only the log is left of the epochs the old score chose among
        if state.epoch >= recipe.training.epochs:
            raise ValueError(
                f"this run chose its best epoch by {state.select_by}; to choose by {select_by} instead, resume with "
                f"--epochs above the {state.epoch} already done"
            )
        accelerator.print(f"choosing the best epoch by {select_by} from epoch {state.epoch + 1} on")
        state.select_by, state.best_score, state.best_epoch = select_by, -math.inf, state.epoch
        scheduler.best, scheduler.num_bad_epochs = scheduler.mode_worse, 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    parser.set_defaults(program="train.py")
    return train(parser.parse_args(argv))


def train(args: argparse.Namespace) -> int:
    """``run_training``, with Ctrl-C said as what is kept and how to go on."""
    try:
        return run_training(args)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(resume_hint(Path(f"{args.output_dir}-checkpoints"))) from None


def run_training(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push-to-hub needs --hub-model-id")
    output_dir, work_dir = Path(args.output_dir), Path(f"{args.output_dir}-checkpoints")
    for folder in (output_dir.parent, work_dir):  # what a run killed while writing left half written
        if folder.is_dir():
            clear_partials(folder)
    recipe = resolve_recipe(args, work_dir)
    refuse_earlier_run(work_dir, resuming=bool(args.resume_from_checkpoint))
    training, validation, labels = recipe.training, recipe.validation, list(recipe.model.labels)

    # Initialize the accelerator: devices, processes and precision come from `accelerate launch`. On CUDA the batches
    # of indices are copied without blocking; a seedable sampler shuffles by (seed, epoch), so a resumed run, in any
    # number of processes, draws the order an uninterrupted one would have.
    accelerator = Accelerator(
        project_config=ProjectConfiguration(project_dir=str(work_dir), automatic_checkpoint_naming=True, total_limit=2),
        dataloader_config=DataLoaderConfiguration(non_blocking=True, use_seedable_sampler=True),
    )
    set_seed(training.seed)
    say_where(accelerator)

    # The data, every slice preprocessed once and resident; the model, fresh or from --init-from
    dataset = load(args.data)
    missing = [label for label in labels if label not in label_names(dataset)]
    if missing:
        raise ValueError(f"{args.data} has no masks for {missing}; it has {label_names(dataset)}")
    model = initial_model(recipe, args.init_from, accelerator.print)
    data = resident_slices(dataset, recipe, accelerator, started)
    train_idx, val_idx = split_indices(data, recipe, args.data)
    cuda = accelerator.device.type == "cuda"
    train_loader = DataLoader(TensorDataset(train_idx), batch_size=training.batch_size, shuffle=True, pin_memory=cuda)
    val_loader = DataLoader(TensorDataset(val_idx), batch_size=training.batch_size, pin_memory=cuda)

    # Optimizer, the plateau scheduler (checkpointed, not prepared: it steps once per epoch on a gathered score)
    optimizer = torch.optim.Adam(model.parameters(), lr=training.lr, fused=fused_adam(accelerator.device))
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=0.5, patience=training.patience // 2
    )
    state = TrainingState(validation.select_by)
    memory_format = torch.channels_last if training.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    accelerator.register_for_checkpointing(scheduler, state)
    if args.resume_from_checkpoint:
        resume(accelerator, args.resume_from_checkpoint, work_dir, state, scheduler, recipe)
    if accelerator.is_main_process:  # once the run is under way: for people, resumes and `hemseg lab compare`
        work_dir.mkdir(parents=True, exist_ok=True)
        run = {"recipe": recipe.to_dict(), "data": args.data, "init_from": args.init_from, "argv": invocation(args)}
        (work_dir / RUN_FILE).write_text(json.dumps(run, indent=1))
        command = command_line(invocation(args), launch_command(accelerator), args.program)
        record_invocation(work_dir, command, args.resume_from_checkpoint)

    # Train, validate, log and checkpoint each epoch; stop early when validation stalls
    loss_fn, val_loss_fn = make_loss(training.loss), make_loss(training.loss, per_sample=True)
    log = read_log(work_dir / "training_log.csv", state.epoch)
    generator = torch.Generator(accelerator.device)
    stopped = bool(args.resume_from_checkpoint) and state.stalled(training.patience)  # a stopped run stays stopped
    if stopped:
        accelerator.print(
            f"stopped early after epoch {state.epoch}: no improvement for {training.patience} epochs (a larger "
            "training.patience continues it)"
        )
    for epoch in range(state.epoch, state.epoch if stopped else training.epochs):
        epoch_started = time.perf_counter()
        # Augmentation draws differ per process and epoch, and are the same again after a resume.
        generator.manual_seed(training.seed * 100_003 + epoch * 101 + accelerator.process_index)
        train_loader.set_epoch(epoch)
        losses, counts, planes = train_epoch(
            model, train_loader, data, loss_fn, optimizer, accelerator, recipe.augmentation.config(),
            training.crop_size, generator, memory_format, f"epoch {epoch + 1}/{training.epochs}",
        )  # fmt: skip
        val_loss, val_columns = validate_epoch(model, val_loader, data, val_loss_fn, accelerator, labels, validation)
        row = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - epoch_started,
            "train_loss": float(losses.mean()),
            "val_loss": val_loss,
            **epoch_metrics("train", counts, planes, labels),
            **val_columns,
        }
        log.append(row)
        score = selection_score(row, labels, state.select_by)
        scheduler.step(score)
        state.epoch = epoch + 1
        improved = score > state.best_score
        if improved:
            state.best_score, state.best_epoch = score, epoch + 1
        stop = state.stalled(training.patience)
        out_of_time = past_time_limit(accelerator, started, training.time_limit_min)
        # A checkpoint every checkpoints.every epochs, and after each new best epoch and the last one.
        last = stop or out_of_time or state.epoch == training.epochs
        due = improved or last or state.epoch % recipe.checkpoints.every == 0
        saved = save_epoch(accelerator, model, log, work_dir, best=improved, checkpoint=due)
        accelerator.print(f"{epoch_message(row, labels, validation.noise)} ({row['seconds']:.1f} s{saved})")
        if stop:
            accelerator.print(f"early stop: no improvement for {training.patience} epochs")
            break
        if out_of_time:
            accelerator.print(f"time limit: {training.time_limit_min:g} minutes passed after epoch {state.epoch}")
            break

    # Evaluate the best weights on the held-out cases and write the model folder
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        commands = (work_dir / COMMANDS_FILE).read_text().splitlines()
        try:
            finish(recipe, args.data, dataset, log, work_dir, output_dir, state, commands, accelerator.device)
        except (OSError, RuntimeError) as err:  # torch says a full disk as "basic_ios::clear: iostream error"
            kept = f"the best weights are kept in {work_dir / 'best'}"
            raise OSError(f"{write_failure(err, output_dir)}; {kept}") from err
        if args.push_to_hub:
            return push_folder(output_dir, args.hub_model_id, args.private)
    accelerator.end_training()
    return 0


def past_time_limit(accelerator: Accelerator, started: float, limit_min: float | None) -> bool:
    """Whether the run has passed its time limit, by the clock of any of its processes (they stop together)."""
    if limit_min is None:
        return False
    late = torch.tensor(float(time.perf_counter() - started >= 60 * limit_min), device=accelerator.device)
    return bool(accelerator.reduce(late, reduction="sum") > 0)


def say_where(accelerator: Accelerator) -> None:
    """Where the run trains, and a note when CPU cores would sit idle."""
    accelerator.print(
        f"training on {accelerator.num_processes} process(es), device {accelerator.device}, "
        f"{accelerator.distributed_type.value}, mixed precision {accelerator.mixed_precision}"
    )
    if accelerator.device.type == "cpu":  # the first note already names the idle cores' cause and fix
        note = one_cpu_process_note(accelerator.num_processes) or idle_cores_note(accelerator.num_processes)
        if note:
            accelerator.print(note)


def split_indices(data: SliceTensors, recipe: Recipe, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The training and validation slices (split by patient in the data), or why they cannot serve."""
    train_idx, val_idx = (torch.from_numpy((data.splits == split).nonzero()[0]) for split in ("train", "val"))
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(f"{name} needs slices in both the 'train' and the 'val' split")
    select_by = recipe.validation.select_by
    unseen = [label for c, label in enumerate(recipe.model.labels) if not data.masks[val_idx, c].any()]
    if unseen and "dice_fg" in select_by:  # its score would be NaN every epoch, and no epoch would be best
        raise ValueError(
            f"validation.select_by {select_by} averages the validation slices that show each label, and no "
            f"validation slice of {name} shows {unseen}; choose the epoch by pooled Dice: "
            "--set validation.select_by=pooled_dice"
        )
    return train_idx, val_idx


def save_epoch(accelerator: Accelerator, model, log: list[dict], work_dir: Path, best: bool, checkpoint: bool) -> str:
    """A new best epoch's weights to ``best/``, the log, and when due a checkpoint (after the weights, so ``best/``
    belongs to the latest checkpoint); the checkpoint's time, for the epoch's line.

    Each is whole or absent: ``best/`` and the log are replaced when complete, and a checkpoint cut short (a full
    disk, Ctrl-C) is removed. A write that fails is said in words, with the checkpoint to resume from."""
    try:
        if best:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                with atomic_folder(work_dir / "best") as folder:  # never half written, even if the run dies here
                    accelerator.unwrap_model(model).save_pretrained(folder)
        if accelerator.is_main_process:  # the log first: a checkpoint never lacks its log rows
            write_csv(work_dir / "training_log.csv", log)
        if not checkpoint:
            return ""
        saving = time.perf_counter()
        accelerator.project_configuration.iteration = log[-1]["epoch"] - 1  # checkpoint_<k> holds epoch k + 1
        try:
            accelerator.save_state()
        except BaseException:
            if accelerator.is_main_process:
                shutil.rmtree(work_dir / "checkpoints" / f"checkpoint_{log[-1]['epoch'] - 1}", ignore_errors=True)
            raise
    except (OSError, RuntimeError) as err:  # torch says a full disk as "basic_ios::clear: iostream error"
        raise OSError(f"{write_failure(err, work_dir)}; {resume_hint(work_dir)}") from err
    return f", checkpoint {time.perf_counter() - saving:.1f} s"


def epoch_message(row: dict, labels: list[str], noise: float) -> str:
    message = (
        f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, val pooled Dice "
        + ", ".join(f"{label} {row[f'val_{label}_all_dice']:.4f}" for label in labels)
    )
    if noise:
        message += f"; with noise {noise:g}: val loss {row['noisyval_loss']:.4f}, Dice_fg " + ", ".join(
            f"{label} {row[f'noisyval_{label}_all_dice_fg']:.4f}" for label in labels
        )
    return message


def cli(argv: list[str] | None = None) -> int:
    """``main`` with bad input (a missing folder, a recipe that cannot work) said in one line, no traceback."""
    try:
        return main(argv)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return 130
