"""Train the hemseg U-Net with Hugging Face Accelerate.

    accelerate launch train.py --data build/spine-slices --output-dir runs/unet64
    accelerate launch --cpu train.py ...   # no GPU: --cpu lets the process use every core
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 train.py ...  # two CPU processes
    accelerate launch --multi_gpu --num_processes 4 --mixed_precision bf16 train.py ...  # four GPUs

Defaults follow the paper: UNet with 64 base filters, Adam at lr 1e-4, binary cross-entropy, up to 70 epochs with
early stopping on the validation pooled Dice, 128x128 inputs. Added to it: the learning rate halves when validation
stalls, and the augmentation goes beyond the paper's (README, Training). Checkpoints go to
<output-dir>-checkpoints after every epoch (or every N: ``--checkpoint-every``); the finished model folder is
written to a temporary folder and renamed to <output-dir> at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import DynamoBackend, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from hemseg.calibrate import choose_seeds, seed_table
from hemseg.card import OTHER_DATA_LIMITS, SPINE_MRI_LIMITS, write_model_card
from hemseg.data import label_names, load
from hemseg.evaluate import evaluate_dataset, summarize_by_label, write_report
from hemseg.figures import training_curves
from hemseg.files import atomic_folder, write_csv
from hemseg.hub import push_folder
from hemseg.inference import Segmenter, load_model
from hemseg.metrics import confusion_counts, json_ready
from hemseg.model import UNet
from hemseg.speed import cpu_cores, fused_adam
from hemseg.training import (
    DEFAULT_SELECTION,
    NOISY_SELECTIONS,
    SELECTION_SCORES,
    TrainingState,
    check_host_memory,
    epoch_metrics,
    load_tensors,
    make_loss,
    read_log,
    resident_device,
    selection_score,
    slice_bytes,
)
from hemseg.transforms import DEFAULT_PREPROCESSING, NO_AUGMENT, AugmentConfig, augment


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="slice folder, saved data set folder or Hub data set id")
    parser.add_argument("--output-dir", required=True, help="model folder to create")
    parser.add_argument("--labels", default="vertebral_body,hemangioma", help="comma-separated; one output each")
    parser.add_argument("--base-channels", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=128, help="side of the square model grid")
    parser.add_argument(
        "--crop-size", type=int, help="train on windows of this side around the anatomy (default: whole grid)"
    )
    parser.add_argument("--epochs", type=int, default=70)
    parser.add_argument("--patience", type=int, default=10, help="epochs without improvement before stopping")
    parser.add_argument(
        "--select-by",
        choices=list(SELECTION_SCORES),
        default=DEFAULT_SELECTION,
        help="validation score (mean over labels) for the best epoch, early stopping and the learning-rate plateau",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=1,
        metavar="N",
        help="save a resumable checkpoint every N epochs, after each new best epoch and at the end; a resume "
        "repeats the epochs since the last one (short GPU epochs would otherwise spend much of their time saving)",
    )
    parser.add_argument(
        "--choose-seed-thresholds",
        type=lambda labels: labels.split(","),
        default=[],
        metavar="LABELS",
        help="comma-separated labels: after training, keep a predicted component of each only where it reaches the "
        "seed threshold of highest validation pooled Dice (hemseg.calibrate), saved in config.json",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="per process")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--loss", choices=["bce", "bce+dice"], default="bce")
    parser.add_argument("--no-augment", dest="augment", action="store_false")
    parser.add_argument(
        "--noise-std",
        type=float,
        default=AugmentConfig.noise_std[1],
        help="largest sd of the augmentation's Gaussian noise, a share of the scaled intensity range (default "
        "%(default)s; earlier versions used 0.05)",
    )
    parser.add_argument(
        "--intensity-curves",
        type=float,
        default=AugmentConfig.curve_p,
        metavar="P",
        help="share of training samples whose intensities go through a random non-monotonic curve, so tissues swap "
        "rank as between MRI sequences (default %(default)s: off)",
    )
    parser.add_argument(
        "--blur",
        type=float,
        default=AugmentConfig.blur_p,
        metavar="P",
        help="share of training samples blurred by a Gaussian of random sd (up to "
        f"{AugmentConfig.blur_max_sigma:g} grid pixels, each axis on its own), as thicker slices or a coarser scanner "
        "blur them (default %(default)s: off)",
    )
    parser.add_argument(
        "--val-noise",
        type=float,
        default=0.0,
        metavar="SD",
        help="also validate each epoch with Gaussian noise of this sd added to the validation slices (a share of the "
        "scaled intensity range, the same noise every epoch), logged as noisyval_* columns; needed by --select-by "
        f"{', '.join(sorted(NOISY_SELECTIONS))}",
    )
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory (faster with bf16 / AMX)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume-from-checkpoint", help="a checkpoint folder, or 'latest'")
    parser.add_argument("--init-from", help="start from this model's weights (folder or Hub id); same architecture")
    parser.add_argument("--push-to-hub", action="store_true")
    parser.add_argument("--hub-model-id", help="user/name on the Hub (with --push-to-hub)")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push-to-hub needs --hub-model-id")
    unknown = set(args.choose_seed_thresholds) - set(args.labels.split(","))
    if unknown:
        parser.error(f"--choose-seed-thresholds names {sorted(unknown)}, which --labels does not")
    if args.checkpoint_every < 1:
        parser.error("--checkpoint-every must be at least 1")
    if args.noise_std < 0:
        parser.error("--noise-std must be 0 or more")
    if not 0 <= args.intensity_curves <= 1:
        parser.error("--intensity-curves must be between 0 and 1")
    if not 0 <= args.blur <= 1:
        parser.error("--blur must be between 0 and 1")
    if args.val_noise < 0:
        parser.error("--val-noise must be 0 or more")
    if args.select_by in NOISY_SELECTIONS and not args.val_noise:
        parser.error(f"--select-by {args.select_by} needs --val-noise above 0")
    step = 2**args.depth  # the U-Net's poolings halve a window that many times
    if args.crop_size and not (step <= args.crop_size <= args.image_size and args.crop_size % step == 0):
        parser.error(f"--crop-size must be a multiple of {step} between {step} and --image-size")
    return args


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


def idle_cores_note(num_processes: int) -> str | None:
    """A note when the training processes' threads leave CPU cores idle.

    `accelerate launch` without --cpu sets OMP_NUM_THREADS=1 (its default for GPU runs) even where there is no GPU;
    on the 2-vCPU machine one epoch of the bundled model's configuration took 1.5-1.9 times as long as with --cpu.
    """
    cores = cpu_cores()
    threads = torch.get_num_threads()
    if threads * num_processes >= cores:
        return None
    return (
        f"note: training on the CPU with {threads} thread(s) in each of {num_processes} process(es), but this machine "
        f"has {cores} cores: `accelerate launch --cpu ...` (or --num_cpu_threads_per_process {cores // num_processes}) "
        "lets them all work; without --cpu the launcher sets OMP_NUM_THREADS=1"
    )


def one_cpu_process_note(num_processes: int) -> str | None:
    """A note when `accelerate launch --cpu --num_processes N` started one process: Accelerate's CPU launcher
    starts more only through mpirun. It sets the rendezvous address for the N processes it does not start, and
    torchrun, which does start them, sets WORLD_SIZE."""
    if num_processes > 1 or "MASTER_ADDR" not in os.environ or "WORLD_SIZE" in os.environ:
        return None
    return (
        "note: Accelerate's --cpu launcher started one process, though more were asked for (it needs mpirun for "
        "more), and gave it only its share of the cores. For one process on every core: accelerate launch --cpu "
        "train.py ...; for several CPU processes: ACCELERATE_USE_CPU=true accelerate launch --multi_gpu "
        "--num_processes N train.py ..."
    )


@torch.no_grad()
def validate(
    model, loader, data, per_sample_loss, accelerator, noise_sd: float = 0.0
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Validation loss (the mean of each slice's loss) and per-slice counts, gathered from every process without
    duplicates; with ``noise_sd``, on the slices ``with_slice_noise``."""
    model.eval()
    losses, counts, planes = [], [], []
    for (idx,) in loader:
        images, masks, batch_planes = data.batch(idx, accelerator.device)
        if noise_sd:
            images = with_slice_noise(images, idx, noise_sd)
        logits = model(images)
        # One loss per slice, so the duplicates that pad the last batch of a process are dropped exactly.
        loss = per_sample_loss(logits, masks)
        batch = accelerator.gather_for_metrics((loss, confusion_counts(logits > 0, masks), batch_planes))
        losses.append(batch[0])
        counts.append(batch[1])
        planes.append(batch[2])
    return float(torch.cat(losses).mean()), torch.cat(counts), torch.cat(planes)


COMMANDS_FILE = "commands.txt"  # in the checkpoints folder: each invocation of this run, resumes included


def launch_command(accelerator: Accelerator) -> str:
    """`accelerate launch` with the settings this run got from it. The launcher's own flags never reach the script,
    yet the process count (the batch is per process), mixed precision and compilation change what a run computes."""
    cpu = accelerator.device.type == "cpu"
    parts = ["accelerate", "launch"]
    if accelerator.num_processes > 1:  # --cpu starts one process (one_cpu_process_note): name what starts them
        parts = ["ACCELERATE_USE_CPU=true", *parts] if cpu else parts
        parts += ["--multi_gpu", "--num_processes", str(accelerator.num_processes)]
    elif cpu:
        parts.append("--cpu")
    if accelerator.mixed_precision != "no":
        parts += ["--mixed_precision", accelerator.mixed_precision]
    if (backend := accelerator.state.dynamo_plugin.backend) != DynamoBackend.NO:
        parts += ["--dynamo_backend", backend.value.lower()]
    return " ".join(parts)


def command_line(args: argparse.Namespace, launcher: str) -> str:
    return f"{launcher} train.py {shlex.join(args.argv)}"


LAST_CHECKPOINT_FILE = "custom_checkpoint_1.pkl"  # the TrainingState, registered after the scheduler


def checkpoint_number(folder: Path) -> int:
    """k of ``checkpoint_<k>``, the folder that holds epoch k + 1."""
    return int(folder.name.split("_")[-1])


def resolve_checkpoint(name: str, work_dir: Path) -> str:
    """A checkpoint folder; for 'latest', the newest one that was written completely.

    Accelerate's ``save_state`` writes the objects registered for checkpointing last, in the order registered, so
    a run killed while saving leaves a folder without the last of them (the TrainingState): that one is skipped.
    """
    if name != "latest":
        if not Path(name).is_dir():
            raise FileNotFoundError(f"{name}: no such checkpoint folder")
        return name
    folders = sorted((work_dir / "checkpoints").glob("checkpoint_*"), key=checkpoint_number)
    complete = [f for f in folders if (f / LAST_CHECKPOINT_FILE).exists()]
    if not complete:
        raise FileNotFoundError(f"no complete checkpoint in {work_dir / 'checkpoints'} to resume from")
    return str(complete[-1])


def clear_later_checkpoints(work_dir: Path, epoch: int, is_main_process: bool) -> None:
    """Make room for the checkpoints of the epochs after ``epoch``, the one resumed from.

    A folder for a later epoch would block that epoch's save. One cut short is removed; a complete one is refused,
    since resuming from an earlier checkpoint would overwrite it.
    """
    later = [f for f in (work_dir / "checkpoints").glob("checkpoint_*") if checkpoint_number(f) >= epoch]
    complete = sorted(f.name for f in later if (f / LAST_CHECKPOINT_FILE).exists())
    if complete:
        raise ValueError(
            f"{work_dir / 'checkpoints'} has later checkpoints than the one resumed from ({', '.join(complete)}); "
            "resume from the latest, or remove them first"
        )
    if is_main_process:
        for folder in later:
            shutil.rmtree(folder)


def main(argv: list[str] | None = None) -> int:
    run_started = time.perf_counter()
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    work_dir = Path(f"{args.output_dir}-checkpoints")
    if not args.resume_from_checkpoint and any((work_dir / "checkpoints").glob("checkpoint_*")):
        raise ValueError(
            f"{work_dir} holds the checkpoints of an earlier run: continue it with --resume-from-checkpoint latest, "
            "or remove that folder to start again"
        )
    # On CUDA the batches of indices are copied from pinned memory without blocking: a blocking copy waits until
    # the GPU has finished all the work queued before it, so the next step could not be queued while one runs.
    accelerator = Accelerator(
        project_config=ProjectConfiguration(project_dir=str(work_dir), automatic_checkpoint_naming=True, total_limit=2),
        # A seedable sampler shuffles by (seed, epoch): a resumed run, in any number of processes, draws the order
        # an uninterrupted one would have (Accelerate's default generator is not in the checkpoint).
        dataloader_config=DataLoaderConfiguration(non_blocking=True, use_seedable_sampler=True),
    )
    cuda = accelerator.device.type == "cuda"
    set_seed(args.seed)
    accelerator.print(
        f"training on {accelerator.num_processes} process(es), device {accelerator.device}, "
        f"{accelerator.distributed_type.value}, mixed precision {accelerator.mixed_precision}"
    )
    if accelerator.device.type == "cpu":  # the first note already names the idle cores' cause and fix
        note = one_cpu_process_note(accelerator.num_processes) or idle_cores_note(accelerator.num_processes)
        if note:
            accelerator.print(note)
    launcher = launch_command(accelerator)
    labels = args.labels.split(",")
    dataset = load(args.data)
    missing = [label for label in labels if label not in label_names(dataset)]
    if missing:
        raise ValueError(f"{args.data} has no masks for {missing}; it has {label_names(dataset)}")

    preprocessing = {**DEFAULT_PREPROCESSING, "size": [args.image_size, args.image_size]}
    model = UNet(1, len(labels), args.base_channels, args.depth, labels=labels, preprocessing=preprocessing)
    if args.init_from:  # fine-tuning: strict, so an architecture mismatch is an error, not random weights
        start = load_model(args.init_from)
        if start.labels != labels:  # same shapes, but each output channel would start as another label's
            raise ValueError(
                f"--init-from {args.init_from} predicts the labels {start.labels} in this order, but --labels "
                f"gives {labels}; to fine-tune it, pass --labels {','.join(start.labels)}"
            )
        try:
            model.load_state_dict(start.state_dict())
        except RuntimeError as err:
            raise ValueError(
                f"--init-from {args.init_from}: its weights do not fit UNet(base_channels={args.base_channels}, "
                f"depth={args.depth}, labels={labels}); pass the same architecture ({err})"
            ) from err
        if start.seed_thresholds and not args.choose_seed_thresholds:  # they were chosen for other weights
            accelerator.print(
                f"note: {args.init_from} has seed thresholds {start.seed_thresholds}; this model will have none "
                "unless --choose-seed-thresholds chooses them again"
            )
    if accelerator.is_main_process:  # what this run trains, for people and for `python -m hemseg compare`
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / "run.json").write_text(json.dumps({k: v for k, v in vars(args).items() if k != "argv"}, indent=1))
    needed = slice_bytes(len(dataset), len(labels), args.image_size)
    check_host_memory(needed, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))  # torchrun's processes on this machine
    data = load_tensors(dataset, labels, preprocessing, progress=accelerator.is_local_main_process)
    # The whole set stays resident, on the device when it fits: no loader workers, no per-batch decoding.
    resident = resident_device(needed, accelerator.device)
    data = data.to(resident)
    accelerator.print(
        f"{len(data.splits)} slices ({needed / 2**20:.0f} MiB) on {resident} after "
        f"{time.perf_counter() - run_started:.1f} s"
        + (f"; a batch at a time is copied to {accelerator.device}" if resident != accelerator.device else "")
    )
    train_idx = torch.from_numpy((data.splits == "train").nonzero()[0])
    val_idx = torch.from_numpy((data.splits == "val").nonzero()[0])
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(f"{args.data} needs slices in both the 'train' and the 'val' split")
    unseen = [label for c, label in enumerate(labels) if not data.masks[val_idx, c].any()]
    if unseen and "dice_fg" in args.select_by:  # its score would be NaN every epoch, and no epoch would be best
        raise ValueError(
            f"--select-by {args.select_by} averages the validation slices that show each label, and no validation "
            f"slice of {args.data} shows {unseen}; choose the epoch by --select-by pooled_dice"
        )
    train_loader = DataLoader(TensorDataset(train_idx), batch_size=args.batch_size, shuffle=True, pin_memory=cuda)
    val_loader = DataLoader(TensorDataset(val_idx), batch_size=args.batch_size, pin_memory=cuda)

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, fused=fused_adam(accelerator.device))
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=0.5, patience=args.patience // 2
    )
    state = TrainingState(args.select_by)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    # The plateau scheduler steps once per epoch on a gathered score, so it is checkpointed but not prepared.
    accelerator.register_for_checkpointing(scheduler, state)
    if args.resume_from_checkpoint:
        accelerator.load_state(resolve_checkpoint(args.resume_from_checkpoint, work_dir))
        clear_later_checkpoints(work_dir, state.epoch, accelerator.is_main_process)
        accelerator.wait_for_everyone()
        accelerator.print(
            f"resumed after epoch {state.epoch} (best validation {state.select_by} {state.best_score:.4f})"
        )
        if state.select_by != args.select_by:
            # Only the log is left of the epochs the old score chose among, so the choice starts again here.
            if state.epoch >= args.epochs:
                raise ValueError(
                    f"this run chose its best epoch by {state.select_by}; to choose by {args.select_by} instead, "
                    f"resume with --epochs above the {state.epoch} already done"
                )
            accelerator.print(f"choosing the best epoch by {args.select_by} from epoch {state.epoch + 1} on")
            state.select_by, state.best_score, state.best_epoch = args.select_by, -math.inf, state.epoch
            scheduler.best, scheduler.num_bad_epochs = scheduler.mode_worse, 0

    if accelerator.is_main_process:  # each invocation that got this far, in order: a resume's alone would not remake it
        with open(work_dir / COMMANDS_FILE, "a" if args.resume_from_checkpoint else "w") as f:
            f.write(command_line(args, launcher) + "\n")
    loss_fn, val_loss_fn = make_loss(args.loss), make_loss(args.loss, per_sample=True)
    log = read_log(work_dir / "training_log.csv", state.epoch)
    generator = torch.Generator(accelerator.device)
    augment_config = (
        AugmentConfig(noise_std=(0.0, args.noise_std), curve_p=args.intensity_curves, blur_p=args.blur)
        if args.augment
        else NO_AUGMENT
    )
    # A resumed run that had stopped early stays stopped (its last epoch would otherwise train once more).
    stopped = bool(args.resume_from_checkpoint) and state.stalled(args.patience)
    if stopped:
        accelerator.print(
            f"stopped early after epoch {state.epoch}: no improvement for {args.patience} epochs (a larger "
            "--patience continues it)"
        )
    for epoch in range(state.epoch, state.epoch if stopped else args.epochs):
        epoch_started = time.perf_counter()
        # Augmentation draws differ per process and epoch, and are the same again after a resume.
        generator.manual_seed(args.seed * 100_003 + epoch * 101 + accelerator.process_index)
        train_loader.set_epoch(epoch)
        model.train()
        train_losses, train_counts, train_planes = [], [], []
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not accelerator.is_local_main_process)
        for step, (idx,) in enumerate(bar):
            images, masks, batch_planes = data.batch(idx, accelerator.device)
            if args.augment or args.crop_size:
                images, masks = augment(images, masks, generator, augment_config, args.crop_size)
            logits = model(images.contiguous(memory_format=memory_format))
            loss = loss_fn(logits, masks)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            gathered = accelerator.gather_for_metrics(
                (loss.detach().expand(len(idx)), confusion_counts(logits.detach() > 0, masks), batch_planes)
            )
            train_losses.append(gathered[0])
            train_counts.append(gathered[1])
            train_planes.append(gathered[2])
            if step % 50 == 0:  # .item() waits for the device: not on every step
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)

        val_loss, val_counts, val_planes = validate(model, val_loader, data, val_loss_fn, accelerator)
        noisy = {}
        if args.val_noise:
            noisy_loss, noisy_counts, _ = validate(model, val_loader, data, val_loss_fn, accelerator, args.val_noise)
            noisy = {"noisyval_loss": noisy_loss, **epoch_metrics("noisyval", noisy_counts, val_planes, labels)}
        row = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - epoch_started,
            "train_loss": float(torch.cat(train_losses).mean()),
            "val_loss": val_loss,
            **epoch_metrics("train", torch.cat(train_counts), torch.cat(train_planes), labels),
            **epoch_metrics("val", val_counts, val_planes, labels),
            **noisy,
        }
        log.append(row)
        score = selection_score(row, labels, state.select_by)
        scheduler.step(score)
        state.epoch = epoch + 1
        improved = score > state.best_score
        if improved:
            state.best_score, state.best_epoch = score, epoch + 1
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                with atomic_folder(work_dir / "best") as best:  # never half written, even if the run dies here
                    accelerator.unwrap_model(model).save_pretrained(best)
        if accelerator.is_main_process:  # the log first: a checkpoint never lacks its log rows
            write_csv(work_dir / "training_log.csv", log)
        stop = state.stalled(args.patience)
        timing = f"{row['seconds']:.1f} s"
        # A new best epoch is always checkpointed right after its weights, so `best/` belongs to the latest
        # checkpoint's best epoch (unless the run dies between the two writes).
        if improved or stop or state.epoch == args.epochs or state.epoch % args.checkpoint_every == 0:
            saving = time.perf_counter()
            accelerator.project_configuration.iteration = epoch  # checkpoint_<k> holds epoch k + 1
            accelerator.save_state()
            timing += f", checkpoint {time.perf_counter() - saving:.1f} s"
        message = (
            f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}, val loss {val_loss:.4f}, val pooled Dice "
            + ", ".join(f"{label} {row[f'val_{label}_all_dice']:.4f}" for label in labels)
        )
        if noisy:
            message += f"; with noise {args.val_noise}: val loss {noisy['noisyval_loss']:.4f}, Dice_fg " + ", ".join(
                f"{label} {noisy[f'noisyval_{label}_all_dice_fg']:.4f}" for label in labels
            )
        accelerator.print(f"{message} ({timing})")
        if stop:
            accelerator.print(f"early stop: no improvement for {args.patience} epochs")
            break

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        finish(args, launcher, dataset, labels, log, work_dir, output_dir, state, accelerator.device)
        if args.push_to_hub:
            return push_folder(output_dir, args.hub_model_id, args.private)
    accelerator.end_training()
    return 0


def finish(
    args, launcher: str, dataset, labels, log, work_dir: Path, output_dir: Path, state: TrainingState, device
) -> None:
    """Evaluate the best weights and assemble the model folder; renamed into place only when complete."""
    started = time.perf_counter()
    model = UNet.from_pretrained(work_dir / "best")
    segmenter, seed_rows = Segmenter(model, str(output_dir), device), []
    if args.choose_seed_thresholds:  # chosen on the validation cases, like the best epoch; test cases stay unseen
        seed_rows = seed_table(segmenter, dataset, "val", progress=False)
        chosen = choose_seeds(seed_rows)
        model.set_seed_thresholds({label: chosen[label] for label in args.choose_seed_thresholds if label in chosen})
        print(f"seed thresholds (highest validation pooled Dice): {model.seed_thresholds or 'none'}")
    with atomic_folder(output_dir) as tmp:
        model.save_pretrained(tmp)
        shutil.copy(work_dir / "training_log.csv", tmp / "training_log.csv")
        training_curves(log, labels, tmp / "training_curves.png")
        splits = [s for s in ("val", "test") if s in set(dataset["split"])]
        metrics = {}
        for split in splits:
            records = evaluate_dataset(segmenter, dataset, split)
            if split == splits[-1]:  # the report of the last split, which also summarises it
                note = f"Best epoch {state.best_epoch}; data {args.data}, split {split}."
                title = f"{output_dir.name}: {split} split"
                metrics[split] = write_report(records, tmp / "evaluation", title, note, dataset, segmenter)
            else:
                metrics[split] = summarize_by_label(records)
        command = command_line(args, launcher)
        commands = (work_dir / COMMANDS_FILE).read_text().splitlines() if (work_dir / COMMANDS_FILE).exists() else []
        commands = commands or [command]  # a folder from before commands.txt was kept
        lrs = [float(row["lr"]) for row in log] or [args.lr]
        lr = f"{lrs[0]:g}" + (
            f" (epoch 1) to {lrs[-1]:g} (halved when validation stalled)" if lrs[-1] != lrs[0] else ""
        )
        metrics.update(
            best_epoch=state.best_epoch,
            epochs_run=state.epoch,
            selected_by=state.select_by,
            best_val_score=state.best_score,
            seed_thresholds=model.seed_thresholds,
            seed_threshold_table=seed_rows,
            command=command,
            commands=commands,
            data=str(args.data),
            labels=labels,
        )
        (tmp / "metrics.json").write_text(json.dumps(json_ready(metrics), indent=1))
        write_model_card(
            tmp,
            model_name=output_dir.name,
            labels=labels,
            summaries={split: metrics[split] for split in splits},
            dataset_name=Path(str(args.data)).name,
            data_note=data_note(args.data),
            command="\n".join(commands),
            training_note=(
                f"UNet(base_channels={args.base_channels}, depth={args.depth}), Adam lr {lr}, loss {args.loss}, "
                f"batch {args.batch_size} per process"
                + (f" of {args.crop_size}x{args.crop_size} windows" if args.crop_size else "")
                + f", {augmentation_note(args)}"
                + (f", validated also with noise sd {args.val_noise}" if args.val_noise else "")
                + ", seed "
                f"{args.seed}; best validation {state.select_by} (mean over labels) {state.best_score:.4f} at epoch "
                f"{state.best_epoch} of "
                f"{state.epoch}. Per-epoch log: training_log.csv; curves: training_curves.png."
                + (
                    f" Seed thresholds ({', '.join(f'{k} {v:g}' for k, v in model.seed_thresholds.items())}): a "
                    "predicted component of these labels is kept only "
                    "where its probability reaches the seed somewhere, chosen for the highest validation pooled "
                    "Dice (table: `seed_threshold_table` in metrics.json); the scores above include them."
                    if model.seed_thresholds
                    else ""
                )
            ),
            data_limits=data_limits(args.data),
            input_size=(args.image_size, args.image_size),
        )
    print(f"model folder written: {output_dir} (evaluated and written in {time.perf_counter() - started:.0f} s)")


def augmentation_note(args: argparse.Namespace) -> str:
    """The augmentation a run trained with, for its model card."""
    if not args.augment:
        return "augmentation off"
    curves = f", random intensity curves on {args.intensity_curves:g} of the samples" if args.intensity_curves else ""
    blur = (
        f", Gaussian blur of sd up to {AugmentConfig.blur_max_sigma:g} grid pixels on {args.blur:g} of the samples"
        if args.blur
        else ""
    )
    return f"augmentation on (noise sd up to {args.noise_std}{curves}{blur})"


def data_description(data: str) -> dict | None:
    """The slice folder's dataset.json (written by `hemseg prepare`), or None for other data."""
    description = Path(str(data)) / "dataset.json"
    return json.loads(description.read_text()) if description.exists() else None


def data_limits(data: str) -> str:
    """The card's limits of the training data: the project's own sources are described; other data are not."""
    sources = (data_description(data) or {}).get("sources", [])
    if sources and all(Path(source).name == "spine-mri" for source in sources):
        return SPINE_MRI_LIMITS
    return OTHER_DATA_LIMITS


def data_note(data: str) -> str:
    """What the training data were, from the slice folder's dataset.json when there is one."""
    info = data_description(data)
    if info is not None:
        labels = "; ".join(f"{k}: {v}" for k, v in info.get("labels", {}).items())
        simulator = info.get("simulator", {})
        return (
            f"Slice folder `{Path(str(data)).name}` made by `python -m hemseg prepare` (seed {info.get('seed')}, "
            f"simulator version {simulator.get('version')}) from {', '.join(info.get('sources', []))}. "
            f"Labels: {labels}. Split by case into train/val/test."
        )
    return f"Data set `{data}`. Hemangioma masks, if any, come from hemseg's simulator: the lesions are simulated."


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
