"""``bench data show``: a PNG grid of example images per class, masks outlined.

One row per class, ``per_class`` examples per row taken from one split, every
mask the dataset carries outlined, one colour per mask in the dataset's order
(:data:`MASK_COLOURS`).
Uses matplotlib's object API with the Agg canvas (no pyplot global state, no
display needed) and writes the file atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from bench.data import DatasetSplits

#: Outline colours of a dataset's masks, by the order of ``DatasetSplits.mask_names``
#: (cycled when a dataset carries more masks than colours).
MASK_COLOURS: tuple[str, ...] = ("#ff3b30", "#00c8ff", "#ffcc00", "#34c759", "#af52de", "#ff9500")


def mask_colours(names: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Mask name -> outline colour, by position."""
    return {name: MASK_COLOURS[i % len(MASK_COLOURS)] for i, name in enumerate(names)}


def _pick(labels: np.ndarray, class_index: int, per_class: int) -> np.ndarray:
    """The first ``per_class`` positions of one class (deterministic)."""
    return np.flatnonzero(labels == class_index)[:per_class]


def write_dataset_grid(
    splits: DatasetSplits,
    out: str | Path,
    *,
    per_class: int = 4,
    split: str = "train",
) -> Path:
    """Write a PNG grid of ``per_class`` examples per class from ``split``; return its path.

    Each mask the dataset carries is outlined in its colour (:func:`mask_colours`,
    named in the legend); the title names the dataset, split, image size and fingerprint, each row its class
    and how many images of it the split holds.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from bench.pipeline.store import atomic_write_bytes

    available = splits.splits()
    if split not in available:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(available)}")
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ConfigError(f"per_class must be an integer >= 1, got {per_class!r}")
    part = available[split]
    if len(part) == 0:
        raise ConfigError(f"split {split!r} of dataset {splits.name!r} is empty; nothing to show")

    n_rows, n_cols = splits.num_classes, per_class
    h, w = part.image_shape
    cell = 2.0
    fig = Figure(figsize=(cell * n_cols + 1.6, cell * h / w * n_rows + 1.2), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(n_rows, n_cols, left=1.4 / (cell * n_cols + 1.6), right=0.99,
                            top=1 - 0.8 / (cell * n_rows + 1.2), bottom=0.3 / (cell * n_rows + 1.2),
                            wspace=0.04, hspace=0.08)
    colours = mask_colours(splits.mask_names)
    shown: set[str] = set()
    for row, class_name in enumerate(splits.class_names):
        picks = _pick(part.labels, row, per_class)
        total = int(np.sum(part.labels == row))
        for col in range(n_cols):
            ax = fig.add_subplot(grid[row, col])
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col == 0:
                ax.set_ylabel(f"{class_name}\n(n={total})", fontsize=10, rotation=0,
                              ha="right", va="center", labelpad=8)
            if col >= len(picks):
                ax.text(0.5, 0.5, "no image" if total == 0 else "", ha="center", va="center",
                        fontsize=8, color="0.5", transform=ax.transAxes)
                ax.set_facecolor("0.95")
                continue
            i = int(picks[col])
            ax.imshow(part.images[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            for mask_name, m in part.masks.items():
                if m[i].any():
                    ax.contour(m[i].astype(np.float32), levels=[0.5],
                               colors=[colours[mask_name]], linewidths=0.8)
                    shown.add(mask_name)
            label = str(part.ids[i]).rsplit("/", 1)[-1]
            if len(label) > 34:
                label = "…" + label[-33:]
            ax.set_title(label, fontsize=6, color="0.3", pad=2)

    handles = [
        Line2D([0], [0], color=colour, lw=1.5, label=f"{mask_name} mask")
        for mask_name, colour in colours.items()
        if mask_name in shown
    ]
    if not handles:
        handles.append(Line2D([0], [0], color="none", label="no masks in this dataset"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(
        f"{splits.name} — {split} split, {h}x{w} px, fingerprint {splits.fingerprint}",
        fontsize=10,
    )

    path = Path(out)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return path
