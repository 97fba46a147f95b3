"""Run an explainer over a set of images, in batches, and validate what it returns.

``compute_heatmaps(explainer, model, images, targets)`` converts each batch to
the model's input form (float32 (B, H, W, 3) in [0, 1]) with
:func:`bench.data.to_model_input` (never the whole set as float32), passes
``ids=`` only to explainers whose ``explain`` accepts it, passes ``masks=`` (each
mask sliced to the batch, aligned with its images) when masks are given (the run
gives the masks the explainer's spec declares), and checks every
batch's output: a wrong ndim, shape, count, dtype or a NaN/inf raises
:class:`bench.errors.ComponentOutputError` naming the explainer and the batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np

from bench.data import to_model_input
from bench.engine.regions import check_ids
from bench.errors import ComponentOutputError, ConfigError, DataError, PluginError


def accepts_keyword(func: Any, name: str) -> bool:
    """Whether ``func`` takes a keyword argument ``name`` (or ``**kwargs``)."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            return True
        if p.name == name and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            return True
    return False


def check_explainer_output(
    out: Any, n: int, *, name: str, where: str = "", hw: tuple[int, int] | None = None
) -> np.ndarray:
    """An explainer's output for ``n`` images as float32 (n, h, w), or a clear error."""
    loc = f" ({where})" if where else ""
    if hasattr(out, "numpy") and not isinstance(out, np.ndarray):
        out = out.numpy()
    try:
        hm = np.asarray(out)
    except Exception as exc:  # noqa: BLE001
        raise ComponentOutputError(
            f"explainer {name!r}{loc} returned {type(out).__name__}, expected a float32 array (N, h, w)"
        ) from exc
    if hm.dtype == object:
        raise ComponentOutputError(
            f"explainer {name!r}{loc} returned an object array, expected float32 (N, h, w)"
        )
    if hm.ndim != 3:
        raise ComponentOutputError(
            f"explainer {name!r}{loc} returned {hm.ndim}-D heatmaps of shape {hm.shape}, expected (N, h, w)"
        )
    if len(hm) != n:
        raise ComponentOutputError(f"explainer {name!r}{loc} returned {len(hm)} heatmaps for {n} images")
    if hm.shape[1] < 1 or hm.shape[2] < 1:
        raise ComponentOutputError(f"explainer {name!r}{loc} returned empty heatmaps of shape {hm.shape}")
    if hw is not None and tuple(hm.shape[1:]) != hw:
        raise ComponentOutputError(
            f"explainer {name!r}{loc} returned heatmaps of size {hm.shape[1:]} after {hw} for earlier "
            "images; every heatmap of a run must have the same size"
        )
    if not np.issubdtype(hm.dtype, np.floating):
        raise ComponentOutputError(
            f"explainer {name!r}{loc} returned dtype {hm.dtype}, expected float32 heatmaps"
        )
    hm = hm.astype(np.float32, copy=False)
    finite = np.isfinite(hm)
    if not finite.all():
        bad = np.flatnonzero(~finite.reshape(n, -1).all(axis=1))
        raise ComponentOutputError(
            f"explainer {name!r}{loc} returned NaN or inf values in {len(bad)} heatmap(s) "
            f"(first: image {int(bad[0])} of the batch)"
        )
    return hm


def check_masks(
    masks: Mapping[str, Any] | None, n: int, hw: tuple[int, ...], *, name: str = "explainer"
) -> dict[str, np.ndarray] | None:
    """``masks`` as ``{name: bool (n, H, W)}`` aligned with ``n`` images of size ``hw``, or None."""
    if masks is None:
        return None
    if not isinstance(masks, Mapping):
        raise DataError(f"masks for explainer {name!r} must be a mapping name -> bool (N, H, W), "
                        f"got {type(masks).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, value in masks.items():
        m = np.asarray(value)
        if m.dtype != np.bool_ or m.shape != (n, *tuple(hw)[:2]):
            raise DataError(
                f"mask {key!r} for explainer {name!r} must be bool {(n, *tuple(hw)[:2])} like the images, "
                f"got {m.dtype} {m.shape}"
            )
        out[str(key)] = m
    return out


def _resolve_explainer(explainer: Any, name: str) -> tuple[Any, str]:
    if isinstance(explainer, str):
        from bench.plugin.registry import create

        return create("explainer", explainer), explainer if name == "explainer" else name
    if not callable(getattr(explainer, "explain", None)):
        raise ConfigError(
            f"explainer {name!r} must have explain(model, images, targets), got {type(explainer).__name__}"
        )
    return explainer, name


def compute_heatmaps(
    explainer: Any,
    model: Any,
    images: Any,
    targets: Any,
    *,
    ids: Any = None,
    masks: Mapping[str, Any] | None = None,
    batch_size: int = 32,
    progress: bool = False,
    name: str = "explainer",
) -> np.ndarray:
    """Heatmaps float32 (N, h, w) of ``explainer`` for ``images`` and ``targets``.

    explainer: an object with ``explain(model, images, targets[, ids=])`` or a
        registered explainer name.
    model: a bench model or a plain ``keras.Model`` (wrapped with
        :func:`bench.models.as_bench_model`).
    images: uint8 (N, H, W) / (N, H, W, C) or float in [0, 1]; converted per batch.
    targets: int (N,), the class to explain per image.
    ids: per-image ids passed to explainers that accept ``ids`` (default ``0..N-1``).
    masks: name -> bool (N, H, W), aligned with ``images``; when given, each batch's
        explain call gets ``masks={name: mask[batch]}`` (the explainer must accept a
        ``masks`` keyword). A run passes the masks the explainer's spec declares
        (:attr:`bench.ExplainerSpec.masks`).
    """
    from bench.models import as_bench_model

    expl, name = _resolve_explainer(explainer, name)
    bm = as_bench_model(model)
    x = np.asarray(images)
    n = len(x)
    t = np.asarray(targets)
    if t.shape != (n,):
        raise DataError(f"targets must be (N,) = ({n},), got shape {t.shape}")
    t = t.astype(np.int64)
    ids_arr = check_ids(ids, n)
    bs = int(batch_size)
    if bs < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
    pass_ids = accepts_keyword(expl.explain, "ids")
    mask_arrays = check_masks(masks, n, x.shape[1:3], name=name)
    if mask_arrays is not None and not accepts_keyword(expl.explain, "masks"):
        raise PluginError(
            f"explainer {name!r} declares the dataset masks {', '.join(map(repr, mask_arrays))} "
            f"(ExplainerSpec.masks), but its explain() takes no masks keyword: "
            "def explain(self, model, images, targets, *, masks=None)"
        )

    out: np.ndarray | None = None
    bar = None
    if progress and n:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"explain {name}", unit="img")
    try:
        for start in range(0, n, bs):
            stop = min(start + bs, n)
            xb = to_model_input(x[start:stop])
            kwargs: dict[str, Any] = {"ids": ids_arr[start:stop]} if pass_ids else {}
            if mask_arrays is not None:
                kwargs["masks"] = {k: v[start:stop] for k, v in mask_arrays.items()}
            try:
                raw = expl.explain(bm, xb, t[start:stop], **kwargs)
            except ComponentOutputError:
                raise
            except Exception as exc:
                exc.add_note(f"in explainer {name!r}, images {start}:{stop}")
                raise
            hm = check_explainer_output(
                raw,
                stop - start,
                name=name,
                where=f"images {start}:{stop}",
                hw=None if out is None else (out.shape[1], out.shape[2]),
            )
            if out is None:
                out = np.empty((n, hm.shape[1], hm.shape[2]), dtype=np.float32)
            out[start:stop] = hm
            if bar is not None:
                bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()
    if out is None:
        return np.zeros((0, 1, 1), dtype=np.float32)
    return out
