"""The gaussian-noise perturbation (bench_perturbations.noise)."""

from __future__ import annotations

import numpy as np
import pytest
from bench_perturbations.noise import GaussianNoise

import bench


def _inputs(b=4, h=12, w=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((b, h, w, 3)).astype(np.float32)
    m = rng.random((b, h, w)) < 0.5
    return x, m


def test_registered_and_constructor_discipline():
    p = bench.create("perturbation", "gaussian-noise", sigma=0.2, clip=True)
    assert isinstance(p, GaussianNoise)
    assert p.get_params() == {"sigma": 0.2, "clip": True}
    assert GaussianNoise().get_params() == {"sigma": 0.1, "clip": False}
    assert bench.registry().get("perturbation", "gaussian-noise").spec.mask_local is True


def test_changes_only_masked_pixels_by_seeded_noise():
    x, m = _inputs()
    seeds = np.array([1, 2, 3, 4])
    p = GaussianNoise(sigma=0.1)
    out = p.perturb(x, m, seeds)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert (out[~m] == x[~m]).all()
    for i, s in enumerate(seeds):
        field = np.random.default_rng(s).standard_normal(x.shape[1:], dtype=np.float32) * np.float32(0.1)
        np.testing.assert_allclose(out[i][m[i]], (x[i] + field)[m[i]], atol=1e-7)
    assert not np.shares_memory(out, x)


def test_same_seed_same_noise_whatever_the_batch():
    x, m = _inputs(b=3)
    p = GaussianNoise()
    full = p.perturb(x, m, np.array([5, 6, 5]))
    single = GaussianNoise().perturb(x[2:3], m[2:3], np.array([5]))
    np.testing.assert_array_equal(full[2], single[0])
    # the same seed on the same image with a full mask gives the same noise field
    ones = np.ones(x.shape[:3], bool)
    both = p.perturb(np.stack([x[0], x[0]]), ones[:2], np.array([9, 9]))
    np.testing.assert_array_equal(both[0], both[1])


def test_nested_masks_equal_the_sequential_definition():
    """x^(k) = x^(k-1) + noise on r_k: each step adds the same field on the new region only."""
    x, _ = _inputs(b=1, h=6, w=6)
    p = GaussianNoise(sigma=0.3)
    m1 = np.zeros((1, 6, 6), bool)
    m1[0, :3, :3] = True
    m2 = m1.copy()
    m2[0, 3:, 3:] = True
    x1 = p.perturb(x, m1, np.array([0]))
    x2 = p.perturb(x, m2, np.array([0]))
    np.testing.assert_array_equal(x2[0, :3, :3], x1[0, :3, :3])
    assert (x2[0, :3, 3:] == x[0, :3, 3:]).all()
    assert not np.allclose(x2[0, 3:, 3:], x[0, 3:, 3:])


def test_noise_has_the_requested_sigma():
    x = np.full((1, 200, 200, 3), 0.5, np.float32)
    m = np.ones((1, 200, 200), bool)
    out = GaussianNoise(sigma=0.1).perturb(x, m, np.array([0]))
    d = out - x
    assert abs(float(d.mean())) < 0.002
    assert abs(float(d.std()) - 0.1) < 0.002


def test_clip_keeps_values_in_range():
    x = np.full((1, 20, 20, 3), 0.99, np.float32)
    m = np.ones((1, 20, 20), bool)
    assert GaussianNoise(sigma=0.5).perturb(x, m, np.array([0])).max() > 1.0
    out = GaussianNoise(sigma=0.5, clip=True).perturb(x, m, np.array([0]))
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_field_cache_is_bounded():
    p = GaussianNoise()
    x, m = _inputs(b=1)
    for s in range(p.cache_size + 10):
        p.perturb(x, m, np.array([s]))
    assert len(p._fields) == p.cache_size


def test_bad_inputs_and_params():
    x, m = _inputs(b=2)
    with pytest.raises(ValueError, match="masks"):
        GaussianNoise().perturb(x, m[:, :5], np.array([0, 1]))
    with pytest.raises(ValueError, match="seed"):
        GaussianNoise().perturb(x, m, np.array([0]))
    with pytest.raises(ValueError, match="sigma"):
        GaussianNoise(sigma=-1).perturb(x, m, np.array([0, 1]))
