"""The end of a run: the best weights evaluated on the held-out cases, and the model folder with its card."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import datasets
import torch

from hemseg.evaluation.evaluate import evaluate_dataset, summarize_by_label, write_report
from hemseg.evaluation.figures import training_curves
from hemseg.evaluation.seeds import choose_seeds, seed_table
from hemseg.files import atomic_folder
from hemseg.inference.segmenter import Segmenter
from hemseg.metrics import json_ready
from hemseg.model import UNet
from hemseg.training.card import data_description, write_model_card
from hemseg.training.recipe import Recipe
from hemseg.training.state import TrainingState


def stop_reason(recipe: Recipe, state: TrainingState) -> str:
    """Why the run ended: early stopping (validation stalled), its time limit, or its last epoch."""
    if state.stalled(recipe.training.patience):
        return "early stopping"
    if state.epoch < recipe.training.epochs and recipe.training.time_limit_min is not None:
        return "time limit"
    return "last epoch"


def finish(
    recipe: Recipe,
    data: str,
    dataset: datasets.Dataset,
    log: list[dict],
    work_dir: Path,
    output_dir: Path,
    state: TrainingState,
    commands: list[str],
    device: torch.device,
) -> None:
    """Evaluate the best weights and assemble the model folder; renamed into place only when complete.

    ``metrics.json`` records what the run was (recipe, data, commands) beside its scores; the card is written from it.
    """
    started = time.perf_counter()
    labels = list(recipe.model.labels)
    model = UNet.from_pretrained(work_dir / "best")
    segmenter, seed_rows = Segmenter(model, str(output_dir), device), []
    if recipe.validation.choose_seed_thresholds:  # chosen on the validation cases, like the best epoch
        seed_rows = seed_table(segmenter, dataset, "val", progress=False)
        chosen = choose_seeds(seed_rows)
        model.set_seed_thresholds(
            {label: chosen[label] for label in recipe.validation.choose_seed_thresholds if label in chosen}
        )
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
                note = f"Best epoch {state.best_epoch}; data {data}, split {split}."
                title = f"{output_dir.name}: {split} split"
                metrics[split] = write_report(records, tmp / "evaluation", title, note, dataset, segmenter)
            else:
                metrics[split] = summarize_by_label(records)
        lrs = [float(row["lr"]) for row in log] or [recipe.training.lr]
        metrics.update(
            best_epoch=state.best_epoch,
            epochs_run=state.epoch,
            stopped_by=stop_reason(recipe, state),
            selected_by=state.select_by,
            best_val_score=state.best_score,
            seed_thresholds=model.seed_thresholds,
            seed_threshold_table=seed_rows,
            command=commands[-1],
            commands=commands,
            data=str(data),
            data_info=data_description(data),
            labels=labels,
            lr=[lrs[0], lrs[-1]],
            recipe=recipe.to_dict(),
        )
        recorded = json_ready(metrics)
        (tmp / "metrics.json").write_text(json.dumps(recorded, indent=1))
        write_model_card(tmp, recorded, model_name=output_dir.name)  # from what metrics.json holds
    print(f"model folder written: {output_dir} (evaluated and written in {time.perf_counter() - started:.0f} s)")
