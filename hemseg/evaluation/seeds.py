"""Seed thresholds: a predicted component is kept only where its probability reaches the seed somewhere
(``hemseg.inference.cut``). ``hemseg lab calibrate`` shows what each seed does on a split; the recipe's
``validation.choose_seed_thresholds`` picks one per label on the validation split, as it picks the best epoch.

The rule: the seed with the highest pooled Dice (pixel counts summed over all slices, so it counts false alarms on
slices without the label as well as misses), ``None`` (no seed) included; on a tie the lower seed.
"""

from __future__ import annotations

import math

import datasets
import numpy as np

from hemseg.data.dataset import EXTENT_LABELS, labelled_rows
from hemseg.evaluation.evaluate import Transform, predicted_batches
from hemseg.inference.segmenter import Segmenter, cut
from hemseg.metrics import overlap_metrics, summarize

SEED_CANDIDATES = (0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999)
COLUMNS = ("dice_fg", "pooled_dice", "slice_false_alarm_rate", "lesion_precision", "lesion_recall", "lesion_f1")
# SSIM, HD95 and NSD are not needed to choose a seed and are the slow part of slice_metrics.
UNSCORED = dict.fromkeys(("ssim", "hd95", "nsd"), math.nan)


def seed_table(
    segmenter: Segmenter,
    dataset: datasets.Dataset,
    split: str | None = "val",
    candidates: tuple[float, ...] = SEED_CANDIDATES,
    batch_size: int = 16,
    progress: bool = True,
    transform: Transform | None = None,
    desc: str = "calibrating",
) -> list[dict]:
    """One row per label and seed (``None``: the plain threshold) with the ``COLUMNS`` scores over the split's
    slices at their own resolution, as ``hemseg evaluate`` scores them (vertebral bodies within their labelled
    rows); ``transform`` as in ``predicted_batches``: each slice is then scored on the region its view covers."""
    labels, batches = predicted_batches(segmenter, dataset, split, batch_size, desc, progress, transform)
    seeds = (None, *sorted(candidates))
    records: dict[tuple[str, float | None], list[dict]] = {(label, seed): [] for label in labels for seed in seeds}
    for _, batch, probs, regions in batches:
        for i, (p, region) in enumerate(zip(probs, regions, strict=True)):
            height = batch[labels[0]][i].shape[0]
            for label in labels:
                probability, truth = p[segmenter.labels.index(label)], batch[label][i][region] > 0
                labelled = np.zeros(height, bool)
                labelled[labelled_rows(batch, i) if label in EXTENT_LABELS else slice(None)] = True
                rows = labelled[region[0]]  # the labelled rows among those of the region
                for seed in seeds:
                    pred = cut(probability, segmenter.model.threshold, seed)
                    records[label, seed].append(overlap_metrics(pred[rows], truth[rows]) | UNSCORED)
    table = []
    for (label, seed), recs in records.items():
        overall = summarize(recs, by=None)["overall"]
        table.append({"label": label, "seed": seed, **{key: overall[key] for key in COLUMNS}})
    return table


def choose_seeds(table: list[dict]) -> dict[str, float]:
    """Per label, the seed of highest pooled Dice (ties: the lower seed); labels where no seed beats none are left
    out."""
    chosen: dict[str, float] = {}
    for label in dict.fromkeys(row["label"] for row in table):
        rows = sorted((row for row in table if row["label"] == label), key=lambda row: row["seed"] or 0.0)
        best = rows[0]  # no seed
        for row in rows[1:]:
            if row["pooled_dice"] > best["pooled_dice"]:  # strictly: a tie keeps the lower seed
                best = row
        if best["seed"] is not None:
            chosen[label] = best["seed"]
    return chosen
