"""Conformance checks, in the spirit of scikit-learn's ``parametrize_with_checks``.

Each check raises AssertionError with a message saying what the component did
wrong. ``checks_for(component)`` yields ``(name, callable)`` pairs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .tiny import tiny_images, tiny_model


def _name(component: Any) -> str:
    return type(component).__name__


# ---- every component --------------------------------------------------------------------
def check_get_params(component: Any) -> None:
    """get_params() returns a dict of the constructor's keyword parameters, JSON-able."""
    import json

    get = getattr(component, "get_params", None)
    assert callable(get), f"{_name(component)} has no get_params()"
    params = get()
    assert isinstance(params, dict), f"{_name(component)}.get_params() must return a dict"
    json.dumps(params, default=str)
    sig = inspect.signature(type(component).__init__)
    for p in list(sig.parameters.values())[1:]:
        if p.kind is p.POSITIONAL_ONLY:
            raise AssertionError(f"{_name(component)}.__init__ takes positional-only {p.name!r}")
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            assert p.name in params, (
                f"{_name(component)}.get_params() lacks constructor parameter {p.name!r}"
            )


def check_clone(component: Any) -> None:
    """type(c)(**c.get_params()) builds an equivalent component (no hidden state in __init__)."""
    params = component.get_params()
    clone = type(component)(**params)
    assert clone.get_params() == params, f"{_name(component)} does not round-trip get_params()"


# ---- explainers -------------------------------------------------------------------------
def _explain(explainer: Any, model: Any, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
    kwargs = {}
    if "ids" in inspect.signature(explainer.explain).parameters:
        kwargs["ids"] = np.array([f"img-{i}" for i in range(len(images))])
    return np.asarray(explainer.explain(model, images, targets, **kwargs))


def check_explainer_output(explainer: Any, model: Any = None) -> None:
    model = model or tiny_model()
    images = tiny_images(3)
    targets = np.array([0, 1, 2])
    before = images.copy()
    maps = _explain(explainer, model, images, targets)
    assert maps.ndim == 3 and maps.shape[0] == 3, (
        f"{_name(explainer)}.explain must return (N, h, w); got shape {maps.shape}"
    )
    assert maps.dtype == np.float32, f"{_name(explainer)}.explain must return float32, got {maps.dtype}"
    assert np.all(np.isfinite(maps)), f"{_name(explainer)}.explain returned NaN or inf"
    assert np.array_equal(images, before), f"{_name(explainer)}.explain modified its input images"


def check_explainer_deterministic(explainer: Any, model: Any = None) -> None:
    model = model or tiny_model()
    images, targets = tiny_images(2), np.array([1, 3])
    a = _explain(explainer, model, images, targets)
    b = _explain(explainer, model, images, targets)
    np.testing.assert_allclose(a, b, atol=1e-5, err_msg=f"{_name(explainer)} is not deterministic")


def check_explainer_batch_independent(explainer: Any, model: Any = None) -> None:
    """Explaining images one by one equals explaining them as a batch."""
    model = model or tiny_model()
    images, targets = tiny_images(3), np.array([0, 1, 2])
    batch = _explain(explainer, model, images, targets)
    kwargs_ok = "ids" in inspect.signature(explainer.explain).parameters
    singles = []
    for i in range(3):
        kwargs = {"ids": np.array([f"img-{i}"])} if kwargs_ok else {}
        singles.append(np.asarray(explainer.explain(model, images[i : i + 1], targets[i : i + 1], **kwargs)))
    np.testing.assert_allclose(
        batch, np.concatenate(singles), atol=1e-4,
        err_msg=f"{_name(explainer)}: an image's heatmap depends on the rest of its batch",
    )


# ---- perturbations ----------------------------------------------------------------------
def _masks(n: int, size: int, frac_rows: int) -> np.ndarray:
    m = np.zeros((n, size, size), bool)
    m[:, :frac_rows, :] = True
    return m


def check_perturbation_output(perturbation: Any) -> None:
    images = tiny_images(2)
    masks = _masks(2, 32, 8)
    seeds = np.array([1, 2])
    before = images.copy()
    out = np.asarray(perturbation.perturb(images, masks, seeds))
    assert out.shape == images.shape, f"{_name(perturbation)}.perturb changed the shape: {out.shape}"
    assert out.dtype == np.float32, f"{_name(perturbation)}.perturb must return float32, got {out.dtype}"
    assert np.all(np.isfinite(out)), f"{_name(perturbation)}.perturb returned NaN or inf"
    assert np.array_equal(images, before), f"{_name(perturbation)}.perturb modified its input images"


def check_perturbation_deterministic(perturbation: Any) -> None:
    images, masks, seeds = tiny_images(2), _masks(2, 32, 8), np.array([5, 6])
    a = np.asarray(perturbation.perturb(images, masks, seeds))
    b = np.asarray(perturbation.perturb(images[::-1].copy(), masks[::-1].copy(), seeds[::-1].copy()))[::-1]
    np.testing.assert_allclose(
        a, b, atol=1e-6, err_msg=f"{_name(perturbation)} depends on batch position, not only on the seed"
    )


def check_perturbation_mask_local(perturbation: Any) -> None:
    """Pixels outside the mask are unchanged, and an empty mask changes nothing."""
    images, masks, seeds = tiny_images(2), _masks(2, 32, 8), np.array([5, 6])
    out = np.asarray(perturbation.perturb(images, masks, seeds))
    outside = ~masks
    np.testing.assert_array_equal(
        out[outside], images[outside],
        err_msg=f"{_name(perturbation)} changed pixels outside the mask (declare mask_local=False)",
    )
    empty = np.asarray(perturbation.perturb(images, np.zeros_like(masks), seeds))
    np.testing.assert_array_equal(empty, images, err_msg=f"{_name(perturbation)}: empty mask changed the image")


# ---- models -----------------------------------------------------------------------------
def check_model_outputs(model: Any) -> None:
    h, w, _ = model.input_shape
    rng = np.random.default_rng(0)
    x = rng.random((2, h, w, 3), dtype=np.float32)
    probs = np.asarray(model.keras(x, training=False))
    assert probs.shape == (2, model.num_classes), f"probabilities shape {probs.shape}"
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4, err_msg="probabilities do not sum to 1")
    features, logits = model.features_and_logits(x)
    assert len(features.shape) == 4, f"feature layer output must be 4-D, got {tuple(features.shape)}"
    soft = np.exp(logits - np.max(logits, axis=1, keepdims=True))
    soft /= soft.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(soft, probs, atol=1e-4, err_msg="softmax(logits) != probabilities")


# ---- datasets ---------------------------------------------------------------------------
def check_dataset_splits(dataset: Any) -> None:
    from ..data import DatasetSplits

    fp1 = dataset.fingerprint()
    splits = dataset.load()
    assert isinstance(splits, DatasetSplits), f"load() returned {type(splits).__name__}"
    assert dataset.fingerprint() == fp1, "fingerprint() is not stable"
    ids = np.concatenate([s.ids for s in splits.splits().values()])
    assert len(set(ids.tolist())) == len(ids), "image ids are not unique across splits"


# ---- metrics ----------------------------------------------------------------------------
def check_metric_scores(metric: Any) -> None:
    """score(curves (N, L+1)) -> finite float (N,), one value per image, order-preserving."""
    rng = np.random.default_rng(0)
    curves = np.sort(rng.random((5, 10)), axis=1)[:, ::-1].astype(np.float32)
    scores = np.asarray(metric.score(curves))
    assert scores.shape == (5,), f"{_name(metric)}.score must return (N,), got {scores.shape}"
    assert np.all(np.isfinite(scores)), f"{_name(metric)}.score returned NaN or inf"
    np.testing.assert_allclose(
        np.asarray(metric.score(curves[::-1].copy()))[::-1], scores, atol=1e-6,
        err_msg=f"{_name(metric)}.score of an image depends on the other images",
    )


# ---- dispatch ---------------------------------------------------------------------------
def checks_for(component: Any, model: Any = None) -> Iterator[tuple[str, Callable[[], None]]]:
    """(name, zero-argument check) for every check that applies to ``component``."""
    generic = [check_get_params, check_clone]
    if hasattr(component, "explain"):
        specific = [check_explainer_output, check_explainer_deterministic, check_explainer_batch_independent]
        for fn in generic:
            yield fn.__name__, functools.partial(fn, component)
        for fn in specific:
            yield fn.__name__, functools.partial(fn, component, model)
        return
    if hasattr(component, "perturb"):
        specific = [check_perturbation_output, check_perturbation_deterministic]
        if getattr(component, "mask_local", True):
            specific.append(check_perturbation_mask_local)
    elif hasattr(component, "features_and_logits"):
        specific = [check_model_outputs]
    elif hasattr(component, "load") and hasattr(component, "fingerprint"):
        specific = [check_dataset_splits]
    elif hasattr(component, "score"):
        specific = [check_metric_scores]
    else:
        raise TypeError(
            f"{_name(component)} is not a bench component (explain/perturb/features_and_logits/load/score)"
        )
    for fn in generic + specific:
        yield fn.__name__, functools.partial(fn, component)


def check_component(component: Any, model: Any = None) -> None:
    """Run every applicable check; raise on the first failure."""
    for _, check in checks_for(component, model):
        check()


check_explainer = check_perturbation = check_model = check_dataset = check_component


def parametrize_with_checks(component: Any, model: Any = None) -> Callable[[Callable[..., Any]], Any]:
    """Decorate a ``test(check)`` to run once per applicable check, ids = check names."""
    import pytest

    pairs = list(checks_for(component, model))
    return pytest.mark.parametrize("check", [c for _, c in pairs], ids=[n for n, _ in pairs])
