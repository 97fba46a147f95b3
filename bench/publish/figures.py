"""Figures of the report (matplotlib, Agg backend, PNG).

Every function takes plain data (NumPy arrays, mappings of labels to arrays),
writes one PNG atomically and returns its path; none reads run folders (that is
:mod:`bench.publish.report`'s job), so they are easy to reuse and to test.

- :func:`plot_curves`: mean perturbation curve f(x^(k)) per model x explainer with a
  95% band (the study's "AOPC graphs").
- :func:`plot_overlays`: heatmaps super-imposed on the same test images at several
  alpha levels, one row per model x explainer (the study's super-imposed figure).
- :func:`plot_per_class`: AOPC per class with 95% confidence intervals.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.pipeline.store import atomic_write_bytes

DPI = 110


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def mpl_text(text: Any) -> str:
    """A plugin-supplied label made safe for matplotlib (no mathtext from a stray ``$``)."""
    return str(text).replace("$", r"\$").replace("\n", " ")


def _save(fig: Any, path: str | Path) -> Path:
    plt = _plt()
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def mean_band(values: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column: mean and a t-interval of the mean, (mean, low, high); n = 1 gives a zero-width band."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    n = v.shape[0]
    mean = v.mean(axis=0)
    if n < 2:
        return mean, mean.copy(), mean.copy()
    sem = v.std(axis=0, ddof=1) / math.sqrt(n)
    half = stats.t.ppf(0.5 + confidence / 2, df=n - 1) * sem
    return mean, mean - half, mean + half


def _grid_of(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(max_cols, max(1, n))
    return math.ceil(n / cols), cols


def plot_curves(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    path: str | Path,
    *,
    title: str = "",
    drop: bool = False,
    confidence: float = 0.95,
    ylabel: str | None = None,
) -> Path:
    """Mean perturbation curves with a ``confidence`` band, one panel per outer key.

    ``curves``: ``{panel (e.g. model): {line (e.g. explainer): array (N, L+1)}}``, row i
    = f(x^(k)), k = 0..L, for image i. With ``drop`` the y axis is f(x^(0)) - f(x^(k)).
    The band is the t-interval of the mean at each k. The legend shows each line's AOPC.
    """
    plt = _plt()
    panels = [p for p in curves if len(curves[p])]
    if not panels:
        raise ValueError("plot_curves: no curves to plot")
    nrows, ncols = _grid_of(len(panels))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.9 * nrows), squeeze=False, sharey=True)
    colors = plt.get_cmap("tab10")
    all_lines = sorted({line for p in panels for line in curves[p]}, key=str)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for line, c in curves[panel].items():
            c = np.asarray(c, dtype=np.float64)
            if c.ndim != 2 or c.shape[0] == 0:
                continue
            y = c[:, :1] - c if drop else c
            mean, lo, hi = mean_band(y, confidence)
            k = np.arange(c.shape[1])
            L = c.shape[1] - 1
            aopc = float(np.mean(np.sum(c[:, :1] - c[:, 1:], axis=1) / (L + 1)))
            color = colors(all_lines.index(line) % 10)
            ax.plot(k, mean, color=color, lw=1.8, label=f"{mpl_text(line)} (AOPC {aopc:.3g}, n={c.shape[0]})")
            ax.fill_between(k, lo, hi, color=color, alpha=0.2, lw=0)
        ax.set_title(mpl_text(panel), fontsize=10)
        ax.set_xlabel("k (regions perturbed)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel or ("f(x$^{(0)}$) - f(x$^{(k)}$)" if drop else "f(x$^{(k)}$)  (target probability)"))
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(mpl_text(title) + f"  (mean, {confidence:.0%} band)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def upsample_bilinear(heatmaps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Heatmaps (N, h, w) resized bilinearly to (N, H, W) (pixel centres aligned, float32)."""
    from scipy import ndimage

    h = np.asarray(heatmaps, dtype=np.float32)
    if h.ndim == 2:
        h = h[None]
    H, W = size
    if h.shape[1:] == (H, W):
        return h.copy()
    out = np.empty((h.shape[0], H, W), np.float32)
    # half-pixel centres, as tf.image.resize(method="bilinear") and PIL do
    ys = (np.arange(H) + 0.5) * h.shape[1] / H - 0.5
    xs = (np.arange(W) + 0.5) * h.shape[2] / W - 0.5
    yy, xx = np.meshgrid(np.clip(ys, 0, h.shape[1] - 1), np.clip(xs, 0, h.shape[2] - 1), indexing="ij")
    for i in range(h.shape[0]):
        out[i] = ndimage.map_coordinates(h[i], [yy, xx], order=1, mode="nearest")
    return out


def normalise(heatmap: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a constant map becomes zeros; NaN -> 0."""
    h = np.nan_to_num(np.asarray(heatmap, dtype=np.float32))
    lo, hi = float(h.min()), float(h.max())
    if hi - lo <= 1e-12:
        return np.zeros_like(h)
    return (h - lo) / (hi - lo)


def _as_display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    img = np.asarray(image)
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    img = img.astype(np.float32)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3 and np.allclose(img[..., 0], img[..., -1]) and np.allclose(img[..., 0], img[..., 1]):
        img = img[..., 0]
    return np.clip(img, 0, 1), ("gray" if img.ndim == 2 else None)


def plot_overlays(
    images: np.ndarray,
    heatmaps: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    alphas: Sequence[float] = (0.3, 0.5, 0.7),
    image_titles: Sequence[str] | None = None,
    title: str = "",
    cmap: str = "jet",
) -> Path:
    """Heatmaps super-imposed on the same images at several alpha levels.

    ``images``: (M, H, W) or (M, H, W, 3), uint8 or float in [0, 1]. ``heatmaps``:
    ``{row label (e.g. "model / explainer"): (M, h, w)}`` for the same M images, any
    h, w: upsampled bilinearly to (H, W) and min-max normalised per image. Layout:
    the first row shows the images; then one row per label; per image one column
    with the heatmap alone and one per alpha.
    """
    plt = _plt()
    imgs = np.asarray(images)
    m = imgs.shape[0]
    if m == 0 or not heatmaps:
        raise ValueError("plot_overlays: need at least one image and one heatmap set")
    H, W = imgs.shape[1:3]
    for label, hm in heatmaps.items():
        if np.asarray(hm).shape[0] != m:
            raise ValueError(f"plot_overlays: heatmaps {label!r} have {np.asarray(hm).shape[0]} maps, expected {m}")
    per_image = 1 + len(alphas)
    # One mosaic image drawn in a single axes: far faster than one axes per tile
    # (48 axes took seconds) and pixel-exact. Tiles are 96-192 px high for display.
    tile_h = int(min(max(H, 96), 192))
    tile_w = max(1, round(W * tile_h / H))
    gap, group_gap, header = 4, 16, 16  # header: room for the column titles under the image row
    n_rows = 1 + len(heatmaps)

    def row_y(r: int) -> int:
        return r * (tile_h + gap) + (header if r >= 1 else 0)

    cm = plt.get_cmap(cmap)

    def display_rgb(img: np.ndarray) -> np.ndarray:
        arr, _ = _as_display(img)
        if arr.ndim == 2:
            arr = arr[..., None].repeat(3, axis=-1)
        resized = upsample_bilinear(np.moveaxis(arr, -1, 0), (tile_h, tile_w))
        return np.clip(np.moveaxis(resized, 0, -1), 0, 1)

    group_w = per_image * tile_w + (per_image - 1) * gap
    mosaic_w = m * group_w + (m - 1) * group_gap
    mosaic_h = row_y(n_rows - 1) + tile_h
    mosaic = np.ones((mosaic_h, mosaic_w, 3), np.float32)

    def put(r: int, c: int, tile: np.ndarray) -> tuple[float, float]:
        j, k = divmod(c, per_image)
        x0 = j * (group_w + group_gap) + k * (tile_w + gap)
        y0 = row_y(r)
        mosaic[y0 : y0 + tile_h, x0 : x0 + tile_w] = tile
        return x0 + tile_w / 2, y0

    bases = [display_rgb(imgs[j]) for j in range(m)]
    col_titles: list[tuple[float, float, str]] = []
    for j in range(m):
        x, y = put(0, j * per_image, bases[j])
        name = image_titles[j] if image_titles is not None else f"image {j}"
        col_titles.append((x, y, "\n".join(mpl_text(part) for part in str(name).splitlines())))
    for i, (_label, hm) in enumerate(heatmaps.items(), start=1):
        up = upsample_bilinear(np.asarray(hm, np.float32), (H, W))
        for j in range(m):
            h = normalise(upsample_bilinear(up[j][None], (tile_h, tile_w))[0])
            colored = cm(h)[..., :3].astype(np.float32)
            x, y = put(i, j * per_image, colored)
            if i == 1:
                col_titles.append((x, y, "heatmap"))
            for a, alpha in enumerate(alphas, start=1):
                x, y = put(i, j * per_image + a, (1 - alpha) * bases[j] + alpha * colored)
                if i == 1:
                    col_titles.append((x, y, f"alpha {alpha:g}"))

    dpi = DPI
    label_in = 2.2
    fig_w = mosaic_w / dpi + label_in + 0.7
    fig_h = mosaic_h / dpi + (0.75 if title else 0.45)
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    ax = fig.add_axes((label_in / fig_w, 0.02, (mosaic_w / dpi) / fig_w, (mosaic_h / dpi) / fig_h))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for x, y, text in col_titles:
        ax.text(x, y - 3, text, ha="center", va="bottom", fontsize=7)
    ax.text(-8, tile_h / 2, "image", ha="right", va="center", fontsize=8)
    for i, label in enumerate(heatmaps, start=1):
        ax.text(-8, row_y(i) + tile_h / 2, mpl_text(label), ha="right", va="center", fontsize=8)
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cax = fig.add_axes(((label_in + mosaic_w / dpi + 0.15) / fig_w, 0.1, 0.12 / fig_w, 0.6))
    cbar = fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=cm), cax=cax)
    cbar.set_label("relevance (min-max per map)", fontsize=7)
    cbar.ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(mpl_text(title), fontsize=10, y=0.995)
    return _save(fig, path)


def plot_per_class(
    stats: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]],
    path: str | Path,
    *,
    title: str = "",
    ylabel: str = "AOPC (MoRF)",
) -> Path:
    """Grouped bars of a per-class score with CI whiskers, one panel per outer key.

    ``stats``: ``{panel (e.g. model): {bar group (explainer): {class: (mean, low, high, n)}}}``.
    Each bar is labelled with its n; a class with n = 0 (no image of it was scored) shows
    "n=0" and no bar.
    """
    plt = _plt()
    panels = [p for p in stats if len(stats[p])]
    if not panels:
        raise ValueError("plot_per_class: nothing to plot")
    nrows, ncols = _grid_of(len(panels), max_cols=2)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 3.8 * nrows), squeeze=False, sharey=True)
    colors = plt.get_cmap("tab10")
    all_groups = sorted({g for p in panels for g in stats[p]}, key=str)
    span = [0.0]
    for ax, panel in zip(axes.flat, panels, strict=False):
        groups = list(stats[panel])
        classes: list[str] = []
        for g in groups:
            for c in stats[panel][g]:
                if c not in classes:
                    classes.append(c)
        width = 0.8 / max(1, len(groups))
        x = np.arange(len(classes))
        for gi, g in enumerate(groups):
            vals = [stats[panel][g].get(c, (np.nan, np.nan, np.nan, 0)) for c in classes]
            mean = np.array([v[0] for v in vals], float)
            lo = np.array([v[1] for v in vals], float)
            hi = np.array([v[2] for v in vals], float)
            err = np.vstack([np.clip(mean - lo, 0, None), np.clip(hi - mean, 0, None)])
            err[:, ~np.isfinite(mean)] = np.nan
            span += [float(v) for v in np.concatenate([mean, lo, hi]) if np.isfinite(v)]
            pos = x - 0.4 + width * (gi + 0.5)
            ax.bar(pos, mean, width, yerr=err, capsize=3,
                   color=colors(all_groups.index(g) % 10), label=mpl_text(g), alpha=0.9,
                   error_kw={"elinewidth": 1})
            for p_, v in zip(pos, vals, strict=True):
                n = int(v[3])
                top = v[2] if n and np.isfinite(v[2]) else (v[0] if n and np.isfinite(v[0]) else 0.0)
                ax.annotate(f"n={n}", (p_, max(top, 0.0)), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=6, color="#57606a" if n else "#cf222e")
        ax.set_xlim(-0.5, len(classes) - 0.5)  # empty classes (NaN bars) keep their slot
        ax.set_xticks(x)
        ax.set_xticklabels([mpl_text(c) for c in classes], fontsize=8, rotation=15 if len(classes) > 3 else 0)
        ax.set_title(mpl_text(panel), fontsize=10)
        ax.axhline(0, color="black", lw=0.6)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    lo_y, hi_y = min(span), max(span)
    pad = 0.12 * ((hi_y - lo_y) or 1.0)
    axes.flat[0].set_ylim(lo_y - (pad / 3 if lo_y < 0 else 0), hi_y + pad)  # shared y; room for n labels
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(mpl_text(title) + "  (mean, 95% CI)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
