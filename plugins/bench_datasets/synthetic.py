"""``synthetic-cxr``: a seeded procedural chest-X-ray-like dataset with known truth.

Four classes mirror the reference study (COVID-19 Radiography Database):

* ``COVID`` -- bilateral, peripheral, lower-zone ground-glass opacities (faint haze);
* ``Lung_Opacity`` -- one or two dense focal consolidations with irregular edges;
* ``Normal`` -- no lesion;
* ``Viral Pneumonia`` -- diffuse bilateral perihilar streaky (radiating) pattern.

Every image has a lung mask (both lung fields, heart excluded, as the real
database's masks) and a lesion mask marking exactly the pixels where the class
signal was added (the lesion's support, always inside the lung mask; the final
blur of 0.5-1.3 px spreads it by a pixel or two). Anatomy -- body outline, lung
fields, diaphragm domes, heart shadow, spine, ribs, clavicles, hila and lung
texture -- is jittered per image in position, size, rotation, contrast, gamma,
noise and blur.

``shortcut`` in [0, 1] is the probability that a class-specific marker (a small
burned-in text tag in the top-right corner, outside the body) is drawn, the way
hospital-specific markers let COVID classifiers cheat (DeGrave et al., Nature
Machine Intelligence 2021). At 1.0 the marker alone identifies the class. A
class-neutral laterality marker ``R`` is drawn on half the images of every class
(top-left), so "is there a tag" carries no information, only *which* tag does.

Each image is a pure function of ``(seed, class, index, image_size, shortcut)``
(its own :class:`numpy.random.SeedSequence`), so image ``synthetic-COVID-00017``
is the same whatever ``per_class`` or ``split`` is, and the same parameters give
bit-identical arrays on every machine with the same NumPy/SciPy.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import ndimage

from bench.data import SPLIT_NAMES, DatasetSplits, Split, fingerprint_of
from bench.errors import ConfigError

from .splitting import check_fractions, stratified_split

CLASS_NAMES: tuple[str, ...] = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
DISEASE_CLASSES: tuple[str, ...] = ("COVID", "Lung_Opacity", "Viral Pneumonia")
#: The burned-in tag of each class (drawn with probability ``shortcut``).
MARKER_TEXT: dict[str, str] = {
    "COVID": "CV",
    "Lung_Opacity": "LO",
    "Normal": "NM",
    "Viral Pneumonia": "VP",
}
NEUTRAL_MARKER = "R"
#: Bumped whenever the drawing changes, so cached copies are invalidated.
GENERATOR_VERSION = 5
NAME = "synthetic-cxr"

# 3x5 bitmap font for the markers
_FONT: dict[str, tuple[str, ...]] = {
    "C": ("111", "100", "100", "100", "111"),
    "V": ("101", "101", "101", "101", "010"),
    "L": ("100", "100", "100", "100", "111"),
    "O": ("111", "101", "101", "101", "111"),
    "N": ("101", "111", "111", "111", "101"),
    "M": ("101", "111", "111", "101", "101"),
    "P": ("111", "101", "111", "100", "100"),
    "R": ("110", "101", "110", "101", "101"),
}


def image_id(class_name: str, index: int) -> str:
    """The stable id of synthetic image ``index`` of ``class_name``: ``synthetic-COVID-00017``."""
    return f"synthetic-{class_name.replace(' ', '_')}-{index:05d}"


# ---------------------------------------------------------------------------------------
# drawing helpers
# ---------------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1], x to the right, y down (read-only)."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    x0 = np.broadcast_to(c[None, :], (size, size))
    y0 = np.broadcast_to(c[:, None], (size, size))
    return x0, y0


@lru_cache(maxsize=16)
def _upsampler(size: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation from k samples to ``size`` pixels: (lo, hi, weight of hi)."""
    pos = (np.arange(size) + 0.5) / size * (k - 1)
    lo = np.clip(np.floor(pos).astype(np.intp), 0, k - 2)
    frac = (pos - lo).astype(np.float32)
    return lo, lo + 1, frac


def _smooth_noise(rng: np.random.Generator, size: int, k: int, coarse: int = 0) -> np.ndarray:
    """Low-frequency noise, (size, size) float32: a k x k white-noise field (plus, when
    ``coarse`` > 1, a coarser ``coarse`` x ``coarse`` field at 1.8x the amplitude),
    upsampled by separable linear interpolation (no BLAS: no thread spin-up)."""
    small = rng.standard_normal((k, k), dtype=np.float32)
    if coarse > 1:
        lo, hi, w = _upsampler(k, coarse)
        extra = rng.standard_normal((coarse, coarse), dtype=np.float32) * np.float32(1.8)
        rows = extra[lo] + (extra[hi] - extra[lo]) * w[:, None]
        small += rows[:, lo] + (rows[:, hi] - rows[:, lo]) * w[None, :]
    lo, hi, w = _upsampler(size, k)
    rows = small[lo] + (small[hi] - small[lo]) * w[:, None]  # (size, k)
    rows_t = np.ascontiguousarray(rows.T)  # (k, size)
    # interpolate along the other axis in the transposed (contiguous) layout; the
    # field is isotropic noise, so returning it transposed is as good and saves a copy
    out = np.take(rows_t, lo, axis=0)  # (size, size): out[c, r] = rows[r, lo[c]]
    out += (np.take(rows_t, hi, axis=0) - out) * w[:, None]
    return out


def _text_bitmap(text: str) -> np.ndarray:
    rows = []
    for r in range(5):
        rows.append("0".join(_FONT[ch][r] for ch in text))
    return np.array([[c == "1" for c in row] for row in rows], dtype=bool)


def _lung_profile(ly: np.ndarray) -> np.ndarray:
    """Lung half-width (fraction of its widest) from apex (0) to base (1): a rounded
    apex and a convex lateral border."""
    t = np.float32(1.0) - ly
    return np.sqrt(np.float32(1.0) - t * t * np.sqrt(t))


def lung_point(lung: dict[str, float], ly: float, lateral: float) -> tuple[float, float, float]:
    """(x, y, half-width) in the anatomy frame of a point of ``lung`` at relative height
    ``ly`` (0 apex, 1 base) and ``lateral`` (-1 medial edge, 0 centre line, 1 lateral edge)."""
    half = lung["w0"] * float(_lung_profile(np.float32(ly)))
    xcen = lung["xc"] + lung["side"] * 0.03 * ly
    y = lung["apex"] + ly * (lung["base"] - lung["apex"])
    return xcen + lung["side"] * lateral * half, y, half


class _Frame:
    """Per-image similarity transform between pixels and the anatomy frame."""

    def __init__(self, size: int, scale: float, angle: float, dx: float, dy: float):
        self.size, self.scale, self.dx, self.dy = size, scale, dx, dy
        self.cos, self.sin = math.cos(angle), math.sin(angle)
        x0, y0 = _grid(size)
        xs, ys = x0 - np.float32(dx), y0 - np.float32(dy)
        inv = np.float32(1.0 / scale)
        self.X = (xs * np.float32(self.cos) + ys * np.float32(self.sin)) * inv
        self.Y = (ys * np.float32(self.cos) - xs * np.float32(self.sin)) * inv

    def window(self, cx: float, cy: float, radius: float) -> tuple[slice, slice]:
        """Pixel window holding the anatomy-frame disc (cx, cy, radius)."""
        return self.rect(cx - radius, cx + radius, cy - radius, cy + radius)

    def rect(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
        """Pixel window holding the anatomy-frame rectangle [x0, x1] x [y0, y1]."""
        pxs, pys = [], []
        for cx in (x0, x1):
            for cy in (y0, y1):
                gx = self.scale * (cx * self.cos - cy * self.sin) + self.dx
                gy = self.scale * (cx * self.sin + cy * self.cos) + self.dy
                pxs.append((gx + 1) / 2 * self.size)
                pys.append((gy + 1) / 2 * self.size)
        r0, r1 = max(0, int(min(pys)) - 1), min(self.size, int(math.ceil(max(pys))) + 2)
        c0, c1 = max(0, int(min(pxs)) - 1), min(self.size, int(math.ceil(max(pxs))) + 2)
        return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def _segment_distance(X: np.ndarray, Y: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    ax, ay = a
    bx, by = b
    vx, vy = bx - ax, by - ay
    t = np.clip(((X - ax) * vx + (Y - ay) * vy) / (vx * vx + vy * vy), 0.0, 1.0)
    return np.hypot(X - ax - t * vx, Y - ay - t * vy)


# ---------------------------------------------------------------------------------------
# one image
# ---------------------------------------------------------------------------------------
def render(
    seed: int,
    class_index: int,
    index: int,
    image_size: int,
    shortcut: float = 0.0,
    *,
    lesion: bool = True,
    lesion_contrast: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int] | None]:
    """Draw one image: ``(image uint8 (S, S), lung bool, lesion bool, marker box or None)``.

    The marker box is ``[row0, col0, row1, col1]`` (end-exclusive) of the class tag.
    ``lesion=False`` draws the very same image without the class signal (same
    anatomy, noise and marker), which is how the tests check that the lesion mask
    covers the signal. ``lesion_contrast`` scales the lesions' intensity (the
    difficulty knob: 1.0 is tuned for a small CNN to reach 85-95% with a few hundred
    images per class; larger is easier). The lesion mask does not depend on it.
    """
    S = int(image_size)
    ss = np.random.SeedSequence([int(seed), int(class_index), int(index)])
    ra, rl, rn, rm = (np.random.default_rng(s) for s in ss.spawn(4))
    f32 = np.float32

    # --- pose and anatomy ---------------------------------------------------------------
    frame = _Frame(
        S,
        scale=float(ra.uniform(0.9, 1.04)),
        angle=float(ra.normal(0.0, 0.03)),
        dx=float(ra.normal(0.0, 0.025)),
        dy=float(ra.normal(0.0, 0.025)),
    )
    X, Y = frame.X, frame.Y

    # body: a superellipse torso (rounded shoulders) plus the neck
    aX = np.abs(X)
    bw = ra.uniform(0.86, 0.98)
    xb, yb = aX * f32(1.0 / bw), np.abs(Y - f32(0.22)) * f32(1.0 / 1.12)
    sup = xb * xb * xb
    sup += yb * yb * yb
    body = np.clip((f32(1.0) - sup) * f32(1.0 / 0.08), 0.0, 1.0)
    win = frame.rect(-0.3, 0.3, -1.4, -0.45)
    neck = np.clip((f32(0.22) - aX[win]) * f32(1.0 / 0.04), 0.0, 1.0) * (Y[win] < -0.5)
    body[win] = np.maximum(body[win], neck)
    D = body * (f32(ra.uniform(0.40, 0.47) + 0.09) + f32(0.09) * Y + f32(ra.normal(0, 0.03)) * X)

    # lung fields (image left = patient's right; its diaphragm sits a little higher)
    lung_soft = np.zeros((S, S), dtype=np.float32)
    lung_mask = np.zeros((S, S), dtype=bool)
    lungs: list[dict[str, float]] = []
    lung_dark = ra.uniform(0.22, 0.30)
    for side in (-1.0, 1.0):
        xc = side * ra.uniform(0.38, 0.43)
        apex = ra.uniform(-0.76, -0.66)
        base = ra.uniform(0.48, 0.58) + (0.03 if side > 0 else 0.0)
        w0 = ra.uniform(0.27, 0.31)
        dome = ra.uniform(0.10, 0.16)
        lungs.append({"side": side, "xc": xc, "apex": apex, "base": base, "w0": w0})
        xa, xb_ = xc - side * (w0 + 0.02), xc + side * (0.03 + w0 + 0.02)
        win = frame.rect(min(xa, xb_), max(xa, xb_), apex - 0.01, base + 0.01)
        Xw, Yw = X[win], Y[win]
        lyc = np.clip((Yw - f32(apex)) * f32(1.0 / (base - apex)), 0.0, 1.0)
        xcen = f32(xc) + f32(side * 0.03) * lyc
        dxw = np.abs(Xw - xcen)
        half = f32(w0) * _lung_profile(lyc)
        xr = dxw * f32(1.0 / w0)
        y_dia = f32(base) - f32(dome) * np.clip(f32(1.0) - xr * xr, 0.0, 1.0)
        inside = np.minimum(half - dxw, y_dia - Yw)
        inside[Yw <= apex] = -1.0
        lung_soft[win] = np.maximum(lung_soft[win], np.clip(inside * f32(1.0 / 0.035), 0.0, 1.0))
        lung_mask[win] |= inside > 0

    # heart: in front of the left lung's lower medial part; excluded from the lung mask
    hx, hy = ra.uniform(0.13, 0.19), ra.uniform(0.24, 0.3)
    hrx, hry = ra.uniform(0.29, 0.34), ra.uniform(0.24, 0.29)
    win = frame.rect(hx - hrx, hx + hrx, hy - hry, hy + hry)
    qx, qy = (X[win] - f32(hx)) * f32(1.0 / hrx), (Y[win] - f32(hy)) * f32(1.0 / hry)
    hq = qx * qx + qy * qy
    heart = np.clip((f32(1.0) - hq) * f32(1.0 / 0.45), 0.0, 1.0)
    lung_mask[win] &= hq > 1.0

    # lungs: darker (air), a little less dark towards the bases
    D -= lung_soft * (f32(lung_dark + 0.042) - f32(0.06) * np.clip(Y, -0.7, 0.6))
    D[win] += heart * f32(ra.uniform(0.13, 0.18))

    # hila and bronchovascular texture inside the lungs
    for side in (-1.0, 1.0):
        win = frame.rect(side * 0.17 - 0.2, side * 0.17 + 0.2, -0.4, 0.36)
        hx_, hy_ = (X[win] - f32(side * 0.17)) * f32(1 / 0.07), (Y[win] + f32(0.02)) * f32(1 / 0.12)
        D[win] += lung_soft[win] * (f32(ra.uniform(0.04, 0.08)) * np.exp(-(hx_ * hx_ + hy_ * hy_)))
    texture = _smooth_noise(ra, S, 28, coarse=12)
    texture *= lung_soft
    texture *= f32(0.012)
    D += texture

    # spine (faint behind the mediastinum) with vertebral bodies
    win = frame.rect(-0.1, 0.12, -1.2, 1.2)
    spine = np.clip((f32(0.075) - np.abs(X[win] - f32(0.01))) * f32(1 / 0.02), 0.0, 1.0)
    vert = f32(0.75) + f32(0.25) * np.cos(Y[win] * f32(2 * np.pi / ra.uniform(0.085, 0.1)))
    D[win] += spine * vert * f32(ra.uniform(0.05, 0.08))

    # ribs: a periodic family of arcs descending laterally, inside the rib cage
    spacing, offset, rib_amp = ra.uniform(0.12, 0.14), ra.uniform(0.0, 0.14), ra.uniform(0.04, 0.07)
    win = frame.rect(-0.82, 0.82, -0.8, 0.64)
    Xw, Yw = X[win], Y[win]
    aXw = np.abs(Xw)
    xr = aXw - f32(0.06)
    phase = (Yw + f32(0.12) * xr - f32(0.75) * xr * xr - f32(offset)) * f32(2 * np.pi / spacing)
    rib = np.clip((np.cos(phase) - f32(0.35)) * f32(1 / 0.65), 0.0, 1.0)
    cage = np.clip((f32(0.8) - aXw) * f32(1 / 0.08), 0.0, 1.0)
    cage *= np.clip((aXw - f32(0.07)) * f32(1 / 0.05), 0.0, 1.0)
    cage *= np.clip((Yw + f32(0.78)) * f32(1 / 0.06), 0.0, 1.0)
    cage *= np.clip((f32(0.62) - Yw) * f32(1 / 0.1), 0.0, 1.0)
    D[win] += rib * cage * f32(rib_amp)

    # clavicles
    cy0 = ra.uniform(-0.66, -0.58)
    for side in (-1.0, 1.0):
        end = (side * 0.62, cy0 - ra.uniform(0.08, 0.14))
        win = frame.rect(min(side * 0.04, end[0] - side * 0.05), max(side * 0.04, end[0] + side * 0.05), end[1] - 0.05, cy0 + 0.05)
        d = _segment_distance(X[win], Y[win], (side * 0.08, cy0), end)
        D[win] += np.clip((f32(0.035) - d) * f32(1 / 0.015), 0.0, 1.0) * f32(0.11)

    D *= body
    D += (f32(1.0) - body) * f32(0.03)

    # --- the class signal -----------------------------------------------------------------
    cname = CLASS_NAMES[class_index]
    # redraw (deterministically, from the same stream) a lesion that fell outside the
    # lung mask, e.g. behind the heart, so every diseased image carries its signal
    for _attempt in range(8):
        L = np.zeros((S, S), dtype=np.float32)

        if cname == "COVID":
            amp = rl.uniform(0.04, 0.19)
            haze = f32(0.7) + f32(0.3) * np.clip(_smooth_noise(rl, S, 20), -1, 1)
            for lung in lungs:
                for _ in range(int(rl.integers(2, 4))):
                    x, y, _half = lung_point(lung, rl.uniform(0.5, 0.9), rl.uniform(0.35, 0.85))
                    rx, ry = rl.uniform(0.09, 0.15), rl.uniform(0.1, 0.17)
                    rows, cols = frame.window(x, y, max(rx, ry))
                    q = ((X[rows, cols] - f32(x)) / f32(rx)) ** 2 + ((Y[rows, cols] - f32(y)) / f32(ry)) ** 2
                    bump = np.clip(1.0 - q, 0.0, 1.0)
                    L[rows, cols] = np.maximum(L[rows, cols], f32(amp) * bump * np.sqrt(bump) * haze[rows, cols])
        elif cname == "Lung_Opacity":
            n = 1 if rl.random() < 0.55 else 2
            for side_index in rl.permutation(2)[:n]:
                lung = lungs[int(side_index)]
                amp = rl.uniform(0.08, 0.3)
                medial = -0.4 if lung["side"] < 0 else 0.1  # the heart covers the left's medial base
                x, y, _half = lung_point(lung, rl.uniform(0.3, 0.85), rl.uniform(medial, 0.6))
                r = rl.uniform(0.08, 0.14)
                k, ph, wob = int(rl.integers(3, 6)), rl.uniform(0, 2 * np.pi), rl.uniform(0.1, 0.25)
                rows, cols = frame.window(x, y, r * (1 + wob))
                dxw, dyw = X[rows, cols] - f32(x), Y[rows, cols] - f32(y)
                theta = np.arctan2(dyw, dxw)
                reff = f32(r) * (f32(1.0) + f32(wob) * np.sin(theta * f32(k) + f32(ph)))
                q = (dxw * dxw + dyw * dyw) / (reff * reff)
                plateau = np.clip((1.0 - q) * f32(2.5), 0.0, 1.0)
                L[rows, cols] = np.maximum(L[rows, cols], f32(amp) * plateau)
        elif cname == "Viral Pneumonia":
            amp = rl.uniform(0.04, 0.17)
            for lung in lungs:
                side = lung["side"]
                xh = side * rl.uniform(0.14, 0.2)
                yh = lung["apex"] + rl.uniform(0.5, 0.62) * (lung["base"] - lung["apex"])
                R = rl.uniform(0.32, 0.45)
                k, ph, twist = int(rl.integers(8, 13)), rl.uniform(0, 2 * np.pi), rl.uniform(-5.0, 5.0)
                rows, cols = frame.window(xh, yh, R)
                dxw, dyw = (X[rows, cols] - f32(xh)) * f32(side), Y[rows, cols] - f32(yh)
                rr = np.sqrt(dxw * dxw + dyw * dyw)
                theta = np.arctan2(dyw, dxw)
                streak = np.clip((np.cos(theta * f32(k) + f32(ph) + f32(twist) * rr) - f32(0.3)) * f32(1 / 0.7), 0.0, 1.0)
                env = np.clip(1.0 - (rr / f32(R)) ** 2, 0.0, 1.0) * np.clip(rr / f32(0.05), 0.0, 1.0)
                L[rows, cols] = np.maximum(L[rows, cols], f32(amp) * streak * env)
        L *= lung_mask
        if cname == "Normal" or L.max() > 0:
            break
    lesion_mask = L > 0
    if lesion:
        if lesion_contrast != 1.0:
            L *= f32(lesion_contrast)
        D += L

    # --- acquisition: noise, blur, exposure -----------------------------------------------
    # quantum noise: uniform (cheaper to draw than normal; the blur makes it Gaussian-like)
    noise = rn.random((S, S), dtype=np.float32)
    noise -= f32(0.5)
    # smaller images average more detector pixels per pixel: less noise
    noise *= f32(rn.uniform(0.008, 0.025) * math.sqrt(12.0) * min(1.0, S / 299.0))
    D += noise
    sigma = rn.uniform(0.5, 1.3) * S / 299.0
    if sigma >= 0.3:
        D = ndimage.gaussian_filter(D, sigma=sigma, mode="nearest", truncate=3.0)
    gain, bias, gamma = rn.uniform(0.9, 1.15), rn.normal(0.0, 0.03), rn.uniform(0.85, 1.2)
    D *= f32(gain)
    D += f32(bias)
    img = np.clip(D, 0.0, 1.0, out=D)

    # --- markers (burned in after exposure, like an overlay) --------------------------------
    dot = max(1, round(S / 110))
    box = None
    if rm.random() < 0.5:
        _stamp(img, NEUTRAL_MARKER, dot, int(rm.uniform(0.03, 0.08) * S), int(rm.uniform(0.03, 0.07) * S), 0.92)
    else:
        rm.uniform(size=2)  # keep the stream aligned whatever the branch
    draw_tag = rm.random() < shortcut
    text = MARKER_TEXT[cname]
    r0 = int(rm.uniform(0.03, 0.07) * S)
    width = dot * (4 * len(text) - 1)
    c0 = S - width - int(rm.uniform(0.03, 0.08) * S)
    if draw_tag:
        box = _stamp(img, text, dot, r0, c0, 0.95)

    # gamma through a 4096-level lookup table (a power over every pixel costs more)
    levels = (img * f32(_LEVELS - 1) + f32(0.5)).astype(np.uint16)
    out = _gamma_lut(round(float(gamma), 3))[levels]
    return out, lung_mask, lesion_mask, box


_LEVELS = 4096


@lru_cache(maxsize=512)
def _gamma_lut(gamma: float) -> np.ndarray:
    x = np.arange(_LEVELS, dtype=np.float64) / (_LEVELS - 1)
    return np.floor(x**gamma * 255.0 + 0.5).astype(np.uint8)


def _stamp(img: np.ndarray, text: str, dot: int, r0: int, c0: int, value: float) -> list[int]:
    bitmap = np.repeat(np.repeat(_text_bitmap(text), dot, axis=0), dot, axis=1)
    h, w = bitmap.shape
    r0 = max(0, min(r0, img.shape[0] - h))
    c0 = max(0, min(c0, img.shape[1] - w))
    region = img[r0 : r0 + h, c0 : c0 + w]
    region[bitmap] = np.maximum(region[bitmap], np.float32(value))
    return [r0, c0, r0 + h, c0 + w]


# ---------------------------------------------------------------------------------------
# the dataset component
# ---------------------------------------------------------------------------------------
class SyntheticCXR:
    """The embedded synthetic chest X-ray dataset (``synthetic-cxr``).

    Parameters (keyword-only, stored as given, validated by ``fingerprint``/``load``):
    image_size: side of the square images (>= 16); per_class: images per class (>= 1);
    split: (train, val, test) fractions, per class, rounding as
    :mod:`bench_datasets.splitting`; seed: the generator seed; shortcut: probability
    in [0, 1] of the class-specific marker; lesion_contrast: scale of the lesions'
    intensity (> 0; 1.0 = the tuned difficulty, larger = easier, as in the demo preset).
    """

    name = NAME

    def __init__(
        self,
        *,
        image_size: int = 299,
        per_class: int = 250,
        split: tuple[float, float, float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        shortcut: float = 0.0,
        lesion_contrast: float = 1.0,
    ) -> None:
        self.image_size = image_size
        self.per_class = per_class
        self.split = split
        self.seed = seed
        self.shortcut = shortcut
        self.lesion_contrast = lesion_contrast

    def get_params(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "per_class": self.per_class,
            "split": self.split,
            "seed": self.seed,
            "shortcut": self.shortcut,
            "lesion_contrast": self.lesion_contrast,
        }

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"SyntheticCXR({params})"

    # -- validation ---------------------------------------------------------------------
    def _checked(self) -> dict[str, Any]:
        where = f"dataset {NAME!r}"

        def integer(key: str, value: Any, minimum: int) -> int:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ConfigError(f"{where}: {key!r} must be an integer >= {minimum}, got {value!r}")
            return int(value)

        contrast = self.lesion_contrast
        if isinstance(contrast, bool) or not isinstance(contrast, (int, float, np.floating, np.integer)) or not 0 < float(contrast) <= 10:
            raise ConfigError(f"{where}: 'lesion_contrast' must be a number in (0, 10], got {contrast!r}")
        contrast = float(contrast)
        shortcut = self.shortcut
        if isinstance(shortcut, bool) or not isinstance(shortcut, (int, float, np.floating, np.integer)):
            raise ConfigError(f"{where}: 'shortcut' must be a number in [0, 1], got {shortcut!r}")
        if not 0.0 <= float(shortcut) <= 1.0:
            raise ConfigError(f"{where}: 'shortcut' must be in [0, 1], got {shortcut!r}")
        return {
            "image_size": integer("image_size", self.image_size, 16),
            "per_class": integer("per_class", self.per_class, 1),
            "split": list(check_fractions(self.split, where=where)),
            "seed": integer("seed", self.seed, 0),
            "shortcut": float(shortcut),
            "lesion_contrast": contrast,
        }

    def validate(self) -> None:
        """Check the parameters (the harness calls this at plan time); ConfigError if bad."""
        self._checked()

    def image_shape(self) -> tuple[int, int]:
        """(H, W) of the images, known without drawing any (the plan checks the grid with it)."""
        side = self._checked()["image_size"]
        return (side, side)

    def fingerprint(self) -> str:
        """Hash of the generator version and parameters (no image is drawn)."""
        return fingerprint_of({"dataset": NAME, "generator_version": GENERATOR_VERSION, **self._checked()})

    def split_sizes(self) -> dict[str, int]:
        """``{"train": n, "val": n, "test": n}``: the images of each split ``load()`` draws, from
        the same split of the same labels (no image is drawn)."""
        _, _, parts = _split_plan(self._checked())
        return {name: int(len(parts[name])) for name in SPLIT_NAMES}

    # -- generation -------------------------------------------------------------------------
    def load(self) -> DatasetSplits:
        p = self._checked()
        S = p["image_size"]
        labels, index, parts = _split_plan(p)

        splits: dict[str, Split] = {}
        markers: dict[str, list[int]] = {}
        for split_name in SPLIT_NAMES:
            idx = parts[split_name]
            m = len(idx)
            images = np.empty((m, S, S), dtype=np.uint8)
            lung = np.empty((m, S, S), dtype=bool)
            lesion = np.empty((m, S, S), dtype=bool)
            ids = np.array([image_id(CLASS_NAMES[labels[i]], int(index[i])) for i in idx], dtype=str)

            def work(j: int, *, _idx: np.ndarray = idx, _images=images, _lung=lung, _lesion=lesion, _ids=ids) -> None:
                i = _idx[j]
                img, lm, les, box = render(
                    p["seed"], int(labels[i]), int(index[i]), S, p["shortcut"],
                    lesion_contrast=p["lesion_contrast"],
                )
                _images[j], _lung[j], _lesion[j] = img, lm, les
                if box is not None:
                    markers[str(_ids[j])] = box

            _run_parallel(work, m)
            splits[split_name] = Split(
                images=images,
                labels=labels[idx].copy(),
                ids=ids if m else np.zeros(0, dtype="<U1"),
                masks={"lesion": lesion, "lung": lung},
            )

        metadata = {
            "generator": {"name": NAME, "version": GENERATOR_VERSION, **p},
            "marker_text": dict(MARKER_TEXT),
            "neutral_marker": NEUTRAL_MARKER,
            "marker_boxes": dict(sorted(markers.items())),
            "files": {s: splits[s].ids.tolist() for s in SPLIT_NAMES},
            "positive_classes": list(DISEASE_CLASSES),
        }
        return DatasetSplits(
            name=NAME,
            class_names=CLASS_NAMES,
            train=splits["train"],
            val=splits["val"],
            test=splits["test"],
            fingerprint=self.fingerprint(),
            metadata=metadata,
        )


def _split_plan(p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Every image's class and index within its class, and each split's rows (checked params ``p``)."""
    n = p["per_class"]
    labels = np.repeat(np.arange(len(CLASS_NAMES), dtype=np.int64), n)
    index = np.tile(np.arange(n, dtype=np.int64), len(CLASS_NAMES))
    parts = stratified_split(labels, p["split"], np.random.SeedSequence([p["seed"], 7_777_777]))
    return labels, index, parts


def _run_parallel(work: Any, n: int) -> None:
    workers = min(os.cpu_count() or 1, 8)
    if workers <= 1 or n < 16:
        for j in range(n):
            work(j)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # list() re-raises the first worker exception here
        list(pool.map(work, range(n)))
