"""What the launcher gave a run: notes when CPU cores sit idle, and the command that remakes the run."""

from __future__ import annotations

import os
import shlex

import torch
from accelerate import Accelerator
from accelerate.utils import DynamoBackend

from hemseg.speed import cpu_cores


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


def command_line(argv: list[str], launcher: str, program: str = "train.py") -> str:
    """The whole command of a run: ``launcher`` (``launch_command``), then the program (``train.py``, or ``-m hemseg
    train``, which an installed hemseg runs too) and its arguments."""
    return f"{launcher} {program} {shlex.join(argv)}"
