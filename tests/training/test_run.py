import argparse
import csv
import json
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from conftest import EXAMPLE, REPO, TINY_TRAINING, one_epoch, run, whole_outputs
from huggingface_hub import ModelCard
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from hemseg import Segmenter, UNet
from hemseg.data.dataset import load
from hemseg.evaluation.seeds import SEED_CANDIDATES
from hemseg.speed import cpu_cores
from hemseg.training.checkpoints import LAST_CHECKPOINT_FILE
from hemseg.training.loop import slice_noise, validate, with_slice_noise
from hemseg.training.losses import make_loss
from hemseg.training.recipe import Recipe
from hemseg.training.run import add_arguments, invocation, resolve_recipe
from hemseg.training.state import epoch_metrics
from hemseg.training.tensors import load_tensors


def test_train_with_push_offline_keeps_the_model_and_exits_nonzero(tiny_slices, tmp_path):
    out = tmp_path / "pushed"
    result = run(
        [
            "train.py",
            *one_epoch(tiny_slices, out),
            "--push-to-hub",
            "--hub-model-id",
            "someone/tiny",
        ],
        env={"HF_HUB_OFFLINE": "1"},
        check=False,
    )
    assert result.returncode == 1 and "push to someone/tiny failed" in result.stderr
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()


EXPECTED_FILES = {
    "model.safetensors",
    "config.json",
    "README.md",
    "metrics.json",
    "training_log.csv",
    "training_curves.png",
    "evaluation",
}


LABELS = ("vertebral_body", "hemangioma")


def read_log(folder):
    with open(folder / "training_log.csv") as f:
        return list(csv.DictReader(f))


def run_train(args, **options):
    return run(["train.py", *args], **options)


TWO_PROCESSES = {
    "launcher": (
        *("accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"),
        *("--mixed_precision", "no", "--dynamo_backend", "no"),
    ),
    "env": {"ACCELERATE_USE_CPU": "true"},
}


def test_one_process_writes_a_complete_model_folder(trained_model, tiny_slices):
    assert {p.name for p in trained_model.iterdir()} >= EXPECTED_FILES
    model = UNet.from_pretrained(trained_model)  # strict
    assert model.labels == ["vertebral_body", "hemangioma"] and model.preprocessing["size"] == [128, 128]
    log = read_log(trained_model)
    assert len(log) == 1 and log[0]["epoch"] == "1"
    for column in (
        "train_loss",
        "val_loss",
        "val_hemangioma_sagittal_dice",
        "train_vertebral_body_axial_recall",
        "val_vertebral_body_all_accuracy",
        "val_hemangioma_coronal_iou",
        "val_hemangioma_all_precision",
    ):
        assert column in log[0]
    metrics = json.loads((trained_model / "metrics.json").read_text())
    assert set(metrics["test"]) == {"vertebral_body", "hemangioma"}
    assert set(metrics["test"]["hemangioma"]) == {"axial", "coronal", "sagittal", "overall"}
    assert metrics["command"].startswith("accelerate launch --cpu train.py --set model.base_channels=4")
    assert metrics["commands"] == [metrics["command"]]
    card = ModelCard.load(trained_model / "README.md")
    names = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert "vertebral_body overall pooled recall" in names
    # Both Dice averages, each named for how it averages, with the values of metrics.json.
    sagittal = metrics["test"]["hemangioma"]["sagittal"]
    assert names["hemangioma sagittal dice (mean over slices with the label)"] == round(sagittal["dice_fg"], 4)
    assert names["hemangioma sagittal pooled dice"] == round(sagittal["pooled_dice"], 4)
    assert {r.dataset_split for r in card.data.eval_results} == {"test"}
    assert "simulated" in card.text and metrics["command"] in card.text
    # The whole recipe, as recorded, on the card: a file `--recipe` reads back.
    recipe = Recipe.from_dict(metrics["recipe"])
    assert recipe.model.base_channels == 4 and recipe.training.lr == 3e-3 and recipe.to_yaml() in card.text
    assert "augmentation on (noise sd up to 0.1)" in card.text  # the default, stated where people read it
    # Its limits describe its own data (synthetic volumes here), not the project's lumbar spine sources.
    assert "Trained only on the data named under Training data" in card.text and "healthy adults" not in card.text
    for split in ("val", "test"):  # a table per label for each held-out split
        for label in ("vertebral_body", "hemangioma"):
            assert f"### {label} ({split} split" in card.text


@pytest.mark.slow
def test_two_processes_train_and_validate_like_one(tmp_path, tiny_slices):
    out = tmp_path / "two"
    result = run_train([*one_epoch(tiny_slices, out), "--set", "validation.noise=0.1"], **TWO_PROCESSES)
    assert "training on 2 process(es)" in result.stdout and "MULTI_CPU" in result.stdout
    assert {p.name for p in out.iterdir()} >= EXPECTED_FILES
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]["hemangioma"]) == {"axial", "coronal", "sagittal", "overall"}
    # The command on the card starts what really ran: two processes (the batch is per process), not --cpu's one.
    assert metrics["command"].startswith("ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 ")
    card = ModelCard.load(out / "README.md")
    assert metrics["command"] in card.text
    assert "hemangioma sagittal pooled dice" in {r.metric_name for r in card.data.eval_results}
    logged = read_log(out)[-1]
    # The same weights validated in this single process give the numbers the two processes logged.
    model = UNet.from_pretrained(out)
    data = load_tensors(load(tiny_slices), model.labels, model.preprocessing, progress=False)
    val_idx = torch.from_numpy((data.splits == "val").nonzero()[0])
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(DataLoader(TensorDataset(val_idx), batch_size=8))
    val_loss, counts, planes = validate(model, loader, data, make_loss("bce", per_sample=True), accelerator)
    assert len(counts) == len(val_idx)  # nothing dropped, nothing counted twice
    recomputed = epoch_metrics("val", counts, planes, model.labels)
    for key, value in recomputed.items():
        assert float(logged[key]) == pytest.approx(value, abs=1e-6, nan_ok=True), key
    assert float(logged["val_loss"]) == pytest.approx(val_loss, rel=1e-4)
    # The noisy validation too: each slice's noise is its own, however the slices were shared out.
    noisy_loss, noisy_counts, _ = validate(model, loader, data, make_loss("bce", per_sample=True), accelerator, 0.1)
    for key, value in epoch_metrics("noisyval", noisy_counts, planes, model.labels).items():
        assert float(logged[key]) == pytest.approx(value, abs=1e-6, nan_ok=True), key
    assert float(logged["noisyval_loss"]) == pytest.approx(noisy_loss, rel=1e-4)
    assert noisy_loss != val_loss  # the noise reached the model (one epoch of a tiny network barely reacts)
    noise = slice_noise(torch.tensor([3, 5]), torch.Size([1, 64, 64]), 0.1)
    assert torch.equal(noise[1], slice_noise(torch.tensor([5]), torch.Size([1, 64, 64]), 0.1)[0])
    assert not torch.equal(noise[0], noise[1]) and float(noise.std()) == pytest.approx(0.1, rel=0.05)
    black = with_slice_noise(torch.zeros(2, 1, 64, 64), torch.tensor([3, 5]), 0.1)
    assert float(black.min()) == 0.0 and float(black.max()) <= 1.0  # clipped as the augmentation clips
    assert float(black.mean()) == pytest.approx(0.1 / (2 * torch.pi) ** 0.5, rel=0.1)  # E[max(0, N(0, sd))]


@pytest.mark.slow
def test_interrupted_run_resumes_at_the_right_epoch(tmp_path, tiny_slices):
    out = tmp_path / "resumed"
    args = [*TINY_TRAINING, "--data", str(tiny_slices), "--output-dir", str(out)]
    process = subprocess.Popen(
        [sys.executable, "train.py", *args, "--epochs", "50", "--set", "training.patience=100"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = tmp_path / "resumed-checkpoints" / "checkpoints" / "checkpoint_0" / "random_states_0.pkl"
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)  # no chance to clean up: as a power cut or an OOM kill
    process.wait()
    assert first.exists(), "the run never reached its first checkpoint"
    assert not out.exists()  # an interrupted run leaves no folder that looks finished
    logged = len(read_log(tmp_path / "resumed-checkpoints"))
    # The resume names neither the recipe nor its --set changes: the run recorded them.
    resume = ["--data", str(tiny_slices), "--output-dir", str(out), "--resume-from-checkpoint", "latest"]
    resumed = run_train([*resume, "--epochs", str(logged + 2)])
    done = int(re.search(r"resumed after epoch (\d+)", resumed.stdout + resumed.stderr).group(1))
    assert done in (logged, logged - 1)  # logged - 1 when the kill came while a checkpoint was being written
    assert [int(row["epoch"]) for row in read_log(out)] == list(range(1, logged + 3))
    config = json.loads((out / "config.json").read_text())  # the recipe's --set changes held on the resume
    assert UNet.from_pretrained(out).labels == ["vertebral_body", "hemangioma"]
    assert config["base_channels"] == 4 and config["depth"] == 3
    # The card gives both commands, in order: the resume's alone would not remake the run.
    first, then = json.loads((out / "metrics.json").read_text())["commands"]
    assert "--epochs 50" in first and "--resume-from-checkpoint" not in first
    assert then.endswith("--resume-from-checkpoint latest") and f"{first}\n{then}" in (out / "README.md").read_text()


@pytest.mark.slow
def test_a_resumed_two_process_run_trains_as_an_uninterrupted_one(tmp_path, tiny_slices):
    # Each process's shuffle order must come back with a resume, or the resumed epoch replays epoch 1's order.
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    data = [*TINY_TRAINING, "--data", str(tiny_slices)]
    run_train([*data, "--output-dir", str(whole), "--epochs", "2"], **TWO_PROCESSES)
    run_train([*data, "--output-dir", str(resumed), "--epochs", "1"], **TWO_PROCESSES)
    run_train(
        [*data, "--output-dir", str(resumed), "--epochs", "2", "--resume-from-checkpoint", "latest"], **TWO_PROCESSES
    )
    for uninterrupted, after_resume in zip(read_log(whole), read_log(resumed), strict=True):
        for key, value in uninterrupted.items():
            if key != "seconds":
                assert float(after_resume[key]) == pytest.approx(float(value), rel=1e-5, nan_ok=True), key


@pytest.mark.slow
def test_best_epoch_by_dice_fg_and_a_new_choice_on_resume(tmp_path, tiny_slices):
    out = tmp_path / "fg"
    args = [*TINY_TRAINING, "--data", str(tiny_slices), "--output-dir", str(out), "--set", "training.patience=10"]
    run_train([*args, "--epochs", "3", "--set", "validation.select_by=dice_fg"])
    log = read_log(out)
    scores = [(float(r["val_vertebral_body_all_dice_fg"]) + float(r["val_hemangioma_all_dice_fg"])) / 2 for r in log]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selected_by"] == "dice_fg" and metrics["best_epoch"] == scores.index(max(scores)) + 1
    assert metrics["best_val_score"] == pytest.approx(max(scores))
    # Resumed with the other score: the weights of the earlier epochs are gone, so the choice starts afresh.
    resume = [*args, "--resume-from-checkpoint", "latest"]
    resumed = run_train([*resume, "--epochs", "4", "--set", "validation.select_by=pooled_dice"])
    assert "choosing the best epoch by pooled_dice from epoch 4 on" in resumed.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selected_by"] == "pooled_dice" and metrics["best_epoch"] == 4 and metrics["epochs_run"] == 4
    # Switching back with no epoch left to choose from would call an epoch best that no score chose.
    refused = run_train([*resume, "--epochs", "4", "--set", "validation.select_by=dice_fg"], check=False)
    assert refused.returncode == 2 and "resume with --epochs above the 4 already done" in refused.stderr
    # The refused settings were not recorded: a resume that names none goes on with the run's own.
    recorded = json.loads((tmp_path / "fg-checkpoints" / "run.json").read_text())["recipe"]
    assert recorded["validation"]["select_by"] == "pooled_dice"
    # Chosen on clean and noisy validation slices: the log gains the noisy columns, empty for the earlier epochs.
    noisy = [*resume, "--epochs", "5", "--set", "validation.select_by=dice_fg_clean_and_noisy"]
    noisy += ["--set", "validation.noise=0.1", "--set", "augmentation.curve_p=0.3", "--set", "augmentation.blur_p=0.5"]
    assert "with noise 0.1: val loss" in run_train(noisy).stdout
    log = read_log(out)
    assert [row["noisyval_hemangioma_all_dice_fg"] == "" for row in log] == [True] * 4 + [False]
    last = log[-1]
    both = [float(last[f"{prefix}_{label}_all_dice_fg"]) for prefix in ("val", "noisyval") for label in LABELS]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selected_by"] == "dice_fg_clean_and_noisy" and metrics["best_epoch"] == 5
    assert metrics["best_val_score"] == pytest.approx(sum(both) / 4)
    card = (out / "README.md").read_text()
    assert (
        "random intensity curves on 0.3 of the samples, Gaussian blur of sd up to 2 grid pixels on 0.5 of the "
        "samples), validated also with noise sd 0.1" in card
    )
    # compare goes by the same score, among the epochs that logged it.
    compared = run(["-m", "hemseg", "lab", "compare", f"{out}-checkpoints"]).stdout.strip().splitlines()[-1]
    assert "| 5 of 5 |" in compared


@pytest.mark.slow
def test_checkpoints_every_n_epochs_and_after_each_new_best(tmp_path, tiny_slices):
    out = tmp_path / "sparse"
    args = [*TINY_TRAINING, "--data", str(tiny_slices), "--output-dir", str(out), "--set", "training.patience=10"]
    result = run_train([*args, "--epochs", "7", "--set", "checkpoints.every=3", "--lr", "1e-2"])
    saved = [int(e) for e in re.findall(r"^epoch (\d+):.*, checkpoint [\d.]+ s\)$", result.stdout, re.MULTILINE)]
    log = read_log(out)
    scores = [(float(r["val_vertebral_body_all_dice"]) + float(r["val_hemangioma_all_dice"])) / 2 for r in log]
    new_best = {e for e in range(1, 8) if scores[e - 1] > max(scores[: e - 1], default=-1.0)}
    assert len(saved) < 7, "every epoch was a new best: this run cannot show a skipped checkpoint"
    assert saved == sorted(new_best | {3, 6, 7})  # every third epoch, each new best and the last
    checkpoints = sorted(p.name for p in (tmp_path / "sparse-checkpoints" / "checkpoints").iterdir())
    assert checkpoints == [f"checkpoint_{e - 1}" for e in saved[-2:]]  # named by epoch; the newest two are kept
    # A checkpoint cut short (its last file missing) is skipped; its epoch is trained again and saved in its place.
    (tmp_path / "sparse-checkpoints" / "checkpoints" / "checkpoint_6" / "custom_checkpoint_1.pkl").unlink()
    resume = [*args, "--set", "checkpoints.every=3", "--resume-from-checkpoint", "latest"]
    resumed = run_train([*resume, "--epochs", "8"])
    assert f"resumed after epoch {saved[-2]}" in resumed.stdout
    assert [int(r["epoch"]) for r in read_log(out)] == list(range(1, 9))
    # A run that stopped early stays stopped when resumed; a fresh run into its folder would mix two runs.
    stopped = run_train([*resume, "--epochs", "9", "--set", "training.patience=0"])
    assert "stopped early after epoch 8" in stopped.stdout and len(read_log(out)) == 8
    fresh = run_train([*args, "--epochs", "1"], check=False)
    assert fresh.returncode == 2 and "continue it with --resume-from-checkpoint latest" in fresh.stderr


@pytest.mark.slow  # ten epochs, then a calibration of every seed
def test_seed_thresholds_are_chosen_on_validation_cases_and_scored_with(tmp_path, tiny_slices):
    out = tmp_path / "seeded"
    args = [*TINY_TRAINING, "--data", str(tiny_slices), "--output-dir", str(out), "--epochs", "10", "--lr", "1e-2"]
    # Seed 2: a run in which a seed threshold raises pooled Dice (with seeds 0 and 1 none does; CPU training is
    # deterministic, so the run is the same every time).
    run_train([*args, "--seed", "2", "--set", "validation.choose_seed_thresholds=[vertebral_body]"])
    metrics = json.loads((out / "metrics.json").read_text())
    table = [r for r in metrics["seed_threshold_table"] if r["label"] == "vertebral_body"]
    assert [r["seed"] for r in table] == [None, *SEED_CANDIDATES]
    best = max(table, key=lambda r: r["pooled_dice"])
    assert best["seed"] is not None, "no seed beat none: this run cannot show one being chosen"
    assert UNet.from_pretrained(out).seed_thresholds == {"vertebral_body": best["seed"]}  # only the label asked for
    assert metrics["seed_thresholds"] == {"vertebral_body": best["seed"]}
    # The model folder's own validation scores are those of the chosen row: the seed is used when it is scored.
    assert metrics["val"]["vertebral_body"]["overall"]["pooled_dice"] == pytest.approx(best["pooled_dice"])
    assert f"Seed thresholds (vertebral_body {best['seed']:g})" in (out / "README.md").read_text()


@pytest.mark.slow  # five refusals, each a train.py process of its own
def test_bad_data_is_explained(tmp_path, tiny_slices):
    result = run_train(["--data", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "o")], check=False)
    assert result.returncode == 2 and "nowhere" in result.stderr and "Traceback" not in result.stderr
    spleen = ["--data", str(tiny_slices), "--output-dir", str(tmp_path / "o"), "--set", "model.labels=[spleen]"]
    result = run_train(spleen, check=False)
    assert result.returncode == 2 and "spleen" in result.stderr
    # A set that would not fit in memory once preprocessed (here 17 GB a slice) is refused before it is filled.
    huge = ["--data", str(tiny_slices), "--output-dir", str(tmp_path / "o"), "--set", "model.image_size=65536"]
    result = run_train(huge, check=False)
    assert result.returncode == 2 and "of memory is available: train on a smaller model.image_size" in result.stderr
    # No validation slice shows a lesion: Dice_fg cannot choose an epoch (it was NaN every epoch, and the run
    # failed only after its last one).
    no_lesions = tmp_path / "no-val-lesions"
    shutil.copytree(tiny_slices, no_lesions)
    with open(no_lesions / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] == "val":
                mask = no_lesions / row["file"].replace(".png", "_hemangioma.png")
                Image.fromarray(np.zeros_like(np.asarray(Image.open(mask)))).save(mask)
    args = ["--data", str(no_lesions), "--output-dir", str(tmp_path / "o"), "--epochs", "1", *TINY_TRAINING]
    result = run_train([*args, "--set", "validation.select_by=dice_fg"], check=False)
    assert result.returncode == 2 and "no validation slice" in result.stderr and "['hemangioma']" in result.stderr


@pytest.mark.slow  # the launcher, three times
@pytest.mark.skipif(cpu_cores() < 2, reason="needs 2 CPU cores to leave one idle")
def test_cpu_training_launched_without_cpu_flag_says_cores_sit_idle(tmp_path):
    # The launcher's GPU default, OMP_NUM_THREADS=1, applies on a machine without a GPU too; --cpu sets one thread
    # per core. The runs stop at the missing data, after the note.
    launch = ("accelerate", "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no")
    args = ["train.py", "--data", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "o")]
    plain = run(args, launcher=(*launch, "--dynamo_backend", "no"), check=False)
    assert "no such folder" in plain.stderr  # the launcher exits with 1 when train.py exits with 2
    assert "note: training on the CPU with 1 thread(s)" in plain.stdout
    assert "accelerate launch --cpu" in plain.stdout
    on_cpu = run(args, launcher=(*launch, "--cpu", "--dynamo_backend", "no"), check=False)
    assert "no such folder" in on_cpu.stderr and "training on 1 process(es), device cpu" in on_cpu.stdout
    assert "note: training on the CPU" not in on_cpu.stdout and "started one process" not in on_cpu.stdout
    # --num_processes 2 with --cpu starts one process too (Accelerate's CPU launcher needs mpirun for more): say so.
    launch_two = (*launch[:2], "--cpu", "--num_processes", "2", *launch[4:], "--dynamo_backend", "no")
    two = run(args, launcher=launch_two, check=False)
    assert "training on 1 process(es)" in two.stdout
    assert "started one process, though more were asked for" in two.stdout and "--multi_gpu" in two.stdout
    assert "note: training on the CPU with" not in two.stdout  # whose fix, --cpu, was given already


@pytest.mark.slow  # two runs of train.py
def test_fine_tuning_starts_from_the_given_weights(trained_model, tiny_slices, tmp_path):
    out = tmp_path / "tuned"
    run_train(
        [
            *one_epoch(tiny_slices, out),
            "--lr",
            "0",
            "--init-from",
            str(trained_model),
            "--set",
            "augmentation.enabled=false",
            "--set",
            "training.crop_size=64",  # augmentation off still cuts the windows
            "--set",
            "training.channels_last=true",
        ]
    )
    original, tuned = UNet.from_pretrained(trained_model), UNet.from_pretrained(out)
    for key, value in original.state_dict().items():
        if "running" not in key and "num_batches" not in key:  # lr 0: only BatchNorm statistics may move
            assert torch.equal(value, tuned.state_dict()[key]), key
    wrong = run_train(
        [
            "--set",
            "model.base_channels=8",
            "--set",
            "model.depth=3",
            "--epochs",
            "1",
            "--data",
            str(tiny_slices),
            "--output-dir",
            str(tmp_path / "wrong"),
            "--init-from",
            str(trained_model),
        ],
        check=False,
    )
    assert wrong.returncode == 2 and "do not fit" in wrong.stderr
    swapped = [*one_epoch(tiny_slices, tmp_path / "swapped"), "--init-from", str(trained_model)]
    refused = run_train([*swapped, "--set", "model.labels=[hemangioma,vertebral_body]"], check=False)
    assert refused.returncode == 2 and "--set 'model.labels=[vertebral_body,hemangioma]'" in refused.stderr


def test_the_papers_binary_setup_with_the_dice_loss(tmp_path, tiny_slices):
    out = tmp_path / "binary"
    run_train([*one_epoch(tiny_slices, out), "--set", "model.labels=[hemangioma]", "--set", "training.loss=bce+dice"])
    model = UNet.from_pretrained(out)
    assert model.labels == ["hemangioma"] and model(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"hemangioma"} and not any("vertebral_body" in key for key in read_log(out)[0])
    assert "val_hemangioma_all_dice" in read_log(out)[0]
    assert "loss bce+dice, batch 8 per process" in (out / "README.md").read_text()  # the training note


def arguments(*words: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--data", "d", "--output-dir", "o", *words])


def test_the_recipe_comes_from_the_file_or_the_resumed_run_then_set_then_the_flags(tmp_path):
    assert resolve_recipe(arguments(), tmp_path) == Recipe()
    bundled = REPO / "configs" / "bundled-v1.yaml"
    recipe = resolve_recipe(arguments("--recipe", str(bundled), "--set", "training.lr=1", "--lr", "0.5"), tmp_path)
    assert recipe.model.base_channels == 16 and recipe.training.lr == 0.5  # the flag after --set
    recorded = Recipe().with_overrides(["model.depth=3", "training.epochs=4"])
    (tmp_path / "run.json").write_text(json.dumps({"recipe": recorded.to_dict()}))
    resumed = resolve_recipe(arguments("--resume-from-checkpoint", "latest", "--epochs", "6"), tmp_path)
    assert resumed.model.depth == 3 and resumed.training.epochs == 6  # the run's own recipe, one flag changed
    assert resolve_recipe(arguments("--epochs", "6"), tmp_path).model.depth == 4  # a fresh run: not the old one's
    replaced = resolve_recipe(arguments("--resume-from-checkpoint", "latest", "--recipe", str(bundled)), tmp_path)
    assert replaced.model.base_channels == 16 and replaced.model.depth == 4
    with pytest.raises(ValueError, match="training.batch_size must be at least 1"):
        resolve_recipe(arguments("--batch-size", "0"), tmp_path)  # the flags are checked like the recipe
    (tmp_path / "run.json").write_text(json.dumps({"labels": "vertebral_body", "base_channels": 16}))
    with pytest.raises(ValueError, match="from a run made before recipes: resume it with --recipe"):
        resolve_recipe(arguments("--resume-from-checkpoint", "latest"), tmp_path)


def test_an_invocation_is_recorded_in_one_order_whatever_order_it_was_typed_in():
    typed = arguments("--lr", "3e-4", "--set", "model.depth=3", "--recipe", "r.yaml", "--push-to-hub")
    typed.hub_model_id, typed.private = "me/model", True
    assert invocation(typed) == [
        *("--recipe", "r.yaml", "--set", "model.depth=3", "--data", "d", "--output-dir", "o", "--lr", "0.0003"),
        *("--push-to-hub", "--hub-model-id", "me/model", "--private"),
    ]


def test_a_physical_recipe_trains_on_whole_slices_and_stops_at_its_time_limit(tmp_path, tiny_slices):
    out = tmp_path / "physical"
    args = ["--recipe", "configs/physical.yaml", *TINY_TRAINING, "--set", "training.crop_size=48", "--epochs", "5"]
    result = run_train(
        [*args, "--data", str(tiny_slices), "--output-dir", str(out), "--set", "training.time_limit_min=0.001"]
    )
    assert "time limit: 0.001 minutes passed after epoch 1" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped_by"] == "time limit" and metrics["epochs_run"] == 1
    assert "stopped by time limit" in (out / "README.md").read_text()
    config = json.loads((out / "config.json").read_text())
    assert config["preprocessing"]["fit"] == "spacing" and config["preprocessing"]["spacing_mm"] == 1.25
    image = np.asarray(Image.open(EXAMPLE))
    prediction = Segmenter.load(out).predict(image, (1.0, 1.0))
    assert prediction.masks["vertebral_body"].shape == image.shape and prediction.spacing_source == "given"


def test_fine_tuning_across_fits_is_refused(trained_model, tiny_slices, tmp_path):
    # The tiny model fits slices to a square grid; the physical recipe would feed its weights another scale.
    args = [
        "--recipe",
        "configs/physical.yaml",
        *TINY_TRAINING,
        "--data",
        str(tiny_slices),
        "--output-dir",
        str(tmp_path),
    ]
    refused = run_train([*args, "--init-from", str(trained_model)], check=False)
    assert refused.returncode == 2
    assert "was trained on slices fitted by 'pad-to-square', but the recipe fits them by 'spacing'" in refused.stderr


@pytest.mark.slow
def test_a_full_disk_stops_training_in_one_line_and_leaves_only_whole_checkpoints(tmp_path, tiny_slices, small_disk):
    out = small_disk("800k") / "run"
    args = [*TINY_TRAINING, "--data", str(tiny_slices), "--output-dir", str(out), "--epochs", "40"]
    result = run_train([*args, "--set", "training.patience=100"], check=False)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"no space left on device writing {out}" in errors[0], result.stderr
    hints = ("the latest whole checkpoint is", "no checkpoint was complete yet", "the best weights are kept in")
    assert any(hint in errors[0] for hint in hints)
    checkpoints = list((tmp_path / "disk0" / "run-checkpoints" / "checkpoints").glob("checkpoint_*"))
    assert all((folder / LAST_CHECKPOINT_FILE).exists() for folder in checkpoints)  # none cut short
    whole_outputs(out.parent)
    assert UNet.from_pretrained(out.parent / "run-checkpoints" / "best").labels == ["vertebral_body", "hemangioma"]


@pytest.mark.slow
def test_ctrl_c_stops_training_with_where_to_go_on(tmp_path, tiny_slices):
    out = tmp_path / "run"
    args = [*TINY_TRAINING, "--data", str(tiny_slices), "--output-dir", str(out), "--epochs", "200"]
    process = subprocess.Popen(
        [sys.executable, "train.py", *args, "--set", "training.patience=1000"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = tmp_path / "run-checkpoints" / "checkpoints" / "checkpoint_0" / LAST_CHECKPOINT_FILE
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert re.search(r"interrupted: the latest whole checkpoint is .*checkpoint_\d+ \(epoch \d+\): continue", stderr)
    checkpoints = list((tmp_path / "run-checkpoints" / "checkpoints").glob("checkpoint_*"))
    assert checkpoints and all((folder / LAST_CHECKPOINT_FILE).exists() for folder in checkpoints)
    whole_outputs(tmp_path)
    assert not out.exists()
