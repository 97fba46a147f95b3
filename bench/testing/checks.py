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

from bench.testing.tiny import tiny_images, tiny_model


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
def tiny_masks(images: np.ndarray, names: Any, *, first: int = 0) -> dict[str, np.ndarray]:
    """A bool (N, H, W) box mask per name for ``images``, different per image and name (image
    ``first + i`` of the set); the masks an explainer that declares ``masks`` gets in the checks.

    The mask of every third image of the set (``first + i`` = 2, 5, 8, ...) is empty, as on a
    dataset's images without a finding: an explainer that reads a mask must still return a
    finite map there.
    """
    n, h, w = len(images), int(images.shape[1]), int(images.shape[2])
    out = {}
    for j, name in enumerate(names):
        m = np.zeros((n, h, w), bool)
        for i in range(n):
            if (first + i) % 3 == 2:
                continue
            k = first + i + j
            top, left = (3 * k) % max(h // 2, 1), (5 * k) % max(w // 2, 1)
            m[i, top : top + max(h // 3, 1), left : left + max(w // 3, 1)] = True
        out[str(name)] = m
    return out


def _factory_parts(factory: Any) -> tuple[Any, dict[str, Any]]:
    """(the class or ``module:qualname`` a factory builds, the keywords a ``functools.partial`` fixes)."""
    keywords: dict[str, Any] = {}
    while isinstance(factory, functools.partial):
        keywords = {**factory.keywords, **keywords}
        factory = factory.func
    return factory, keywords


def registered_spec(kind: str, component: Any) -> Any:
    """The registered spec of ``kind`` whose factory builds ``component`` (None: not registered).

    Matched on the factory (the class itself, its ``module:qualname`` string, or a
    ``functools.partial`` of either), so no lazy factory is imported. Where several specs
    build the same class (``oracle`` and ``oracle-tumour``), the one whose fixed keywords and
    documented parameters agree with ``component.get_params()`` wins.
    """
    from bench.plugin.registry import registry

    cls = type(component)
    reference = f"{cls.__module__}:{cls.__qualname__}"
    try:
        params = dict(component.get_params())
    except Exception:  # noqa: BLE001 - check_get_params reports a broken get_params
        params = {}
    matches = []
    for entry in registry()[kind].values():
        base, keywords = _factory_parts(entry.spec.factory)
        if base is cls or (isinstance(base, str) and base == reference):
            matches.append((entry.spec, {**dict(entry.spec.parameters or {}), **keywords}))
    for spec, expected in matches:
        if all(k in params and params[k] == v for k, v in expected.items()):
            return spec
    return matches[0][0] if matches else None


def registered_explainer_spec(component: Any) -> Any:
    """The registered :class:`bench.ExplainerSpec` that builds ``component`` (:func:`registered_spec`)."""
    return registered_spec("explainer", component)


def declared_masks(explainer: Any, spec: Any = None) -> tuple[str, ...]:
    """The masks ``spec`` (default: the registered spec of ``explainer``) declares (``ExplainerSpec.masks``)."""
    spec = spec if spec is not None else registered_explainer_spec(explainer)
    return tuple(getattr(spec, "masks", ()) or ())


def _explain(
    explainer: Any, model: Any, images: np.ndarray, targets: np.ndarray, *, first: int = 0,
    masks: tuple[str, ...] | None = None,
) -> np.ndarray:
    """``explain`` as a run calls it: ``ids=`` when accepted, ``masks=`` when the spec declares any.

    ``masks``: the declared mask names (None: those of the registered spec).
    """
    from bench.pipeline.explain import accepts_keyword

    kwargs: dict[str, Any] = {}
    if accepts_keyword(explainer.explain, "ids"):
        kwargs["ids"] = np.array([f"img-{first + i}" for i in range(len(images))])
    names = declared_masks(explainer) if masks is None else masks
    if names:
        kwargs["masks"] = tiny_masks(images, names, first=first)
    return np.asarray(explainer.explain(model, images, targets, **kwargs))


def check_explainer_output(explainer: Any, model: Any = None, *, masks: tuple[str, ...] | None = None) -> None:
    model = model or tiny_model()
    images = tiny_images(3)
    targets = np.array([0, 1, 2])
    before = images.copy()
    maps = _explain(explainer, model, images, targets, masks=masks)
    assert maps.ndim == 3 and maps.shape[0] == 3, (
        f"{_name(explainer)}.explain must return (N, h, w); got shape {maps.shape}"
    )
    assert maps.dtype == np.float32, f"{_name(explainer)}.explain must return float32, got {maps.dtype}"
    assert np.all(np.isfinite(maps)), f"{_name(explainer)}.explain returned NaN or inf"
    assert np.array_equal(images, before), f"{_name(explainer)}.explain modified its input images"


def check_explainer_deterministic(explainer: Any, model: Any = None, *, masks: tuple[str, ...] | None = None) -> None:
    model = model or tiny_model()
    images, targets = tiny_images(2), np.array([1, 3])
    a = _explain(explainer, model, images, targets, masks=masks)
    b = _explain(explainer, model, images, targets, masks=masks)
    np.testing.assert_allclose(a, b, atol=1e-5, err_msg=f"{_name(explainer)} is not deterministic")


def check_explainer_batch_independent(explainer: Any, model: Any = None, *, masks: tuple[str, ...] | None = None) -> None:
    """Explaining images one by one equals explaining them as a batch."""
    model = model or tiny_model()
    images, targets = tiny_images(3), np.array([0, 1, 2])
    batch = _explain(explainer, model, images, targets, masks=masks)
    singles = [_explain(explainer, model, images[i : i + 1], targets[i : i + 1], first=i, masks=masks) for i in range(3)]
    np.testing.assert_allclose(
        batch, np.concatenate(singles), atol=1e-4,
        err_msg=f"{_name(explainer)}: an image's heatmap depends on the rest of its batch",
    )


# ---- explainers by role (what follows from the role a spec declares) ---------------------
def check_control_ignores_the_model(explainer: Any, model: Any = None, *, masks: tuple[str, ...] | None = None) -> None:
    """A control (any role but ``method``) is a reference line: its maps do not depend on the model.

    Two models with different weights give the same maps of the same images.
    """
    first = model or tiny_model()
    other = tiny_model(seed=12345)
    images, targets = tiny_images(3), np.array([0, 1, 2])
    np.testing.assert_allclose(
        _explain(explainer, first, images, targets, masks=masks),
        _explain(explainer, other, images, targets, masks=masks), atol=1e-6,
        err_msg=f"{_name(explainer)} is registered as a control, but its maps change with the model "
                "(register it with role='method')",
    )


def check_null_control_ignores_the_image(explainer: Any, model: Any = None, *, masks: tuple[str, ...] | None = None) -> None:
    """A null control carries no information: an image's map (given its id) ignores its pixels."""
    model = model or tiny_model()
    targets = np.array([0, 1, 2])
    a = _explain(explainer, model, tiny_images(3, seed=1), targets, masks=masks)
    b = _explain(explainer, model, tiny_images(3, seed=2), targets, masks=masks)
    np.testing.assert_allclose(
        a, b, atol=1e-6,
        err_msg=f"{_name(explainer)} is registered as a null-control, but its maps depend on the image "
                "content (a null control must carry no information about the image)",
    )


def registered_role(component: Any) -> str | None:
    """The role the registered explainer spec of ``component``'s class declares (None: not registered).

    Matched as :func:`registered_explainer_spec` matches (no lazy factory is imported).
    """
    spec = registered_explainer_spec(component)
    return None if spec is None else spec.role


def role_checks(role: str | None) -> list[Callable[..., None]]:
    """The explainer checks a role adds: every control ignores the model, a null control the image."""
    from bench.pipeline.controls import NULL_CONTROL_ROLE, is_control

    checks: list[Callable[..., None]] = []
    if is_control(role):
        checks.append(check_control_ignores_the_model)
    if role == NULL_CONTROL_ROLE:
        checks.append(check_null_control_ignores_the_image)
    return checks


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
    """load() -> DatasetSplits, stable fingerprint, unique ids, well-formed masks, saveable."""
    from bench.data import DatasetSplits

    fp1 = dataset.fingerprint()
    splits = dataset.load()
    assert isinstance(splits, DatasetSplits), f"load() returned {type(splits).__name__}"
    assert dataset.fingerprint() == fp1, "fingerprint() is not stable"
    ids = np.concatenate([s.ids for s in splits.splits().values()])
    assert len(set(ids.tolist())) == len(ids), "image ids are not unique across splits"
    check_dataset_masks(splits, name=_name(dataset))
    check_dataset_round_trip(splits, name=_name(dataset))


def check_dataset_masks(splits: Any, *, name: str = "dataset") -> None:
    """Masks: a dict name -> bool (N, H, W) per split, valid names, the same names in every split.

    A mask the dataset carries in one split and not in another would leave a
    mask-reading metric with nothing to read on that split.
    """
    from bench.plugin.names import name_problem

    names = None
    for split_name, s in splits.splits().items():
        assert isinstance(s.masks, dict), f"{name}: {split_name}.masks must be a dict, got {type(s.masks).__name__}"
        for mask_name, m in s.masks.items():
            problem = name_problem(mask_name)
            assert problem is None, f"{name}: {split_name} mask name {mask_name!r} is invalid: {problem}"
            assert isinstance(m, np.ndarray) and m.dtype == np.bool_ and m.shape == s.images.shape, (
                f"{name}: {split_name}.masks[{mask_name!r}] must be bool {s.images.shape}, "
                f"got {getattr(m, 'dtype', type(m).__name__)} {getattr(m, 'shape', '')}"
            )
        if len(s):
            if names is None:
                names = list(s.masks)
            assert sorted(s.masks) == sorted(names), (
                f"{name}: split {split_name!r} carries masks {sorted(s.masks)}, another split {sorted(names)}"
            )
    coverage = splits.mask_coverage()
    for mask_name in splits.mask_names:
        assert coverage[mask_name] > 0, f"{name}: mask {mask_name!r} is empty on every image; leave it out"


def check_dataset_round_trip(splits: Any, *, name: str = "dataset") -> None:
    """DatasetSplits.save/load_file give back the same images, labels, ids, masks and metadata."""
    import json
    import tempfile
    from pathlib import Path

    from bench.data import DatasetSplits

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "splits.npz"
        try:
            splits.save(path)
        except TypeError as exc:  # json.dumps of the metadata
            raise AssertionError(f"{name}: the splits cannot be saved (metadata must be JSON-able): {exc}") from exc
        back = DatasetSplits.load_file(path)
    assert back.metadata == json.loads(json.dumps(splits.metadata)), (
        f"{name}: metadata does not survive save/load (use JSON types, str keys)"
    )
    assert back.positive_classes == splits.positive_classes
    for split_name, s in splits.splits().items():
        t = back.splits()[split_name]
        np.testing.assert_array_equal(t.images, s.images, err_msg=f"{name}: {split_name}.images")
        np.testing.assert_array_equal(t.labels, s.labels, err_msg=f"{name}: {split_name}.labels")
        assert t.ids.tolist() == s.ids.tolist(), f"{name}: {split_name}.ids do not survive save/load"
        assert list(t.masks) == list(s.masks), f"{name}: {split_name} mask names/order do not survive save/load"
        for mask_name, m in s.masks.items():
            np.testing.assert_array_equal(t.masks[mask_name], m, err_msg=f"{name}: {split_name}.masks[{mask_name!r}]")


# ---- metrics (driven by the inputs the spec declares) -------------------------------------
class _TinyExplainer:
    """A deterministic stand-in explainer for metrics that declare ``explainer``: image intensity."""

    def get_params(self) -> dict[str, Any]:
        return {}

    def explain(self, model: Any, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return np.asarray(images, np.float32).mean(axis=-1)


def registered_metric_spec(component: Any) -> Any:
    """The registered :class:`bench.MetricSpec` that builds ``component`` (:func:`registered_spec`)."""
    return registered_spec("metric", component)


def _metric_params(metric: Any) -> dict[str, Any]:
    get = getattr(metric, "get_params", None)
    return dict(get()) if callable(get) else {}


def metric_inputs(spec: Any, n: int = 5, *, model: Any = None, seed: int = 0,
                  params: Any = None) -> dict[str, Any]:
    """Well-formed synthetic inputs of N images for every input ``spec`` declares.

    Curves (N, 10) that fall (MoRF) or stay high (LeRF, random); heatmaps (N, 8, 8); a box
    mask per declared name (N, 32, 32): with the metric's ``params``, the masks its
    :attr:`~bench.MetricSpec.mask_params` name (a metric built to read another dataset mask gets
    that mask, as in a run); labels and targets in 0..3; uint8 images (N, 32, 32); the tiny
    model (or ``model``) and a deterministic explainer where declared.
    """
    from bench.pipeline.metrics import metric_needs

    rng = np.random.default_rng(seed)
    declared = metric_needs(spec, params).inputs if params is not None else spec.inputs
    out: dict[str, Any] = {"ids": np.array([f"img-{i}" for i in range(n)]), "grid": (3, 3)}
    curves = {}
    for order in declared.curves:
        start = 0.9 + 0.1 * rng.random((n, 1))
        inc = rng.random((n, 9))
        drop = np.cumsum(inc, axis=1) / inc.sum(axis=1, keepdims=True) * (0.8 if order == "morf" else 0.2)
        curves[order] = np.concatenate([start, start * (1 - drop)], axis=1)
    out["curves"] = {o: c.astype(np.float32) for o, c in curves.items()}
    out["heatmaps"] = rng.random((n, 8, 8)).astype(np.float32)
    masks = {}
    for name in declared.masks:
        m = np.zeros((n, 32, 32), bool)
        for i in range(n):
            y, x = rng.integers(0, 20, size=2)
            m[i, y:y + 8 + i % 4, x:x + 8] = True
        masks[name] = m
    out["masks"] = masks
    out["labels"] = np.arange(n) % 4
    out["targets"] = (np.arange(n) + 1) % 4
    out["images"] = (tiny_images(n, seed=seed)[..., 0] * 255).astype(np.uint8)
    out["model"] = (model or tiny_model()) if declared.model else None
    out["explainer"] = _TinyExplainer() if declared.explainer else None
    return out


def _permuted(inputs: dict[str, Any], perm: np.ndarray) -> dict[str, Any]:
    out = dict(inputs)
    for key in ("ids", "heatmaps", "labels", "targets", "images"):
        out[key] = np.asarray(inputs[key])[perm]
    out["curves"] = {o: c[perm] for o, c in inputs["curves"].items()}
    out["masks"] = {m: a[perm] for m, a in inputs["masks"].items()}
    return out


def _compute(metric: Any, spec: Any, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    from bench.errors import ComponentOutputError
    from bench.pipeline.metrics import MetricInputError, compute_columns, metric_data

    try:
        return compute_columns(metric, spec, metric_data(spec, params=_metric_params(metric), **inputs))
    except MetricInputError as exc:
        raise AssertionError(str(exc)) from exc
    except ComponentOutputError as exc:
        raise AssertionError(str(exc)) from exc


def check_metric_output(metric: Any, spec: Any, model: Any = None) -> None:
    """compute(data) on the declared inputs -> named columns (N,) or (N, K), headline (N,), finite here.

    The data holds only what the spec declares: reading anything else fails this check.
    """
    cols = _compute(metric, spec, metric_inputs(spec, model=model, params=_metric_params(metric)))
    head = cols[spec.headline_column]
    assert np.all(np.isfinite(head)), (
        f"{_name(metric)}: the headline column {spec.headline_column!r} is not finite on well-formed inputs: {head}"
    )


def check_metric_deterministic(metric: Any, spec: Any, model: Any = None) -> None:
    inputs = metric_inputs(spec, model=model, params=_metric_params(metric))
    a, b = _compute(metric, spec, inputs), _compute(metric, spec, inputs)
    for column in a:
        np.testing.assert_allclose(a[column], b[column], atol=1e-6,
                                   err_msg=f"{_name(metric)} is not deterministic (column {column!r})")


def check_metric_image_independent(metric: Any, spec: Any, model: Any = None) -> None:
    """Permuting the images permutes the per-image values: an image's value depends on it alone."""
    inputs = metric_inputs(spec, model=model, params=_metric_params(metric))
    perm = np.array([3, 0, 4, 1, 2])
    whole = _compute(metric, spec, inputs)
    shuffled = _compute(metric, spec, _permuted(inputs, perm))
    for column, values in whole.items():
        np.testing.assert_allclose(
            shuffled[column], values[perm], atol=1e-5,
            err_msg=f"{_name(metric)}: the value of an image depends on the other images (column {column!r})",
        )


def check_metric_zero_map(metric: Any, spec: Any, model: Any = None) -> None:
    """On all-zero heatmaps the headline is the spec's ``zero_map_value``."""
    inputs = metric_inputs(spec, model=model, params=_metric_params(metric))
    inputs["heatmaps"] = np.zeros_like(inputs["heatmaps"])
    head = _compute(metric, spec, inputs)[spec.headline_column]
    np.testing.assert_allclose(
        head, float(spec.zero_map_value), atol=1e-6,
        err_msg=f"{_name(metric)}: on all-zero heatmaps the spec says {spec.zero_map_value}, got {head}",
    )


def metric_checks(spec: Any) -> list[Callable[..., None]]:
    """The metric checks ``spec`` calls for (the zero-map check only where it declares a value)."""
    checks = [check_metric_output, check_metric_deterministic, check_metric_image_independent]
    if spec.zero_map_value is not None and spec.inputs.heatmaps:
        checks.append(check_metric_zero_map)
    return checks


# ---- dispatch ---------------------------------------------------------------------------
def checks_for(
    component: Any, model: Any = None, *, role: str | None = None, spec: Any = None
) -> Iterator[tuple[str, Callable[[], None]]]:
    """(name, zero-argument check) for every check that applies to ``component``.

    An explainer also gets the checks its role implies (:func:`role_checks`): ``role``,
    else the role of its spec (``spec``, else its registered :class:`bench.ExplainerSpec`;
    ``method`` when it has none), and every check passes it the masks that spec declares
    (:func:`tiny_masks`: one box per image, none on every third image).
    A metric (``compute``) is checked on synthetic inputs of exactly what its spec
    declares: ``spec``, else its registered :class:`bench.MetricSpec`.
    """
    generic = [check_get_params, check_clone]
    if hasattr(component, "compute"):
        spec = spec if spec is not None else registered_metric_spec(component)
        if spec is None:
            raise TypeError(
                f"{_name(component)} is a metric but no registered MetricSpec has it as factory: pass "
                "spec=MetricSpec(...) (its declared inputs drive the checks)"
            )
        for fn in generic:
            yield fn.__name__, functools.partial(fn, component)
        for fn in metric_checks(spec):
            yield fn.__name__, functools.partial(fn, component, spec, model)
        return
    if hasattr(component, "explain"):
        specific = [check_explainer_output, check_explainer_deterministic, check_explainer_batch_independent]
        spec = spec if spec is not None else registered_explainer_spec(component)
        if role is None:
            role = None if spec is None else spec.role
        else:
            from bench.plugin.specs import role_problem

            problem = role_problem(role)
            if problem is not None:
                raise ValueError(f"checks_for({_name(component)}): {problem}")
        specific += role_checks(role)
        masks = declared_masks(component, spec)
        for fn in generic:
            yield fn.__name__, functools.partial(fn, component)
        for fn in specific:
            yield fn.__name__, functools.partial(fn, component, model, masks=masks)
        return
    if hasattr(component, "run_cells"):
        specific = [check_executor_matches_local]
    elif hasattr(component, "perturb"):
        specific = [check_perturbation_output, check_perturbation_deterministic]
        if getattr(component, "mask_local", True):
            specific.append(check_perturbation_mask_local)
    elif hasattr(component, "features_and_logits"):
        specific = [check_model_outputs]
    elif hasattr(component, "load") and hasattr(component, "fingerprint"):
        specific = [check_dataset_splits]
    else:
        raise TypeError(
            f"{_name(component)} is not a bench component "
            "(explain/perturb/features_and_logits/load/compute/run_cells)"
        )
    for fn in generic + specific:
        yield fn.__name__, functools.partial(fn, component)


# ---- executors ----------------------------------------------------------------------------
def check_executor_matches_local(executor: Any) -> None:
    """On a tiny grid (a failing explainer included), the executor's records equal the local ones.

    The grid: the ``tiny`` preset (a small CNN trained one epoch on 32 px images, two
    explainers, one metric) plus an explainer that raises; records are compared on status,
    failing stage, error and every metric's value and n.
    """
    import tempfile
    from pathlib import Path

    from bench.config.loading import load_config
    from bench.pipeline import RunContext, Stages, make_plan
    from bench.plugin.registry import register_plugin, unregister_plugin
    from bench.plugin.specs import ExplainerSpec

    class _Raising:
        def get_params(self) -> dict[str, Any]:
            return {}

        def explain(self, model: Any, images: Any, targets: Any) -> np.ndarray:
            raise RuntimeError("this explainer fails on purpose")

    class _Plugin:
        from bench.plugin.hookspecs import hookimpl

        @hookimpl
        def bench_register_explainers(self) -> list[ExplainerSpec]:
            return [ExplainerSpec(name="bench-testing-raise", factory=_Raising)]

    register_plugin(_Plugin(), name="bench-testing-executor-check")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            records = []
            for which in ("local", "executor"):
                base = load_config(preset="tiny")
                cfg = load_config(preset="tiny", overrides={
                    "run": {"out": str(Path(tmp) / which)},
                    "explainers": {"names": [*base["explainers"]["names"], "bench-testing-raise"]},
                })
                plan = make_plan(cfg)
                run_dir = Path(tmp) / which / "runs" / "check"
                context = RunContext(plan=plan, stages=Stages(plan, quiet=True), run_dir=run_dir,
                                     run_id="check", quiet=True)
                if which == "local":
                    got = [context.run_cell(t) for t in plan.cells]
                else:
                    got = list(executor.run_cells(context, plan.cells))
                records.append({r.cell_id: r for r in got})
    finally:
        unregister_plugin("bench-testing-executor-check")
    local, mine = records
    assert set(mine) == set(local), (
        f"{_name(executor)}.run_cells yielded cells {sorted(mine)}, expected one record per task {sorted(local)}"
    )
    for cell_id, lc in local.items():
        mc = mine[cell_id]
        assert (mc.status, mc.stage, mc.error) == (lc.status, lc.stage, lc.error), (
            f"{_name(executor)}: cell {cell_id} is {mc.status} at {mc.stage} ({mc.error}); "
            f"the local executor's is {lc.status} at {lc.stage} ({lc.error})"
        )
        for name, lm in lc.metrics.items():
            mm = mc.metrics.get(name)
            assert mm is not None and mm.status == lm.status and mm.n == lm.n, f"{cell_id}: metric {name}"
            np.testing.assert_allclose(mm.value, lm.value, atol=1e-5, err_msg=f"{cell_id}: metric {name}")


def check_component(component: Any, model: Any = None, *, role: str | None = None, spec: Any = None) -> None:
    """Run every applicable check; raise on the first failure."""
    for _, check in checks_for(component, model, role=role, spec=spec):
        check()


check_explainer = check_perturbation = check_model = check_dataset = check_metric = check_executor = check_component


def parametrize_with_checks(
    component: Any, model: Any = None, *, role: str | None = None, spec: Any = None
) -> Callable[[Callable[..., Any]], Any]:
    """Decorate a ``test(check)`` to run once per applicable check, ids = check names."""
    import pytest

    pairs = list(checks_for(component, model, role=role, spec=spec))
    return pytest.mark.parametrize("check", [c for _, c in pairs], ids=[n for n, _ in pairs])
