"""Accelerate's checkpoints of a run: which one to resume from, and room for the epochs after it."""

from __future__ import annotations

import shutil
from pathlib import Path

RUN_FILE = "run.json"  # in the checkpoints folder: the recipe, data and arguments of the latest invocation
COMMANDS_FILE = "commands.txt"  # each invocation of this run, resumes included
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


def resume_hint(work_dir: Path) -> str:
    """Where a stopped run can go on from, in words."""
    try:
        latest = Path(resolve_checkpoint("latest", work_dir))
    except FileNotFoundError:
        return f"no checkpoint was complete yet in {work_dir / 'checkpoints'}: start the run again"
    return (
        f"the latest whole checkpoint is {latest} (epoch {checkpoint_number(latest) + 1}): continue with "
        "--resume-from-checkpoint latest"
    )


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


def refuse_earlier_run(work_dir: Path, resuming: bool) -> None:
    """A new run into a folder that holds checkpoints is refused, so two runs never mix."""
    if not resuming and any((work_dir / "checkpoints").glob("checkpoint_*")):
        raise ValueError(
            f"{work_dir} holds the checkpoints of an earlier run: continue it with --resume-from-checkpoint latest, "
            "or remove that folder to start again"
        )


def record_invocation(work_dir: Path, command: str, resuming: bool) -> None:
    """Append ``command`` to the run's commands (a fresh run starts the list): a resume's alone would not remake it."""
    with open(work_dir / COMMANDS_FILE, "a" if resuming else "w") as f:
        f.write(command + "\n")
