"""A grid of sample slices from a slice folder with the label outlines drawn on them."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from hemseg.data.volumes import PLANES

COLOURS = {"vertebral_body": "#00d5ff", "hemangioma": "#ff3b30"}


def draw_preview(folder: str | Path, out: str | Path, per_plane: int = 5) -> Path:
    """Save a PNG with up to ``per_plane`` lesion slices per plane, outlines per label; return its path."""
    folder, out = Path(folder), Path(out)
    with open(folder / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    fig, axes = plt.subplots(len(PLANES), per_plane, figsize=(2.6 * per_plane, 3.2 * len(PLANES)), squeeze=False)
    for ax_row, plane in zip(axes, PLANES, strict=True):
        chosen = [r for r in rows if r["plane"] == plane and int(r["hemangioma_px"]) > 0]
        chosen = [chosen[i] for i in np.linspace(0, len(chosen) - 1, min(per_plane, len(chosen))).astype(int)]
        for ax in ax_row:
            ax.axis("off")
        for ax, row in zip(ax_row, chosen, strict=False):
            stem = row["file"].removesuffix(".png")
            ax.imshow(np.asarray(Image.open(folder / row["file"])), cmap="gray", interpolation="nearest")
            for label, colour in COLOURS.items():
                mask = np.asarray(Image.open(folder / f"{stem}_{label}.png")) > 0
                if mask.any():
                    ax.contour(mask, levels=[0.5], colors=colour, linewidths=0.8)
            ax.set_title(f"{row['case']} {plane} {row['index']}", fontsize=8)
    handles = [plt.Line2D([], [], color=c, label=label.replace("_", " ")) for label, c in COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False)
    fig.suptitle("Real vertebral-body masks (cyan) and simulated hemangiomas (red)", fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return out
