"""Figures of the report (matplotlib's object API on the Agg canvas; palette PNG, or WebP for photos).

Every ``plot_*`` function takes plain data (NumPy arrays, mappings of labels to arrays,
DataFrames), writes one image atomically (:func:`save_figure`: a palette PNG for plots, the
path's suffix picks WebP or JPEG for the photographic overlays) and returns its path; none reads run folders
(that is :mod:`bench.publish.report`'s job), so they are easy to reuse and to test.
Each has a ``*_figure`` twin that returns the :class:`matplotlib.figure.Figure`
instead of writing it (tests inspect its artists; callers may restyle it). No pyplot
global state is touched, so figures never leak between calls or threads.

- :func:`plot_curves`: mean perturbation curve f(x^(k)) per model x explainer with a
  band (the study's "AOPC graphs"); the best methods highlighted, the others thin grey,
  controls as dashed reference lines, the legend outside the axes.
- :func:`plot_overlays`: every explainer (columns, controls marked) super-imposed on the same
  test images (rows) at each alpha level, the dataset's masks as contours (the study's figure);
  its layout is an :class:`OverlayGrid`.
- :func:`plot_per_class`: a per-class score with confidence intervals, one panel per
  model x class, explainers on a shared axis; an empty panel says so in grey.
- :func:`plot_ranks`: each method's rank with its bootstrap interval and P(best), one
  panel per metric.
- :func:`plot_agreement`: a metric x metric Kendall tau matrix as a diverging heatmap.

Inside :func:`bench.publish.figure_cache.figure_cache` (publishing: ``<results>/cache/figures``)
every ``plot_*`` draws a figure once per content and copies it afterwards.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.pipeline.store import atomic_write_bytes
from bench.publish.figure_cache import memoised_figure

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

DPI = 110
#: The widest PNG the grid figures (ranks) aim for, in pixels.
MAX_WIDTH_PX = 1600
#: Text colour of notes drawn where a panel has nothing to show.
NOTE_GREY = "#8c959f"
#: Colour of methods that are drawn but not highlighted (thin lines).
OTHER_GREY = "#b4b9bf"
#: Colour of control (reference) lines and markers.
CONTROL_GREY = "#3d434a"
#: Dash pattern per control role (a role not listed gets the first).
CONTROL_DASHES: dict[str, tuple[float, tuple[float, ...]]] = {
    "positive-control": (0, (6.0, 2.0)),
    "null-control": (0, (1.5, 1.5)),
    "negative-control": (0, (6.0, 2.0, 1.5, 2.0)),
    "other-control": (0, (3.0, 1.5, 1.0, 1.5, 1.0, 1.5)),
}
#: Dash patterns for a further control of a role already drawn in the same panel.
EXTRA_DASHES: tuple[tuple[float, tuple[float, ...]], ...] = (
    (0, (1.0, 3.0)), (0, (9.0, 2.5, 1.0, 2.5, 1.0, 2.5)), (0, (4.0, 4.0)),
)
#: Relevance colour map of the overlays (the study's).
OVERLAY_CMAP = "jet"


def _new_figure(figsize: tuple[float, float], *, layout: str | None = None) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _cmap(name: str) -> Any:
    import matplotlib

    return matplotlib.colormaps[name]


def mpl_text(text: Any) -> str:
    """A plugin-supplied label made safe for matplotlib (no mathtext from a stray ``$``)."""
    return str(text).replace("$", r"\$").replace("\n", " ")


#: Colours of a PNG figure's palette: a plot (lines, text, flat fills) looks the same as in
#: full RGB at about a third of the bytes, so the self-contained page stays small.
PNG_COLOURS = 256
#: Quality of a lossy figure (``.webp``, ``.jpg``): the photographic heatmap overlays.
LOSSY_QUALITY = 70
#: The figure formats :func:`save_figure` writes, by file suffix.
FIGURE_SUFFIXES: tuple[str, ...] = (".png", ".webp", ".jpg", ".jpeg")


def encode_figure(fig: Figure, suffix: str = ".png") -> bytes:
    """``fig`` rendered at :data:`DPI` (tight bounding box) as ``suffix`` says: ``.png`` an
    optimised palette PNG (:data:`PNG_COLOURS`, median cut, no dithering: white stays white,
    a pixel is off by under one level on average), ``.webp`` / ``.jpg`` lossy at
    :data:`LOSSY_QUALITY` (full chroma for JPEG, so thin coloured lines stay sharp)."""
    from PIL import Image

    suffix = suffix.lower()
    if suffix not in FIGURE_SUFFIXES:
        raise ValueError(f"save_figure: unknown figure format {suffix!r}; use one of {', '.join(FIGURE_SUFFIXES)}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        rgb = im.convert("RGB")
    out = io.BytesIO()
    if suffix == ".png":
        rgb.quantize(PNG_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            out, format="PNG", optimize=True)
    elif suffix == ".webp":
        rgb.save(out, format="WEBP", quality=LOSSY_QUALITY, method=6)
    else:
        rgb.save(out, format="JPEG", quality=LOSSY_QUALITY, subsampling=0, optimize=True)
    return out.getvalue()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` atomically in the format of ``path``'s suffix (:func:`encode_figure`); return the path."""
    path = Path(path)
    atomic_write_bytes(path, encode_figure(fig, path.suffix or ".png"))
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


def _role_of(roles: Mapping[str, str] | None, label: str) -> str | None:
    """The control role of ``label`` (None for a method or an unknown label)."""
    from bench.pipeline.controls import is_control

    role = (roles or {}).get(label)
    return role if is_control(role) else None


def _palette(n: int) -> list[Any]:
    cmap = _cmap("tab10" if n <= 10 else "tab20")
    size = 10 if n <= 10 else 20
    return [cmap(i % size) for i in range(max(n, 1))]


# ---------------------------------------------------------------------------------------
# perturbation curves
# ---------------------------------------------------------------------------------------
def _finite_rows(c: Any) -> np.ndarray | None:
    c = np.asarray(c, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] < 2:
        return None
    c = c[np.isfinite(c).all(axis=1)]
    return c if c.shape[0] else None


def _aopc(c: np.ndarray) -> float:
    L = c.shape[1] - 1
    return float(np.mean(np.sum(c[:, :1] - c[:, 1:], axis=1) / (L + 1)))


def curves_figure(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    *,
    title: str = "",
    drop: bool = False,
    confidence: float = 0.95,
    ylabel: str | None = None,
    roles: Mapping[str, str] | None = None,
    highlight: int | Sequence[str] = 6,
    higher_is_better: bool = True,
) -> Figure:
    """The figure of :func:`plot_curves` (not written)."""
    panels: list[tuple[str, dict[str, np.ndarray]]] = []
    for panel, lines in curves.items():
        kept = {str(k): c for k, v in lines.items() if (c := _finite_rows(v)) is not None}
        if kept:
            panels.append((str(panel), kept))
    if not panels:
        raise ValueError("plot_curves: no curves to plot")
    sign = 1.0 if higher_is_better else -1.0
    # per panel: methods in order of merit, the highlighted ones, the controls
    layout: list[tuple[str, dict[str, np.ndarray], dict[str, float], list[str], list[str], list[str]]] = []
    for panel, lines in panels:
        aopc = {k: _aopc(c) for k, c in lines.items()}
        controls = [k for k in lines if _role_of(roles, k) is not None]
        methods = sorted((k for k in lines if k not in controls), key=lambda k: (-sign * aopc[k], k))
        if isinstance(highlight, int):
            top = methods[: max(0, highlight)]
        else:
            wanted = {highlight} if isinstance(highlight, str) else {str(h) for h in highlight}
            top = [k for k in methods if k in wanted]
        rest = [k for k in methods if k not in top]
        layout.append((panel, lines, aopc, top, rest, controls))
    order: list[str] = []
    for *_, top, _rest, _controls in layout:
        order += [k for k in top if k not in order]
    # one colour per method across panels while tab10 has enough; else by rank within a panel
    shared = dict(zip(order, _palette(len(order)), strict=False)) if len(order) <= 10 else None

    ncols = 1 if len(panels) == 1 else 2
    nrows = math.ceil(len(panels) / ncols)
    fig = _new_figure((6.9 * ncols, 3.7 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharey=True)).ravel()
    for ax, (panel, lines, aopc, top, rest, controls) in zip(axes, layout, strict=False):
        handles: list[Any] = []
        counts = [c.shape[0] for c in lines.values()]
        n_main = max(set(counts), key=lambda v: (counts.count(v), v))  # the usual n, in the title
        colour = shared or dict(zip(top, _palette(len(top)), strict=False))

        def draw(name: str, *, z: float, band: bool, _ax: Any = ax, _lines: Mapping[str, np.ndarray] = lines,
                 _aopc: Mapping[str, float] = aopc, _n: int = n_main, **style: Any) -> Any:
            c = _lines[name]
            y = c[:, :1] - c if drop else c
            mean, lo, hi = mean_band(y, confidence)
            k = np.arange(c.shape[1])
            label = f"{mpl_text(name)}  {_aopc[name]:.3f}" + ("" if c.shape[0] == _n else f" (n={c.shape[0]})")
            (h,) = _ax.plot(k, mean, label=label, zorder=z, **style)
            if band:
                _ax.fill_between(k, lo, hi, color=style.get("color"), alpha=0.15, lw=0, zorder=z - 0.5)
            return h

        for name in rest:
            draw(name, z=1.0, band=False, color=OTHER_GREY, lw=0.8)
        if rest:
            lo_a, hi_a = min(aopc[k] for k in rest), max(aopc[k] for k in rest)
            proxy = ax.plot([], [], color=OTHER_GREY, lw=1.2,
                            label=f"{len(rest)} other method{'s' if len(rest) > 1 else ''}  "
                                  f"{lo_a:.3f} to {hi_a:.3f}")[0]
        for name in top:
            handles.append(draw(name, z=3.0, band=True, color=colour[name], lw=1.8))
        if rest:
            handles.append(proxy)
        used: list[Any] = []
        for name in sorted(controls, key=lambda k: (-sign * aopc[k], k)):
            role = _role_of(roles, name) or ""
            # the role's dash, unless another control of this panel has it already
            choices = [CONTROL_DASHES.get(role), *CONTROL_DASHES.values(), *EXTRA_DASHES]
            dash = next((d for d in choices if d is not None and d not in used), choices[1])
            used.append(dash)
            h = draw(name, z=2.5, band=False, color=CONTROL_GREY, lw=1.2, linestyle=dash)
            h.set_label(f"{h.get_label()}  [{role}]")
            handles.append(h)
        ax.set_title(f"{mpl_text(panel)}  (n={n_main} images)", fontsize=10)
        ax.set_xlabel("k (regions perturbed)", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.set_xlim(0, max(c.shape[1] for c in lines.values()) - 1)
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  borderaxespad=0.0, frameon=False, title="AOPC", title_fontsize=7,
                  alignment="left", handlelength=2.4)
    for r in range(nrows):
        axes[r * ncols].set_ylabel(
            ylabel or ("f(x$^{(0)}$) - f(x$^{(k)}$)" if drop else "f(x$^{(k)}$)  (target probability)"),
            fontsize=9)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    if title:
        fig.suptitle(mpl_text(title) + f"  (mean, {confidence:.0%} band)", fontsize=11)
    return fig


@memoised_figure()
def plot_curves(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    path: str | Path,
    *,
    title: str = "",
    drop: bool = False,
    confidence: float = 0.95,
    ylabel: str | None = None,
    roles: Mapping[str, str] | None = None,
    highlight: int | Sequence[str] = 6,
    higher_is_better: bool = True,
) -> Path:
    """Mean perturbation curves with a ``confidence`` band, one panel per outer key.

    ``curves``: ``{panel (e.g. model): {line (e.g. explainer): array (N, L+1)}}``, row i
    = f(x^(k)), k = 0..L, for image i; rows with a non-finite value are left out. With
    ``drop`` the y axis is f(x^(0)) - f(x^(k)). The band is the t-interval of the mean at
    each k. ``roles``: ``{line: explainer role}``; a line whose role is a control is drawn
    as a dashed dark-grey reference (dash pattern per role, :data:`CONTROL_DASHES`), no
    band. Of the methods, ``highlight`` (the best ``k`` by AOPC, or a list of line names)
    are drawn in colour with bands (one colour per method across panels); the others as
    thin grey lines, summed up in one legend entry. The legend, outside each panel, gives
    every drawn line's AOPC; ``higher_is_better`` says which end of AOPC is "best".
    """
    return save_figure(curves_figure(curves, title=title, drop=drop, confidence=confidence, ylabel=ylabel,
                                     roles=roles, highlight=highlight, higher_is_better=higher_is_better),
                       path)


# ---------------------------------------------------------------------------------------
# heatmap overlays
# ---------------------------------------------------------------------------------------
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
    img = np.nan_to_num(img.astype(np.float32))
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3 and np.allclose(img[..., 0], img[..., -1]) and np.allclose(img[..., 0], img[..., 1]):
        img = img[..., 0]
    return np.clip(img, 0, 1), ("gray" if img.ndim == 2 else None)


def _overlay_columns(
    heatmaps: Mapping[str, Any],
) -> list[tuple[str, list[tuple[str, str, np.ndarray]]]]:
    """``[(group, [(key, column title, maps)])]``: a nested mapping's outer keys are the
    groups; a flat mapping is grouped by the text before a label's last ``" / "``."""
    groups: dict[str, list[tuple[str, str, np.ndarray]]] = {}
    for key, value in heatmaps.items():
        if isinstance(value, Mapping):
            for inner, maps in value.items():
                groups.setdefault(str(key), []).append((f"{key} / {inner}", str(inner), np.asarray(maps)))
        else:
            group, sep, name = str(key).rpartition(" / ")
            groups.setdefault(group if sep else "", []).append((str(key), name if sep else str(key),
                                                               np.asarray(value)))
    return list(groups.items())


def _wrap(text: str, width: int) -> list[str]:
    lines = textwrap.wrap(text, width=max(4, width), break_on_hyphens=True, break_long_words=True)
    return lines or [""]


@dataclass(frozen=True)
class OverlayTile:
    """One tile of an overlay figure: image ``row``, explainer ``column`` (None: the image
    itself) at ``alpha`` (None: the image), in column block ``block``; ``box`` = (x, y, width,
    height) in the mosaic's pixels."""

    row: int
    column: str | None
    alpha: float | None
    block: int
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class OverlayGrid:
    """The layout of an overlay figure (``figure.overlay_grid``): one row per image, one column
    per explainer (every explainer once, wrapped into ``blocks`` of at most ``max_columns``),
    each explainer tile drawn at every alpha of ``alphas``; ``controls`` are the columns whose
    explainer is a control (marked ``*``); ``masks`` the masks drawn as contours (those with any
    pixel set)."""

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    alphas: tuple[float, ...]
    blocks: tuple[tuple[str, tuple[str, ...]], ...]
    controls: tuple[str, ...]
    masks: tuple[str, ...]
    tiles: tuple[OverlayTile, ...]


def resize_display(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D float image resized to ``size`` (H, W) for display: bilinear, antialiased when it
    shrinks (Pillow), so a 299 px X-ray keeps its detail in an 80 px tile."""
    from PIL import Image

    arr = np.ascontiguousarray(np.asarray(image, np.float32))
    H, W = size
    if arr.shape == (H, W):
        return arr.copy()
    return np.asarray(Image.fromarray(arr, mode="F").resize((W, H), Image.Resampling.BILINEAR), np.float32)


def overlays_figure(
    images: np.ndarray,
    heatmaps: Mapping[str, np.ndarray] | Mapping[str, Mapping[str, np.ndarray]],
    *,
    alphas: Sequence[float] = (0.4, 0.7),
    image_titles: Sequence[str] | None = None,
    title: str = "",
    cmap: str = OVERLAY_CMAP,
    masks: Mapping[str, np.ndarray] | None = None,
    max_columns: int = 12,
    tile: int = 72,
    roles: Mapping[str, str] | None = None,
    caption: str = "",
) -> Figure:
    """The figure of :func:`plot_overlays` (not written); its layout is ``figure.overlay_grid``
    (an :class:`OverlayGrid`)."""
    from matplotlib import patheffects
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D

    from bench.publish.dataset_figure import mask_colours

    imgs = np.asarray(images)
    m = imgs.shape[0] if imgs.ndim >= 3 else 0
    groups = _overlay_columns(heatmaps) if heatmaps else []
    if m == 0 or not groups:
        raise ValueError("plot_overlays: need at least one image and one heatmap set")
    for _, cols in groups:
        for key, _, hm in cols:
            if hm.ndim not in (2, 3) or (hm.shape[0] if hm.ndim == 3 else 1) != m:
                raise ValueError(f"plot_overlays: heatmaps {key!r} have {hm.shape[0] if hm.ndim else 0} maps, "
                                 f"expected {m}")
    alphas = [float(a) for a in alphas] or [0.5]
    H, W = imgs.shape[1:3]
    mask_arrays: dict[str, np.ndarray] = {}
    for name, mk in (masks or {}).items():
        arr = np.asarray(mk)
        if arr.ndim != 3 or arr.shape[0] != m or arr.shape[1:] != (H, W):
            raise ValueError(f"plot_overlays: mask {name!r} has shape {arr.shape}, expected ({m}, {H}, {W})")
        mask_arrays[str(name)] = arr.astype(np.float32)
    th = int(max(32, tile))
    tw = max(1, round(W * th / H))
    cm = _cmap(cmap)
    controls = {key for _, cols in groups for key, name, _ in cols
                if _role_of(roles, key) is not None or _role_of(roles, name) is not None}

    # blocks of columns: one group per model, wrapped at max_columns (balanced chunks)
    max_columns = max(1, int(max_columns))
    blocks: list[tuple[str, list[tuple[str, str, np.ndarray]]]] = []
    for group, cols in groups:
        n_chunks = math.ceil(len(cols) / max_columns)
        size = math.ceil(len(cols) / n_chunks)
        for c in range(n_chunks):
            part = cols[c * size : (c + 1) * size]
            heading = group if c == 0 or not group else f"{group} (continued)"
            blocks.append((heading, part))
    n_cols = 1 + max(len(cols) for _, cols in blocks)

    gap, image_gap, block_gap = 3, 9, 22
    line_px = 10  # one line of 6.5 pt text at DPI, with leading
    chars = max(6, int(tw / 5.0))
    wrapped = {key: _wrap(name + (" *" if key in controls else ""), chars)
               for _, cols in blocks for key, name, _ in cols}
    head_lines = max([len(v) for v in wrapped.values()] + [1])
    col_head = head_lines * line_px + 4
    group_head = 16 if any(g for g, _ in blocks) else 0
    rows_h = m * len(alphas) * (th + gap) + (m - 1) * image_gap
    block_h = group_head + col_head + rows_h
    mosaic_w = n_cols * tw + (n_cols - 1) * gap + 10  # + the gap after the image column
    mosaic_h = len(blocks) * block_h + (len(blocks) - 1) * block_gap
    mosaic = np.ones((mosaic_h, mosaic_w, 3), np.float32)
    outline = {name: np.zeros((mosaic_h, mosaic_w), np.float32) for name in mask_arrays}

    def col_x(c: int) -> int:
        return c * (tw + gap) + (10 if c >= 1 else 0)

    def display_rgb(img: np.ndarray) -> np.ndarray:
        arr, _ = _as_display(img)
        if arr.ndim == 2:
            arr = arr[..., None].repeat(3, axis=-1)
        return np.clip(np.stack([resize_display(arr[..., k], (th, tw)) for k in range(3)], axis=-1), 0, 1)

    bases = [display_rgb(imgs[j]) for j in range(m)]
    tile_masks = {name: np.stack([resize_display(a, (th, tw)) for a in arr]) for name, arr in mask_arrays.items()}
    titles = [str(image_titles[j]) if image_titles is not None and j < len(image_titles) else f"image {j}"
              for j in range(m)]
    texts: list[tuple[float, float, str, dict[str, Any]]] = []
    tiles: list[OverlayTile] = []
    for b, (heading, cols) in enumerate(blocks):
        y_block = b * (block_h + block_gap)
        if heading:
            texts.append((0, y_block + group_head - 4, mpl_text(heading),
                          {"ha": "left", "va": "bottom", "fontsize": 8.5, "fontweight": "bold"}))
        y_rows = y_block + group_head + col_head
        texts.append((col_x(0) + tw / 2, y_rows - 3, "image",
                      {"ha": "center", "va": "bottom", "fontsize": 6.5}))
        for c, (key, _, _) in enumerate(cols, start=1):
            style: dict[str, Any] = {"ha": "center", "va": "bottom", "fontsize": 6.5, "linespacing": 1.0}
            if key in controls:
                style.update(color=CONTROL_GREY, fontstyle="italic")
            texts.append((col_x(c) + tw / 2, y_rows - 3, "\n".join(mpl_text(t) for t in wrapped[key]), style))
        coloured = [normalise_stack(upsample_bilinear(_as_stack(hm), (th, tw)), cm) for _, _, hm in cols]
        for j in range(m):
            y_image = y_rows + j * (len(alphas) * (th + gap) + image_gap)
            first, *rest = [mpl_text(t) for t in titles[j].split("\n")]
            texts.append((-50, y_image + (len(alphas) * (th + gap) - gap) / 2, first,
                          {"ha": "right", "va": "bottom" if rest else "center", "fontsize": 7.5,
                           "fontweight": "bold"}))
            if rest:
                texts.append((-50, y_image + (len(alphas) * (th + gap) - gap) / 2 + 2,
                              "\n".join(_shorten(t, 36) for t in rest),
                              {"ha": "right", "va": "top", "fontsize": 6, "color": "#57606a"}))
            for a, alpha in enumerate(alphas):
                y0 = y_image + a * (th + gap)
                drawn = [(0, None, bases[j])] + [
                    (c, cols[c - 1][0], (1 - alpha) * bases[j] + alpha * coloured[c - 1][j])
                    for c in range(1, len(cols) + 1)]
                for c, key, t in drawn:
                    x0 = col_x(c)
                    mosaic[y0 : y0 + th, x0 : x0 + tw] = t
                    for name, tm in tile_masks.items():
                        outline[name][y0 : y0 + th, x0 : x0 + tw] = tm[j]
                    tiles.append(OverlayTile(row=j, column=key, alpha=None if key is None else alpha, block=b,
                                             box=(x0, y0, tw, th)))
                texts.append((-4, y0 + th / 2, f"alpha {alpha:g}",
                              {"ha": "right", "va": "center", "fontsize": 6.5, "color": "#57606a"}))

    label_in = 1.9
    right_in = 0.9
    title_in = 0.32 if title else 0.0
    legend_in = 0.42 if mask_arrays else 0.0
    notes = [caption] if caption else []
    if controls:
        notes.append("* control: a reference map (oracle, random, prior...), not a method")
    note_lines = [line for n in notes for line in _wrap(mpl_text(n), int(16 * (mosaic_w / DPI + label_in)))]
    bottom_in = 0.1 + 0.135 * len(note_lines)
    top_in = 0.08 + title_in + legend_in
    fig_w = mosaic_w / DPI + label_in + right_in
    fig_h = mosaic_h / DPI + top_in + bottom_in
    fig = _new_figure((fig_w, fig_h))
    ax = fig.add_axes((label_in / fig_w, bottom_in / fig_h, (mosaic_w / DPI) / fig_w, (mosaic_h / DPI) / fig_h))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for x, y, text, kw in texts:
        ax.text(x, y, text, **kw)
    colours = mask_colours(list(mask_arrays))
    handles = []
    drawn_masks = []
    halo = [patheffects.Stroke(linewidth=1.7, foreground="black"), patheffects.Normal()]
    for name, arr in outline.items():
        if arr.max() >= 0.5:
            cs = ax.contour(arr, levels=[0.5], colors=[colours[name]], linewidths=0.8)
            cs.set_gid(f"mask:{name}")
            cs.set_path_effects(halo)
            drawn_masks.append(name)
        handles.append(Line2D([0], [0], color=colours[name], lw=1.5, label=f"{mpl_text(name)} mask",
                              path_effects=[patheffects.Stroke(linewidth=2.6, foreground="black"),
                                            patheffects.Normal()]))
    ax.set_xlim(-0.5, mosaic_w - 0.5)
    ax.set_ylim(mosaic_h - 0.5, -0.5)
    if handles:
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(label_in / fig_w, 1 - (0.08 + title_in) / fig_h),
                   ncol=len(handles), fontsize=7.5, frameon=False, borderaxespad=0.0,
                   title="contours:", title_fontsize=7.5, alignment="left")
    if note_lines:
        fig.text(0.1 / fig_w, (bottom_in - 0.06) / fig_h, "\n".join(note_lines), ha="left", va="top",
                 fontsize=7, color="#57606a")
    bar_in = min(1.6, mosaic_h / DPI * 0.9)
    cax = fig.add_axes(((label_in + mosaic_w / DPI + 0.2) / fig_w, 1 - (top_in + 0.15 + bar_in) / fig_h,
                        0.12 / fig_w, bar_in / fig_h))
    cbar = fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=cm), cax=cax)
    cbar.set_label("relevance (min-max per map)", fontsize=7)
    cbar.ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(mpl_text(title), fontsize=10, x=0.1 / fig_w, ha="left", y=1 - 0.06 / fig_h, va="top")
    columns = tuple(dict.fromkeys(key for _, cols in blocks for key, _, _ in cols))
    fig.overlay_grid = OverlayGrid(  # type: ignore[attr-defined]
        rows=tuple(titles), columns=columns, alphas=tuple(alphas),
        blocks=tuple((h, tuple(k for k, _, _ in cols)) for h, cols in blocks),
        controls=tuple(k for k in columns if k in controls), masks=tuple(drawn_masks), tiles=tuple(tiles))
    return fig


def _shorten(text: str, width: int) -> str:
    """``text``, or its last ``width - 1`` characters after an ellipsis (ids differ at the end)."""
    return text if len(text) <= width else "\u2026" + text[-(width - 1):]


def _as_stack(hm: np.ndarray) -> np.ndarray:
    hm = np.asarray(hm, np.float32)
    return hm[None] if hm.ndim == 2 else hm


def normalise_stack(maps: np.ndarray, cmap: Any) -> np.ndarray:
    """Each map of ``maps`` (N, H, W) min-max normalised (:func:`normalise`) and coloured by ``cmap``: (N, H, W, 3)."""
    return np.stack([cmap(normalise(h))[..., :3].astype(np.float32) for h in maps])


@memoised_figure()
def plot_overlays(
    images: np.ndarray,
    heatmaps: Mapping[str, np.ndarray] | Mapping[str, Mapping[str, np.ndarray]],
    path: str | Path,
    *,
    alphas: Sequence[float] = (0.4, 0.7),
    image_titles: Sequence[str] | None = None,
    title: str = "",
    cmap: str = OVERLAY_CMAP,
    masks: Mapping[str, np.ndarray] | None = None,
    max_columns: int = 12,
    tile: int = 72,
    roles: Mapping[str, str] | None = None,
    caption: str = "",
) -> Path:
    """Every explainer's heatmaps super-imposed on the same images, at each alpha level.

    ``images``: (M, H, W) or (M, H, W, 3), uint8 or float in [0, 1] (e.g. a few test
    images of each class, in class order). ``heatmaps``: ``{label: (M, h, w)}`` for the
    same M images (labels ``"model / explainer"`` are grouped by model), or nested
    ``{group (model): {explainer: (M, h, w)}}``; any h, w: upsampled bilinearly and
    min-max normalised per map (NaN -> 0). ``masks``: ``{mask name: bool (M, H, W)}``,
    each drawn as a contour of its own colour (:func:`bench.publish.dataset_figure.mask_colours`,
    with a black halo and a legend) on the image and on every overlay. ``roles``:
    ``{label or explainer: role}``; a control's column header is grey, italic and marked
    ``*`` (explained under the figure, beside ``caption``).

    Layout (:class:`OverlayGrid`): one block of columns per group (wrapped at
    ``max_columns`` explainers): the first column shows the image, then one column per
    explainer; one row per image, drawn once per alpha (``alphas``, the study's two levels
    by default), labelled by ``image_titles`` (first line bold: the class; the rest grey).
    ``tile``: the height of one tile in pixels. The file's format follows the suffix of
    ``path`` (:func:`save_figure`): ``.webp`` keeps these photographic tiles small.
    """
    return save_figure(overlays_figure(images, heatmaps, alphas=alphas, image_titles=image_titles, title=title,
                                       cmap=cmap, masks=masks, max_columns=max_columns, tile=tile, roles=roles,
                                       caption=caption), path)


# ---------------------------------------------------------------------------------------
# per class
# ---------------------------------------------------------------------------------------
def per_class_figure(
    stats: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]],
    *,
    title: str = "",
    ylabel: str = "AOPC (MoRF)",
    roles: Mapping[str, str] | None = None,
    higher_is_better: bool = True,
    empty_text: str = "no correctly classified image",
) -> Figure:
    """The figure of :func:`plot_per_class` (not written)."""
    panels = [str(p) for p in stats if len(stats[p])]
    if not panels:
        raise ValueError("plot_per_class: nothing to plot")
    rows = {str(p): {str(g): {str(c): v for c, v in cls.items()} for g, cls in stats[p].items()} for p in stats}
    classes: list[str] = []
    groups: list[str] = []
    for p in panels:
        for g, cls in rows[p].items():
            if g not in groups:
                groups.append(g)
            classes += [c for c in cls if c not in classes]
    if not classes:
        raise ValueError("plot_per_class: nothing to plot")

    def usable(v: Sequence[float]) -> bool:
        return len(v) >= 4 and int(v[3]) > 0 and bool(np.isfinite(v[0]))

    sign = 1.0 if higher_is_better else -1.0
    score: dict[str, float] = {}
    for g in groups:
        vals = [float(v[0]) for p in panels for v in rows[p].get(g, {}).values() if usable(v)]
        score[g] = float(np.mean(vals)) if vals else -math.inf
    controls = [g for g in groups if _role_of(roles, g) is not None]
    methods = sorted((g for g in groups if g not in controls), key=lambda g: (-sign * score[g], g))
    ordered = methods + sorted(controls, key=lambda g: (-sign * score[g], g))
    ypos = {g: i for i, g in enumerate(ordered)}

    span = [float(x) for p in panels for cls in rows[p].values() for v in cls.values() if usable(v)
            for x in v[:3] if np.isfinite(x)]
    # a panel with nothing in any class (e.g. a model that classified no image correctly) is
    # left out and named in a grey note; a single empty class keeps its slot and says so
    empty = [p for p in panels if not any(usable(v) for cls in rows[p].values() for v in cls.values())]
    panels = [p for p in panels if p not in empty]
    note = "; ".join(mpl_text(p) for p in empty) + f": {empty_text} in any class (left out)" if empty else ""
    if not panels:
        fig = _new_figure((6.0, 1.2), layout="constrained")
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "\n".join(_wrap(note, 90)), transform=ax.transAxes, ha="center", va="center",
                fontsize=8.5, color=NOTE_GREY)
        if title:
            fig.suptitle(mpl_text(title), fontsize=11)
        return fig
    n_rows, n_cols = len(panels), len(classes)
    label_in = 0.3 + 0.065 * max(len(mpl_text(g)) for g in ordered)
    panel_w = 2.6 if n_cols > 1 else 4.0
    panel_h = 0.17 * len(ordered) + 0.75
    fig = _new_figure((label_in + panel_w * n_cols, panel_h * n_rows + (0.5 if title else 0.2)),
                      layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharex=True, sharey=True)
    for r, p in enumerate(panels):
        for c, cls in enumerate(classes):
            ax = axes[r, c]
            pts = [(g, rows[p][g][cls]) for g in ordered if cls in rows[p].get(g, {}) and usable(rows[p][g][cls])]
            ax.grid(axis="x", alpha=0.3)
            ax.tick_params(labelsize=7)
            if r == 0:
                ax.set_title(mpl_text(cls), fontsize=9)
            if c == 0:
                ax.set_ylabel(mpl_text(p), fontsize=9)
            if not pts:
                ax.set_facecolor("#f6f8fa")
                ax.text(0.5, 0.5, empty_text, transform=ax.transAxes, ha="center", va="center",
                        fontsize=7.5, color=NOTE_GREY, wrap=True)
                continue
            for i in range(0, len(ordered), 2):
                ax.axhspan(i - 0.5, i + 0.5, color="#f6f8fa", zorder=0, lw=0)
            if span and min(span) < 0 < max(span):
                ax.axvline(0, color="black", lw=0.6, zorder=0)
            if controls and methods:
                ax.axhline(len(methods) - 0.5, color="#d0d7de", lw=0.8, zorder=0)
            for g, v in pts:
                mean, lo, hi = float(v[0]), float(v[1]), float(v[2])
                err = np.array([[max(mean - lo, 0.0) if np.isfinite(lo) else 0.0],
                                [max(hi - mean, 0.0) if np.isfinite(hi) else 0.0]])
                is_ctrl = g in controls
                ax.errorbar([mean], [ypos[g]], xerr=err, fmt="o", ms=3.5, capsize=1.5, elinewidth=1.0,
                            color=CONTROL_GREY if is_ctrl else "#1f4e9c",
                            mfc="white" if is_ctrl else "#1f4e9c")
            ns = sorted({int(v[3]) for _, v in pts})
            n_text = f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}-{ns[-1]}"
            ax.text(0.98, 0.02, n_text, transform=ax.transAxes, ha="right", va="bottom", fontsize=6.5,
                    color="#57606a")
    ax0 = axes[0, 0]
    ax0.set_yticks(range(len(ordered)))
    ax0.set_yticklabels([mpl_text(g) + (" *" if g in controls else "") for g in ordered], fontsize=7)
    ax0.set_ylim(len(ordered) - 0.5, -0.5)
    if span:
        lo_x, hi_x = min(span), max(span)
        pad = 0.08 * ((hi_x - lo_x) or 1.0)
        ax0.set_xlim(lo_x - pad, hi_x + pad)
    for c in range(n_cols):
        axes[-1, c].set_xlabel(mpl_text(ylabel), fontsize=8)
    if note:
        fig.supxlabel("\n".join(_wrap(note, int(12 * (label_in + panel_w * n_cols)))), fontsize=8,
                      color=NOTE_GREY)
    if title:
        what = "  (mean, 95% CI; * control)" if controls else "  (mean, 95% CI)"
        fig.suptitle(mpl_text(title) + what, fontsize=11)
    return fig


@memoised_figure()
def plot_per_class(
    stats: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]],
    path: str | Path,
    *,
    title: str = "",
    ylabel: str = "AOPC (MoRF)",
    roles: Mapping[str, str] | None = None,
    higher_is_better: bool = True,
    empty_text: str = "no correctly classified image",
) -> Path:
    """A per-class score with CI whiskers: one panel per (outer key, class), explainers on a shared axis.

    ``stats``: ``{panel (e.g. model): {explainer: {class: (mean, low, high, n)}}}``. Rows of
    panels are the outer keys, columns the classes; in each panel one point per explainer
    with its interval, explainers in order of merit (mean over every panel; the value axis
    is labelled ``ylabel``), controls (by ``roles``, ``{explainer: role}``) last, hollow
    and marked ``*``. Each panel says its n. A panel where no explainer has an image
    (n = 0 or NaN everywhere) draws no point and says ``empty_text`` in grey.
    """
    return save_figure(per_class_figure(stats, title=title, ylabel=ylabel, roles=roles,
                                        higher_is_better=higher_is_better, empty_text=empty_text), path)


# ---------------------------------------------------------------------------------------
# ranks with intervals
# ---------------------------------------------------------------------------------------
RANK_COLUMNS: tuple[str, ...] = ("method", "rank", "rank_low", "rank_high", "p_best")


def _p_text(p: float) -> str:
    if not np.isfinite(p):
        return "-"
    if p <= 0:
        return "0"  # drawn in a lighter grey
    if p < 0.01:
        return "<.01"
    return f"{p:.2f}"


def ranks_figure(ranks: pd.DataFrame, *, title: str) -> Figure:
    """The figure of :func:`plot_ranks` (not written)."""
    missing = [c for c in RANK_COLUMNS if c not in ranks.columns]
    if missing:
        raise ValueError(f"plot_ranks: the ranks frame lacks column(s) {', '.join(missing)}")
    if ranks.empty:
        raise ValueError("plot_ranks: no ranks to plot")
    df = ranks.copy()
    df["method"] = df["method"].astype(str)
    df["metric"] = df["metric"].astype(str) if "metric" in df.columns else ""
    for c in RANK_COLUMNS[1:]:
        df[c] = np.asarray(df[c], dtype=np.float64)
    metrics = list(dict.fromkeys(df["metric"]))
    mean_rank = df.groupby("method", sort=False)["rank"].mean()
    methods = sorted(mean_rank.index, key=lambda m: (
        mean_rank[m] if np.isfinite(mean_rank[m]) else math.inf, m))
    ypos = {m: i for i, m in enumerate(methods)}
    n = len(methods)
    top_rank = max(float(np.nanmax(df[["rank", "rank_high"]].to_numpy())) if np.isfinite(
        df[["rank", "rank_high"]].to_numpy()).any() else 1.0, float(n))

    ncols = min(len(metrics), 5)
    nrows = math.ceil(len(metrics) / ncols)
    label_in = 0.35 + 0.062 * max(len(m) for m in methods)
    max_in = MAX_WIDTH_PX / DPI - 0.3
    panel_w = min(3.2 if ncols > 1 else 4.5, (max_in - label_in) / ncols)
    panel_h = 0.19 * n + 0.85
    fig = _new_figure((label_in + panel_w * ncols, panel_h * nrows + 0.5), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.04, wspace=0.02, hspace=0.04)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharey=True)).ravel()
    pcol = max(1.6, 0.2 * top_rank)  # room for the P(best) column, in rank units
    x_right = top_rank + 0.5 + pcol
    for ax, metric in zip(axes, metrics, strict=False):
        sub = df[df["metric"] == metric]
        ax.axvline(top_rank + 0.5, color="#d0d7de", lw=0.8)
        ax.grid(axis="x", alpha=0.3)
        for i in range(0, n, 2):
            ax.axhspan(i - 0.5, i + 0.5, color="#f6f8fa", zorder=0, lw=0)
        ax.text(top_rank + 0.5 + pcol / 2, -0.6, "P(best)", ha="center", va="bottom", fontsize=6.5,
                color="#57606a")
        for row in sub.itertuples(index=False):
            y = ypos[row.method]
            rank, lo, hi, p = float(row.rank), float(row.rank_low), float(row.rank_high), float(row.p_best)
            if np.isfinite(lo) and np.isfinite(hi):
                ax.plot([lo, hi], [y, y], color="#7a9cc6", lw=2.2, solid_capstyle="butt", zorder=2)
            if np.isfinite(rank):
                ax.plot([rank], [y], "o", ms=4, color="#1f4e9c", zorder=3)
            strong = np.isfinite(p) and p >= 0.5
            shade = "#1f2328" if strong else ("#57606a" if np.isfinite(p) and p > 0 else "#c4cad1")
            ax.text(top_rank + 0.5 + pcol / 2, y, _p_text(p), ha="center", va="center", fontsize=6.5,
                    color=shade, fontweight="bold" if strong else "normal")
        ax.set_title("\n".join(_wrap(mpl_text(metric), 34)) if metric else "", fontsize=8.5)
        ax.set_xlim(0.4, x_right)
        ticks = [1] + [t for t in range(5, int(top_rank) + 1, 5)]
        if int(top_rank) not in ticks and top_rank - ticks[-1] >= 2:
            ticks.append(int(top_rank))
        ax.set_xticks(ticks)
        ax.tick_params(labelsize=7)
    for ax in axes[: len(metrics)]:
        ax.set_xlabel("rank (1 = best)", fontsize=7.5)
    for ax in axes[len(metrics):]:
        ax.set_axis_off()
    ax0 = axes[0]
    ax0.set_yticks(range(n))
    ax0.set_yticklabels([mpl_text(m) for m in methods], fontsize=7.5)
    ax0.set_ylim(n - 0.5, -1.1)
    fig.suptitle(mpl_text(title) + "  (rank of the mean; bar: bootstrap interval)" if title else
                 "Ranks (rank of the mean; bar: bootstrap interval)", fontsize=10)
    return fig


@memoised_figure()
def plot_ranks(ranks: pd.DataFrame, path: str | Path, *, title: str) -> Path:
    """Each method's rank with its bootstrap interval and P(best), one panel per metric.

    ``ranks``: columns ``method, rank, rank_low, rank_high, p_best`` (as
    :meth:`bench.ranking.Ranking.to_frame` gives) and an optional ``metric`` (one panel
    per metric, in order of appearance, in a grid at most 5 wide: the PNG stays within
    about :data:`MAX_WIDTH_PX`). Methods share one order, by mean rank over the metrics,
    best at the top; a point marks the rank, a horizontal bar its interval, the right-hand
    column P(best) (bold from 0.5). NaN values are left out.
    """
    return save_figure(ranks_figure(ranks, title=title), path)


# ---------------------------------------------------------------------------------------
# agreement between metrics
# ---------------------------------------------------------------------------------------
def agreement_figure(matrix: pd.DataFrame, *, title: str, label: str = "Kendall's tau") -> Figure:
    """The figure of :func:`plot_agreement` (not written)."""
    values = np.asarray(matrix.to_numpy(dtype=np.float64))
    if values.ndim != 2 or values.size == 0:
        raise ValueError("plot_agreement: the matrix is empty")
    rows = [mpl_text(r) for r in matrix.index]
    cols = [mpl_text(c) for c in matrix.columns]
    nr, nc = values.shape
    cell = 0.42 if max(nr, nc) <= 12 else 0.36
    label_in = 0.3 + 0.06 * max(len(t) for t in rows + cols)
    fig = _new_figure((label_in + cell * nc + 1.0, label_in + cell * nr + 0.5), layout="constrained")
    ax = fig.add_subplot()
    cmap = _cmap("RdBu").with_extremes(bad="#d0d7de")
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest",
                   aspect="equal")
    fs = 7 if max(nr, nc) <= 12 else 6
    for i in range(nr):
        for j in range(nc):
            v = values[i, j]
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=fs,
                        color="white" if abs(v) > 0.6 else "#1f2328")
            else:
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=fs - 0.5, color=NOTE_GREY)
    ax.set_xticks(range(nc))
    ax.set_xticklabels(cols, rotation=50, ha="right", rotation_mode="anchor", fontsize=7.5)
    ax.set_yticks(range(nr))
    ax.set_yticklabels(rows, fontsize=7.5)
    ax.set_xticks(np.arange(-0.5, nc), minor=True)
    ax.set_yticks(np.arange(-0.5, nr), minor=True)
    ax.grid(which="minor", color="white", lw=1.0)
    ax.tick_params(which="minor", length=0)
    ax.tick_params(which="major", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    cbar = fig.colorbar(im, ax=ax, shrink=min(1.0, 4.0 / max(1.0, cell * nr)), aspect=25, pad=0.02)
    cbar.set_label(label, fontsize=8)
    cbar.ax.tick_params(labelsize=7)
    ax.set_title(mpl_text(title), fontsize=10)
    return fig


@memoised_figure()
def plot_agreement(matrix: pd.DataFrame, path: str | Path, *, title: str) -> Path:
    """A metric x metric agreement matrix (Kendall's tau in [-1, 1]) as a diverging heatmap.

    ``matrix``: a square DataFrame (index and columns: the metrics), as
    :func:`bench.ranking.kendall_matrix` returns; +1 blue (same order of merit), -1 red
    (reversed), each value printed; NaN cells (too few methods, a metric that ties them
    all) light grey, marked ``n/a``.
    """
    return save_figure(agreement_figure(matrix, title=title), path)
