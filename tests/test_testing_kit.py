"""bench.testing: the conformance checks pass on the built-ins and catch broken components."""

from __future__ import annotations

import numpy as np
import pytest

import bench
from bench.testing import check_component, checks_for, tiny_model


@pytest.mark.parametrize(
    "kind, name",
    [("explainer", "gradcam"), ("explainer", "random"), ("perturbation", "gaussian-noise"),
     ("metric", "aopc"), ("metric", "deletion-auc")],
)
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
