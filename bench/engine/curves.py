"""The streaming AOPC engine.

``evaluate_aopc(model, images, targets, heatmaps)`` orders the regions of each
image by its heatmap (MoRF by default), perturbs them one after another with a
perturbation plugin and records ``f(x^(k))``, the model's probability of the
target class, for k = 0..L. AOPC (Samek et al.; the reference study) is

    per_image = sum_{k=1..L} (f(x^(0)) - f(x^(k))) / (L + 1),   aopc = mean(per_image).

It streams (image, step) pairs: each batch holds ``batch_size`` pairs taken
across images and steps, built on the fly from the original (uint8 or float)
image and the union mask of its first k regions, so memory is bounded by the
batch size whatever N is, and every model call is a full batch. The batch
after the current one is built in a background thread while the model runs.

The perturbation of image i is seeded by ``derive_seed(seed, ids[i])``, never
by its position, batch or worker: results do not depend on ``batch_size``
(beyond the model's float rounding), and permuting the images permutes the
per-image results. The model is only ever called through a
:class:`bench.engine.forward.ForwardStrategy` (the seam for incremental inference).

Orders. ``morf``, ``lerf`` and ``random`` delete: the perturbed set at step k is the
union of the first k regions. ``insertion`` (Petsiuk et al. 2018) is the *complement
mask* of MoRF: the perturbed set at step k is every region but the k most relevant ones,
so ``x^(0)`` is the fully perturbed image and ``x^(L)`` the original, regions restored
in MoRF order. It is the same stream of (image, step) pairs, only the mask differs.

Locality. A perturbation declares ``mask_local`` (only masked pixels change) and
``step_local`` (step k changes only region r_k; :class:`bench.PerturbationSpec`). The
batch's ``changed_box`` is r_k only where both hold; otherwise it is the bounding box of
everything perturbed at step k-1 or k (a non-step-local perturbation, such as an
imputation from the unmasked neighbours, changes every perturbed pixel at every step),
and the forward strategy is told the steps are not local (``prepare(mask_local=False)``:
``auto`` then runs full passes and records why).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import to_model_input
from bench.engine.forward import ForwardBatch
from bench.engine.regions import (
    check_heatmaps,
    check_ids,
    count_ties,
    derive_seeds,
    grid_shape,
    rank_of_regions,
    region_boxes,
    region_labels,
    region_order,
    region_scores,
)
from bench.engine.strategies import get_strategy, strategy_name
from bench.errors import ComponentOutputError, ConfigError, DataError, did_you_mean
from bench.plugin.specs import CURVE_ORDERS
from bench.stats import bootstrap_ci

DEFAULT_BATCH_SIZE = 64
RESULT_SCHEMA = 1
#: The complement-mask order: regions restored in MoRF order into the fully perturbed image.
INSERTION = "insertion"
#: The region ranking each curve order follows (insertion restores the MoRF order).
RANKING: dict[str, str] = {o: o for o in CURVE_ORDERS if o != INSERTION} | {INSERTION: "morf"}


def aopc_from_curves(curves: Any) -> np.ndarray:
    """Per-image AOPC (N,) from curves (N, L+1): ``sum_{k>=1} (c_0 - c_k) / (L+1)``."""
    c = np.asarray(curves, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] < 2:
        raise ValueError(f"curves must be (N, L+1) with L >= 1, got shape {c.shape}")
    return (c[:, :1] - c[:, 1:]).sum(axis=1) / c.shape[1]


@dataclass
class AOPCResult:
    """What :func:`evaluate_aopc` returns.

    curves: float32 (N, L+1), ``f(x^(k))``; per_image: float64 (N,); aopc: their
    mean; ci: its bootstrap interval; order: int (N, L), region indices in
    perturbation order; n: number of images.
    """

    curves: np.ndarray
    per_image: np.ndarray
    aopc: float
    ci: tuple[float, float]
    order: np.ndarray
    n: int
    grid: tuple[int, int]
    order_name: str
    seed: int
    strategy: str
    forward_passes: int
    seconds: float
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    targets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ties: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    perturbation: str = ""
    perturbation_params: dict[str, Any] = field(default_factory=dict)
    batch_size: int = DEFAULT_BATCH_SIZE
    image_shape: tuple[int, int] = (0, 0)
    confidence: float = 0.95
    strategy_info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_regions(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def passes_per_second(self) -> float:
        return self.forward_passes / self.seconds if self.seconds > 0 else float("nan")

    @property
    def mean_curve(self) -> np.ndarray:
        """float64 (L+1,): the mean curve over images (the study's "AOPC graph")."""
        if self.n == 0:
            return np.full(self.n_regions + 1, np.nan)
        return self.curves.astype(np.float64).mean(axis=0)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able summary (no per-image arrays; see :meth:`arrays`)."""
        return {
            "schema": RESULT_SCHEMA,
            "aopc": self.aopc,
            "ci": [self.ci[0], self.ci[1]],
            "confidence": self.confidence,
            "n": self.n,
            "grid": list(self.grid),
            "n_regions": self.n_regions,
            "order": self.order_name,
            "seed": self.seed,
            "strategy": self.strategy,
            "strategy_info": dict(self.strategy_info),
            "perturbation": self.perturbation,
            "perturbation_params": dict(self.perturbation_params),
            "batch_size": self.batch_size,
            "image_shape": list(self.image_shape),
            "forward_passes": self.forward_passes,
            "seconds": self.seconds,
            "passes_per_second": self.passes_per_second,
            "images_with_ties": int((self.ties > 0).sum()) if self.ties.size else 0,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-image arrays, for NPZ (``allow_pickle=False``-safe: ids as str)."""
        return {
            "curves": self.curves,
            "per_image": self.per_image,
            "order": self.order,
            "ids": np.asarray([str(i) for i in self.ids], dtype=str)
            if self.ids.dtype == object
            else self.ids,
            "targets": self.targets,
            "ties": self.ties,
        }

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.json`` (summary) and ``<path>.npz`` (arrays), atomically."""
        from bench.pipeline.store import write_json, write_npz

        base = Path(path)
        jpath, npath = base.with_suffix(".json"), base.with_suffix(".npz")
        write_npz(npath, **self.arrays())
        write_json(jpath, self.to_dict())
        return jpath, npath

    @classmethod
    def from_saved(cls, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> AOPCResult:
        """Rebuild a result from :meth:`to_dict` and :meth:`arrays` output."""
        return cls(
            curves=np.asarray(arrays["curves"]),
            per_image=np.asarray(arrays["per_image"]),
            aopc=float(summary["aopc"]),
            ci=(float(summary["ci"][0]), float(summary["ci"][1])),
            order=np.asarray(arrays["order"]),
            n=int(summary["n"]),
            grid=(int(summary["grid"][0]), int(summary["grid"][1])),
            order_name=str(summary["order"]),
            seed=int(summary["seed"]),
            strategy=str(summary["strategy"]),
            forward_passes=int(summary["forward_passes"]),
            seconds=float(summary["seconds"]),
            ids=np.asarray(arrays.get("ids", np.zeros(0, np.int64))),
            targets=np.asarray(arrays.get("targets", np.zeros(0, np.int64))),
            ties=np.asarray(arrays.get("ties", np.zeros(0, np.int64))),
            perturbation=str(summary.get("perturbation", "")),
            perturbation_params=dict(summary.get("perturbation_params", {})),
            batch_size=int(summary.get("batch_size", DEFAULT_BATCH_SIZE)),
            image_shape=tuple(summary.get("image_shape", (0, 0))),  # type: ignore[arg-type]
            confidence=float(summary.get("confidence", 0.95)),
            strategy_info=dict(summary.get("strategy_info", {})),
        )

    @classmethod
    def load(cls, path: str | Path) -> AOPCResult:
        from bench.pipeline.store import read_json, read_npz

        base = Path(path)
        return cls.from_saved(read_json(base.with_suffix(".json")), read_npz(base.with_suffix(".npz")))


# ---- inputs --------------------------------------------------------------------------------
def _check_images(images: Any) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
        raise DataError(
            f"images must be uint8 (N, H, W) or float (N, H, W, 3) in [0, 1], got shape {x.shape}"
        )
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating):
            raise DataError(f"images must be uint8 or float in [0, 1], got dtype {x.dtype}")
        if x.size:
            lo, hi = float(np.min(x)), float(np.max(x))
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise DataError("images contain NaN or inf")
            if lo < -1e-6 or hi > 1.0 + 1e-6:
                raise DataError(
                    f"float images must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
                    "(pass uint8 images, or divide by 255)"
                )
    return x


def _check_targets(targets: Any, n: int, num_classes: int) -> np.ndarray:
    t = np.asarray(targets)
    if t.shape != (n,):
        raise DataError(f"targets must be int (N,) = ({n},), got shape {t.shape}")
    if n and not np.issubdtype(t.dtype, np.integer):
        if np.issubdtype(t.dtype, np.floating) and np.all(t == np.round(t)):
            t = t.astype(np.int64)
        else:
            raise DataError(f"targets must be integer class indices, got dtype {t.dtype}")
    t = t.astype(np.int64)
    if n and (t.min() < 0 or t.max() >= num_classes):
        raise DataError(f"targets must be class indices in [0, {num_classes}), got [{t.min()}, {t.max()}]")
    return t


def resolve_perturbation(perturbation: Any) -> tuple[Any, str, bool]:
    """(object with perturb(), display name, mask_local) from a registered name or an object."""
    if isinstance(perturbation, str):
        from bench.plugin.registry import create, registry

        entry = registry().get("perturbation", perturbation)
        return create("perturbation", perturbation), perturbation, bool(getattr(entry.spec, "mask_local", True))
    if not callable(getattr(perturbation, "perturb", None)):
        raise ConfigError(
            "perturbation must be a registered name or an object with "
            f"perturb(images, masks, seeds), got {type(perturbation).__name__}"
        )
    name = getattr(perturbation, "name", None) or type(perturbation).__name__
    return perturbation, str(name), bool(getattr(perturbation, "mask_local", False))


def _registered_spec(obj: Any) -> Any:
    """The registered perturbation spec whose factory is ``obj``'s class (None: not registered)."""
    from bench.plugin.registry import registry

    cls = type(obj)
    reference = f"{cls.__module__}:{cls.__qualname__}"
    for entry in registry()["perturbation"].values():
        factory = entry.spec.factory
        if factory is cls or (isinstance(factory, str) and factory == reference):
            return entry.spec
    return None


def perturbation_locality(perturbation: Any) -> tuple[bool, bool]:
    """``(mask_local, step_local)`` a perturbation declares (see :class:`bench.PerturbationSpec`).

    A registered name: its spec's flags. An object: its ``mask_local`` / ``step_local``
    attributes, else those of the registered spec whose factory is its class, else
    ``mask_local=False`` and ``step_local`` as ``mask_local``. ``step_local`` is never True
    where ``mask_local`` is False.
    """
    spec: Any = None
    if isinstance(perturbation, str):
        from bench.plugin.registry import registry

        spec = registry().get("perturbation", perturbation).spec
        mask_local = bool(getattr(spec, "mask_local", True))
        step_local = getattr(spec, "step_local", None)
    else:
        mask_local_attr = getattr(perturbation, "mask_local", None)
        step_local = getattr(perturbation, "step_local", None)
        if mask_local_attr is None or step_local is None:
            spec = _registered_spec(perturbation)
        if mask_local_attr is None:
            mask_local_attr = getattr(spec, "mask_local", False) if spec is not None else False
        if step_local is None and spec is not None:
            step_local = getattr(spec, "step_local", None)
        mask_local = bool(mask_local_attr)
    step = mask_local if step_local is None else bool(step_local)
    return mask_local, bool(step and mask_local)


def _params_of(obj: Any) -> dict[str, Any]:
    get = getattr(obj, "get_params", None)
    if callable(get):
        try:
            return dict(get())
        except Exception:  # noqa: BLE001 - provenance only
            return {}
    return {}


def check_perturbed(out: Any, expected_shape: tuple[int, ...], name: str) -> np.ndarray:
    """A perturbation's output as float32, or a :class:`ComponentOutputError` naming it."""
    if not isinstance(out, np.ndarray):
        try:
            out = np.asarray(out)
        except Exception as exc:  # noqa: BLE001
            raise ComponentOutputError(
                f"perturbation {name!r} returned {type(out).__name__}, expected a float32 array"
            ) from exc
    if out.shape != tuple(expected_shape):
        raise ComponentOutputError(
            f"perturbation {name!r} returned shape {out.shape}, expected {tuple(expected_shape)}"
        )
    if not np.issubdtype(out.dtype, np.floating):
        raise ComponentOutputError(f"perturbation {name!r} returned dtype {out.dtype}, expected float32")
    out = out.astype(np.float32, copy=False)
    # a sum is finite unless a value is NaN/inf (or the sum overflows: then check exactly)
    if not np.isfinite(np.sum(out)) and not np.isfinite(out).all():
        raise ComponentOutputError(f"perturbation {name!r} returned NaN or inf values")
    return out


def _check_probs(probs: Any, b: int, num_classes: int, where: str) -> np.ndarray:
    p = np.asarray(probs)
    if p.shape != (b, num_classes):
        raise ComponentOutputError(f"{where} returned shape {p.shape}, expected ({b}, {num_classes})")
    if not np.isfinite(p).all():
        raise ComponentOutputError(f"{where} returned NaN or inf probabilities")
    return p


# ---- the engine ----------------------------------------------------------------------------
@dataclass
class _Plan:
    images: np.ndarray
    targets: np.ndarray
    seeds: np.ndarray
    order: np.ndarray
    rank: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    perturb: Any
    perturbation_name: str
    n_steps: int  # L + 1
    #: insertion: the perturbed set is the complement of the first k regions
    complement: bool = False
    #: step k changes only region r_k (mask- and step-local perturbation)
    local_steps: bool = True
    #: (N, L, 4): per image and step k (index k-1), the bounding box of the pixels that may
    #: change between x^(k-1) and x^(k) when the steps are not local
    union_boxes: np.ndarray | None = None


def _union_boxes(order: np.ndarray, boxes: np.ndarray, complement: bool) -> np.ndarray:
    """int (N, L, 4): at index k-1 the bounding box of the regions perturbed at step k-1 or k.

    Deletion: the first k regions (the mask only grows); insertion: regions k-1.. L-1 (the
    mask only shrinks: everything still perturbed at step k-1).
    """
    b = boxes[order]  # (N, L, 4) in perturbation order
    if complement:
        b = b[:, ::-1]
    lo = np.minimum.accumulate(b[..., [0, 2]], axis=1)
    hi = np.maximum.accumulate(b[..., [1, 3]], axis=1)
    out = np.stack([lo[..., 0], hi[..., 0], lo[..., 1], hi[..., 1]], axis=-1)
    return out[:, ::-1] if complement else out


def _build_batch(plan: _Plan, img: np.ndarray, k: np.ndarray) -> ForwardBatch:
    """The pairs ``(img[j], k[j])`` (``img`` non-decreasing: each image's rows contiguous) as one batch."""
    steps = plan.n_steps
    i0, i1 = int(img[0]), int(img[-1]) + 1
    x0 = to_model_input(plan.images[i0:i1])  # originals of the images in this batch only
    local = img - i0
    originals = x0[local]  # (B, H, W, 3), one copy
    masks = np.empty(originals.shape[:3], dtype=bool)
    # rows of one image are contiguous: compare its rank map with each row's k, no gathers
    cuts = np.searchsorted(local, np.arange(i1 - i0 + 1))
    compare = np.greater_equal if plan.complement else np.less
    for j in range(i1 - i0):
        rows = slice(int(cuts[j]), int(cuts[j + 1]))
        if rows.start == rows.stop:
            continue
        rank_map = plan.rank[i0 + j][plan.labels]  # (H, W): position of each pixel's region
        compare(rank_map[None], k[rows, None, None], out=masks[rows])
    out = plan.perturb(originals, masks, plan.seeds[img])
    xk = check_perturbed(out, originals.shape, plan.perturbation_name)
    if not xk.flags.writeable:
        xk = xk.copy()
    # the step with nothing perturbed is the original image, whatever the perturbation does
    # to empty masks: x^(0) of a deletion curve, x^(L) of an insertion curve
    clean = np.flatnonzero(k == (steps - 1 if plan.complement else 0))
    if clean.size:
        xk[clean] = x0[local[clean]]
    boxes = np.zeros((len(img), 4), dtype=np.int64)
    sel = k > 0
    if plan.local_steps or plan.union_boxes is None:
        boxes[sel] = plan.boxes[plan.order[img[sel], k[sel] - 1]]  # r_k: deleted or restored at step k
    else:
        boxes[sel] = plan.union_boxes[img[sel], k[sel] - 1]
    return ForwardBatch(images=xk, image_index=img, step=k, changed_box=boxes, targets=plan.targets[img])


def batch_schedule(n_images: int, n_steps: int, batch_size: int, lockstep_images: int = 1) -> list[
        tuple[np.ndarray, np.ndarray]]:
    """The (image index, step) rows of every batch, in the order the engine sends them.

    ``lockstep_images`` = 1: image-major (image 0 steps 0..L, image 1 ..., a batch may span images).
    ``g`` > 1: images in groups of ``g``; each batch holds the same block of consecutive steps of
    every image of its group (image-major inside the batch), the blocks balanced so that batches
    are about equal and at most ``batch_size`` rows: an incremental strategy then updates ``g``
    images' steps together and gives their step-0 rows one batched full pass.
    """
    bs = max(1, int(batch_size))
    g = max(1, min(int(lockstep_images), bs, max(n_images, 1)))
    total = n_images * n_steps
    if g == 1:
        pairs = [np.arange(s, min(s + bs, total)) for s in range(0, total, bs)]
        return [(p // n_steps, p % n_steps) for p in pairs]
    out = []
    for i0 in range(0, n_images, g):
        imgs = np.arange(i0, min(i0 + g, n_images))
        blocks = -(-n_steps * len(imgs) // bs)
        per = max(1, min(-(-n_steps // blocks), bs // len(imgs)))
        for k0 in range(0, n_steps, per):
            ks = np.arange(k0, min(k0 + per, n_steps))
            out.append((np.repeat(imgs, len(ks)), np.tile(ks, len(imgs))))
    return out


def _batches(plan: _Plan, schedule: list[tuple[np.ndarray, np.ndarray]], prefetch: bool) -> Iterator[ForwardBatch]:
    if not prefetch or len(schedule) < 2:
        for img, k in schedule:
            yield _build_batch(plan, img, k)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-aopc") as pool:
        future = pool.submit(_build_batch, plan, *schedule[0])
        for nxt in schedule[1:]:
            batch = future.result()
            future = pool.submit(_build_batch, plan, *nxt)
            yield batch
        yield future.result()


def evaluate_aopc(
    model: Any,
    images: Any,
    targets: Any,
    heatmaps: Any,
    *,
    perturbation: Any = "gaussian-noise",
    grid: Any = 9,
    order: str = "morf",
    seed: int = 0,
    ids: Any = None,
    batch_size: int | None = None,
    progress: bool = False,
    strategy: Any = "auto",
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    prefetch: bool = True,
    mask_local: bool | None = None,
    step_local: bool | None = None,
) -> AOPCResult:
    """AOPC of ``heatmaps`` for ``model`` on ``images``, streamed in batches.

    model: a bench model or a plain ``keras.Model`` ending in a softmax.
    images: uint8 (N, H, W) or float (N, H, W, 3) in [0, 1].
    targets: int (N,), the explained class per image (``None``: the predicted class).
    heatmaps: (N, h, w), any h, w (``None`` only with ``order="random"``).
    perturbation: a registered name or an object with ``perturb(images, masks, seeds)``.
    grid: int or (rows, cols); order: ``"morf"``, ``"lerf"``, ``"random"`` (deletion) or
        ``"insertion"`` (the complement mask of MoRF: see the module docs).
    ids: per-image ids keying the noise and the tie-breaks (default ``0..N-1``).
    batch_size: (image, step) pairs per model call (default 64).
    strategy: ``"auto"`` (the default, as in a run's ``aopc.strategy``: exact incremental
        inference where the model's graph can be walked and the cost model predicts a gain,
        full batched passes otherwise), ``"full"``, ``"incremental"`` or a
        :class:`bench.engine.forward.ForwardStrategy` (the strategy used, and why, is in
        ``result.strategy`` and ``result.strategy_info``).
    mask_local, step_local: what the perturbation declares (its :class:`bench.PerturbationSpec`'s
        flags; ``None``: :func:`perturbation_locality`). The steps are streamed as local (one
        region changes per step) only where both are true.
    """
    from bench.models import as_bench_model

    started = time.perf_counter()
    bm = as_bench_model(model)
    x = _check_images(images)
    n = len(x)
    h, w = int(x.shape[1]), int(x.shape[2])
    rows, cols = grid_shape(grid)
    n_regions = rows * cols
    if rows > h or cols > w:
        raise ConfigError(f"grid {rows}x{cols} is larger than the images ({h}x{w})")
    bs = DEFAULT_BATCH_SIZE if batch_size is None else int(batch_size)
    if bs < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
    ids_arr = check_ids(ids, n)
    num_classes = int(bm.num_classes)

    order_name = str(order).lower()
    if order_name not in RANKING:
        raise ConfigError(
            f"unknown order {order!r}{did_you_mean(order_name, list(RANKING))}; orders: {', '.join(RANKING)}"
        )
    complement = order_name == INSERTION
    fwd = get_strategy(strategy)
    pert, pert_name, _ = resolve_perturbation(perturbation)
    declared_mask, declared_step = perturbation_locality(perturbation)
    is_mask_local = declared_mask if mask_local is None else bool(mask_local)
    is_step_local = (declared_step if step_local is None else bool(step_local)) and is_mask_local
    fwd.prepare(bm, batch_size=bs, image_shape=(h, w, 3), mask_local=is_mask_local and is_step_local)

    if targets is None:
        targets = _predict_classes(fwd, x, bs, num_classes)
    t = _check_targets(targets, n, num_classes)

    ranking = RANKING[order_name]
    if heatmaps is None:
        if ranking != "random":
            raise ConfigError(f"heatmaps are required for order {order!r}")
        scores = np.zeros((n, n_regions))
    else:
        hm = check_heatmaps(heatmaps, n)
        scores = region_scores(hm, (h, w), (rows, cols))
    region_order_ = region_order(scores, ranking, seed=seed, ids=ids_arr)
    ties = count_ties(scores) if ranking != "random" else np.zeros(n, np.int64)
    boxes = region_boxes((h, w), (rows, cols))
    local_steps = is_mask_local and is_step_local

    plan = _Plan(
        images=x,
        targets=t,
        seeds=derive_seeds(seed, ids_arr, "perturbation"),
        order=region_order_,
        rank=rank_of_regions(region_order_).astype(np.int32),
        labels=region_labels((h, w), (rows, cols)),
        boxes=boxes,
        perturb=pert.perturb,
        perturbation_name=pert_name,
        n_steps=n_regions + 1,
        complement=complement,
        local_steps=local_steps,
        union_boxes=None if local_steps else _union_boxes(region_order_, boxes, complement),
    )
    total = n * (n_regions + 1)
    curves = np.zeros((n, n_regions + 1), dtype=np.float32)
    where = f"forward strategy {strategy_name(fwd)!r} on model {getattr(bm, 'name', '?')!r}"

    bar = None
    if progress and total:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"curves {order_name}", unit="pass")
    try:
        group = int(getattr(fwd, "lockstep_images", 1) or 1)
        for batch in _batches(plan, batch_schedule(n, n_regions + 1, bs, group), prefetch):
            probs = _check_probs(fwd.forward(batch), len(batch), num_classes, where)
            curves[batch.image_index, batch.step] = probs[np.arange(len(batch)), batch.targets]
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()

    if n:
        per_image = aopc_from_curves(curves)
        aopc = float(per_image.mean())
        ci = bootstrap_ci(per_image, confidence=confidence, n_resamples=n_resamples, seed=seed)
    else:
        per_image = np.zeros(0)
        aopc, ci = float("nan"), (float("nan"), float("nan"))
    return AOPCResult(
        curves=curves,
        per_image=per_image,
        aopc=aopc,
        ci=ci,
        order=region_order_,
        n=n,
        grid=(rows, cols),
        order_name=order_name,
        seed=int(seed),
        strategy=strategy_name(fwd),
        forward_passes=total,
        seconds=time.perf_counter() - started,
        ids=ids_arr,
        targets=t,
        ties=ties,
        perturbation=pert_name,
        perturbation_params=_params_of(pert),
        batch_size=bs,
        image_shape=(h, w),
        confidence=confidence,
        strategy_info=_locality_info(dict(getattr(fwd, "info", None) or {}), is_mask_local, is_step_local),
    )


def _locality_info(info: dict[str, Any], mask_local: bool, step_local: bool) -> dict[str, Any]:
    """The strategy's info, saying so where the steps were not local because of ``step_local``."""
    if mask_local and not step_local:
        info["step_local"] = False
        why = ("the perturbation is not step-local (step_local=False): each step changes every perturbed "
               "pixel, not only the new region")
        if info.get("used") == "full" and "mask_local" in str(info.get("reason", "")):
            info["reason"] = why
        if "mask_local" in str(info.get("note", "")):
            info["note"] = "step_local=False: changed boxes are taken from the actual pixel differences"
    return info


def _predict_classes(fwd: Any, x: np.ndarray, batch_size: int, num_classes: int) -> np.ndarray:
    out = np.zeros(len(x), dtype=np.int64)
    for s in range(0, len(x), batch_size):
        e = min(s + batch_size, len(x))
        idx = np.arange(s, e)
        batch = ForwardBatch(
            images=to_model_input(x[s:e]),
            image_index=idx,
            step=np.zeros(e - s, np.int64),
            changed_box=np.zeros((e - s, 4), np.int64),
            targets=np.zeros(e - s, np.int64),
        )
        probs = _check_probs(fwd.forward(batch), e - s, num_classes, "forward strategy")
        out[s:e] = probs.argmax(axis=1)
    return out


def correctly_classified(
    model: Any, images: Any, labels: Any, *, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the correctly classified images, their predicted classes).

    The study evaluates AOPC on these, explaining the predicted class.
    """
    from bench.models import as_bench_model

    bm = as_bench_model(model)
    probs = bm.predict_proba(np.asarray(images), batch_size=batch_size)
    pred = probs.argmax(axis=1).astype(np.int64)
    idx = np.flatnonzero(pred == np.asarray(labels))
    return idx, pred[idx]
