"""bench.testing: the conformance checks pass on the built-ins and catch broken components."""

from __future__ import annotations

import numpy as np
import pytest

import bench
from bench.testing import check_component, checks_for, tiny_model

#: every explainer, perturbation and metric an installed distribution registers (none can be missed;
#: a few seconds in all), not those a test registers in-process: the checks its spec calls for
BUILTINS = [(kind, name) for kind in ("explainer", "perturbation", "metric")
            for name, entry in sorted(bench.registry()[kind].items()) if entry.plugin.distribution]


def test_the_parametrisation_covers_the_components_the_kit_is_known_to_run_on():
    for kind, name in [("explainer", "gradcam"), ("explainer", "random"), ("explainer", "occlusion"),
                       ("explainer", "oracle"), ("perturbation", "gaussian-noise"), ("metric", "aopc"),
                       ("metric", "lerf-aopc"), ("metric", "abpc"), ("metric", "deletion-auc")]:
        assert (kind, name) in BUILTINS


@pytest.mark.parametrize("kind, name", BUILTINS)
def test_builtins_pass_their_conformance_checks(kind, name):
    component = bench.create(kind, name)
    names = [n for n, _ in checks_for(component)]
    assert "check_get_params" in names and len(names) >= 3
    check_component(component, tiny_model())


def test_simple_cnn_passes_the_model_checks():
    check_component(bench.create("model", "simple-cnn", input_shape=(32, 32, 3), num_classes=4))


class _Leaky:
    """A perturbation that changes pixels outside its mask."""

    def __init__(self, *, value: float = 0.0):
        self.value = value

    def get_params(self):
        return {"value": self.value}

    def perturb(self, images, masks, seeds):
        return np.clip(images + 0.01, 0, 1).astype(np.float32)


class _Sloppy:
    """An explainer returning float64 maps and hiding a constructor parameter."""

    def __init__(self, *, scale: float = 1.0):
        self._scale = scale

    def get_params(self):
        return {}

    def explain(self, model, images, targets):
        return np.ones(images.shape[:3])


def test_checks_catch_broken_components():
    with pytest.raises(AssertionError, match="outside the mask"):
        check_component(_Leaky())
    with pytest.raises(AssertionError, match="lacks constructor parameter 'scale'"):
        check_component(_Sloppy())
    with pytest.raises(TypeError, match="not a bench component"):
        check_component(object())


# ---- datasets: masks ------------------------------------------------------------------------
def test_synthetic_dataset_passes_the_dataset_checks_masks_included():
    ds = bench.create("dataset", "synthetic-cxr", image_size=16, per_class=5)
    assert [n for n, _ in checks_for(ds)][-1] == "check_dataset_splits"
    check_component(ds)


class _MaskedDataset:
    """A dataset whose masks are given per split (to break the mask checks on purpose)."""

    def __init__(self, *, masks_by_split: dict | None = None, metadata: dict | None = None):
        self.masks_by_split = masks_by_split or {}
        self.metadata = metadata or {}

    def get_params(self):
        return {"masks_by_split": self.masks_by_split, "metadata": self.metadata}

    def fingerprint(self):
        return "masked"

    def load(self):
        from bench.data import DatasetSplits, Split

        def split(name, n):
            return Split(
                images=np.zeros((n, 4, 4), np.uint8), labels=np.arange(n) % 2,
                ids=np.array([f"{name}-{i}" for i in range(n)]),
                masks={m: np.ones((n, 4, 4), bool) for m in self.masks_by_split.get(name, ())},
            )

        return DatasetSplits(name="masked", class_names=("a", "b"), train=split("train", 4),
                             val=split("val", 2), test=split("test", 2), fingerprint="masked",
                             metadata=self.metadata)


def test_dataset_checks_catch_masks_missing_from_a_split_and_unsaveable_metadata():
    every = {s: ("roi",) for s in ("train", "val", "test")}
    check_component(_MaskedDataset(masks_by_split=every))
    with pytest.raises(AssertionError, match=r"split 'test' carries masks \[\]"):
        check_component(_MaskedDataset(masks_by_split={"train": ("roi",), "val": ("roi",)}))
    with pytest.raises(AssertionError, match="metadata must be JSON-able"):
        check_component(_MaskedDataset(masks_by_split=every, metadata={"x": object()}))


def test_a_metric_built_to_read_another_mask_is_fed_that_mask():
    """The kit gives a metric the masks its parameters name (as a run does), not only its defaults."""
    from bench.testing.checks import metric_inputs, registered_metric_spec

    metric = bench.create("metric", "pointing-game", mask="lung")
    spec = registered_metric_spec(metric)
    assert set(metric_inputs(spec, params=metric.get_params())["masks"]) == {"lung"}
    assert set(metric_inputs(spec)["masks"]) == set(spec.inputs.masks)  # the defaults without params
    check_component(metric)  # read "lung": it would fail if handed only the default mask
