"""``PerturbationSpec.mask_local`` / ``step_local``: what each perturbation declares is true, and the
curve engine honours it (a non-step-local perturbation is not streamed as local steps)."""

from __future__ import annotations

import numpy as np
import pytest

import bench
from bench.engine.curves import evaluate_aopc, perturbation_locality
from bench.engine.forward import FullForward
from bench.engine.regions import region_boxes, region_order, union_mask
from bench.plugin.specs import PerturbationSpec
from bench.testing import tiny_model

SIZE = 32
GRID = 4


def test_step_local_defaults_to_mask_local_and_a_contradiction_is_refused():
    assert PerturbationSpec(name="t-a", factory=dict).step_local is True
    assert PerturbationSpec(name="t-b", factory=dict, mask_local=False).step_local is False
    spec = PerturbationSpec(name="t-c", factory=dict, step_local=False)
    assert (spec.mask_local, spec.step_local, spec.local_steps) == (True, False, False)
    with pytest.raises(ValueError, match="contradictory"):
        PerturbationSpec(name="t-d", factory=dict, mask_local=False, step_local=True)
    with pytest.raises(TypeError, match="step_local"):
        PerturbationSpec(name="t-e", factory=dict, step_local="no")


def _steps(name: str) -> tuple[np.ndarray, np.ndarray]:
    """x^(k) for k = 0..L of one image under perturbation ``name`` (MoRF of a random map), and the order."""
    rng = np.random.default_rng(0)
    x = np.repeat(rng.random((1, SIZE, SIZE, 1), dtype=np.float32), 3, axis=-1)
    order = region_order(rng.random((1, GRID * GRID)), "morf", ids=[0])[0]
    pert = bench.create("perturbation", name)
    masks = np.stack([union_mask(order, k, (SIZE, SIZE), GRID) for k in range(GRID * GRID + 1)])
    xs = pert.perturb(np.repeat(x, len(masks), axis=0), masks, np.full(len(masks), 5))
    return np.asarray(xs), order


@pytest.mark.parametrize("name", ["gaussian-noise", "blur", "mean", "black", "road"])
def test_each_builtin_declares_its_locality_truthfully(name):
    spec = bench.registry().get("perturbation", name).spec
    xs, order = _steps(name)
    boxes = region_boxes((SIZE, SIZE), GRID)
    outside_region = []
    for k in range(1, len(xs)):
        changed = np.any(xs[k] != xs[k - 1], axis=-1)
        y0, y1, x0, x1 = boxes[order[k - 1]]
        inside = np.zeros_like(changed)
        inside[y0:y1, x0:x1] = True
        outside_region.append(bool((changed & ~inside).any()))
    assert spec.mask_local
    assert spec.step_local is (not any(outside_region)), (name, outside_region)
    assert perturbation_locality(name) == (spec.mask_local, spec.step_local)
    assert perturbation_locality(bench.create("perturbation", name)) == (spec.mask_local, spec.step_local)


class Recording(FullForward):
    """Full passes that record what the engine told them."""

    def prepare(self, model, *, batch_size, image_shape, mask_local=True):
        self.told = mask_local
        self.boxes = {}
        super().prepare(model, batch_size=batch_size, image_shape=image_shape, mask_local=mask_local)

    def forward(self, batch):
        for i, k, box in zip(batch.image_index, batch.step, batch.changed_box, strict=True):
            self.boxes[int(i), int(k)] = tuple(int(v) for v in box)
        return super().forward(batch)


def _bbox(boxes: np.ndarray) -> tuple[int, int, int, int]:
    return int(boxes[:, 0].min()), int(boxes[:, 1].max()), int(boxes[:, 2].min()), int(boxes[:, 3].max())


@pytest.mark.parametrize("order", ["morf", "insertion"])
@pytest.mark.parametrize("name", ["gaussian-noise", "road"])
def test_the_engine_streams_local_steps_only_for_a_step_local_perturbation(name, order):
    model = tiny_model()
    rng = np.random.default_rng(1)
    images = (rng.random((2, SIZE, SIZE)) * 255).astype(np.uint8)
    maps = rng.random((2, GRID, GRID)).astype(np.float32)
    strategy = Recording()
    result = evaluate_aopc(model, images, None, maps, perturbation=name, grid=GRID, order=order,
                           strategy=strategy, batch_size=7)
    step_local = bench.registry().get("perturbation", name).spec.step_local
    assert strategy.told is step_local
    boxes = region_boxes((SIZE, SIZE), GRID)
    for i in range(2):
        ranked = result.order[i]
        assert strategy.boxes[i, 0] == (0, 0, 0, 0)
        for k in range(1, GRID * GRID + 1):
            if step_local:  # r_k only: the region deleted (or restored) at step k
                want = tuple(int(v) for v in boxes[ranked[k - 1]])
            elif order == "morf":  # everything perturbed at step k (the mask grows)
                want = _bbox(boxes[ranked[:k]])
            else:  # insertion: everything still perturbed at step k - 1 (the mask shrinks)
                want = _bbox(boxes[ranked[k - 1:]])
            assert strategy.boxes[i, k] == want, (i, k)


def test_auto_runs_full_passes_for_a_non_step_local_perturbation_and_says_why():
    model = tiny_model()
    rng = np.random.default_rng(2)
    images = (rng.random((1, SIZE, SIZE)) * 255).astype(np.uint8)
    maps = rng.random((1, GRID, GRID)).astype(np.float32)
    road = evaluate_aopc(model, images, None, maps, perturbation="road", grid=GRID, strategy="auto")
    assert road.strategy == "full" and road.strategy_info["step_local"] is False
    assert "step_local=False" in road.strategy_info["reason"]
    # the declared flag is what counts: the same perturbation declared step-local is streamed as local steps
    strategy = Recording()
    evaluate_aopc(model, images, None, maps, perturbation="road", grid=GRID, strategy=strategy, step_local=True)
    assert strategy.told is True
    # curves do not depend on how the steps are streamed
    full = evaluate_aopc(model, images, None, maps, perturbation="road", grid=GRID, strategy="full")
    np.testing.assert_allclose(road.curves, full.curves, atol=1e-6)
