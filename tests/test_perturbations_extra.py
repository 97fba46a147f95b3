"""The blur, mean, black and ROAD perturbations (bench_perturbations.fill, .road), against direct references."""

from __future__ import annotations

import numpy as np
import pytest
from bench_perturbations.fill import BlackFill, Blur, MeanFill
from bench_perturbations.road import NEIGHBOUR_WEIGHTS, NoisyLinearImputation

import bench
from bench.testing import check_component

NAMES = {"blur": Blur, "mean": MeanFill, "black": BlackFill, "road": NoisyLinearImputation}


def _inputs(b=3, h=12, w=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((b, h, w, 3)).astype(np.float32)
    m = rng.random((b, h, w)) < 0.4
    return x, m


@pytest.mark.parametrize("name", sorted(NAMES))
def test_registered_mask_local_and_conformant(name):
    entry = bench.registry().get("perturbation", name)
    assert entry.spec.mask_local is True
    p = bench.create("perturbation", name)
    assert isinstance(p, NAMES[name])
    check_component(p)  # get_params, clone, output, deterministic, mask-local (bench.testing)


@pytest.mark.parametrize("name", sorted(NAMES))
def test_only_masked_pixels_change_and_the_inputs_are_left_alone(name):
    x, m = _inputs()
    before = x.copy()
    out = bench.create("perturbation", name).perturb(x, m, np.array([1, 2, 3]))
    assert out.dtype == np.float32 and out.shape == x.shape and not np.shares_memory(out, x)
    np.testing.assert_array_equal(out[~m], x[~m])
    np.testing.assert_array_equal(x, before)
    assert not np.allclose(out[m], x[m])  # the masked pixels did change


@pytest.mark.parametrize("name", sorted(NAMES))
def test_deterministic_given_the_seeds_whatever_the_batch(name):
    x, m = _inputs(b=4)
    seeds = np.array([7, 8, 9, 10])
    p = bench.create("perturbation", name)
    whole = p.perturb(x, m, seeds)
    fresh = bench.create("perturbation", name)
    for i in range(4):
        np.testing.assert_array_equal(fresh.perturb(x[i:i + 1], m[i:i + 1], seeds[i:i + 1])[0], whole[i])


def test_black_and_mean_by_hand():
    x, m = _inputs()
    black = BlackFill().perturb(x, m, np.zeros(3, int))
    assert (black[m] == 0).all()
    mean = MeanFill().perturb(x, m, np.zeros(3, int))
    for i in range(3):
        per_channel = x[i].reshape(-1, 3).astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(mean[i][m[i]], np.broadcast_to(per_channel, (m[i].sum(), 3)), atol=1e-6)


def _gaussian_blur_reference(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable convolution with an explicit Gaussian kernel (radius 4 sigma), symmetric padding."""
    radius = int(4.0 * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    out = np.empty(img.shape, np.float64)
    for c in range(img.shape[-1]):
        ch = np.pad(img[..., c].astype(np.float64), radius, mode="symmetric")
        rows = np.stack([ch[i:i + img.shape[0]] for i in range(2 * radius + 1)])  # shifts along y
        ch = np.tensordot(k, rows, axes=1)
        cols = np.stack([ch[:, j:j + img.shape[1]] for j in range(2 * radius + 1)])
        out[..., c] = np.tensordot(k, cols, axes=1)
    return out


@pytest.mark.parametrize("sigma", [0.8, 2.0])
def test_blur_equals_a_direct_gaussian_convolution_of_the_original(sigma):
    x, m = _inputs(b=2, h=14, w=11)
    out = Blur(sigma=sigma).perturb(x, m, np.array([0, 1]))
    for i in range(2):
        ref = _gaussian_blur_reference(x[i], sigma)
        np.testing.assert_allclose(out[i][m[i]], ref[m[i]], atol=1e-5)
    # sigma 0: no change at all
    np.testing.assert_array_equal(Blur(sigma=0.0).perturb(x, m, np.array([0, 1])), x)


@pytest.mark.parametrize("name", ["blur", "mean", "black"])
def test_fills_are_step_local_a_perturbed_pixel_keeps_its_value(name):
    """The fill comes from the original image: growing the mask changes only the new pixels."""
    x, _ = _inputs(b=1, h=12, w=12)
    small = np.zeros((1, 12, 12), bool)
    small[0, :4, :4] = True
    big = small.copy()
    big[0, 6:, 6:] = True
    p = bench.create("perturbation", name)
    a, b = p.perturb(x, small, np.array([3])), p.perturb(x, big, np.array([3]))
    np.testing.assert_array_equal(a[small], b[small])
    np.testing.assert_array_equal(b[~big], x[~big])


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="sigma"):
        Blur(sigma=-1).validate()
    with pytest.raises(ValueError, match="noise"):
        NoisyLinearImputation(noise=float("nan")).validate()
    assert NoisyLinearImputation().get_params() == {"noise": 0.01} and Blur().get_params() == {"sigma": 5.0}


# ---- ROAD --------------------------------------------------------------------------------------
def _road_reference(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Rong et al.'s system written pixel by pixel and solved densely: (H, W, C) with the imputed values."""
    h, w = mask.shape
    unknown = [(r, c) for r in range(h) for c in range(w) if mask[r, c]]
    index = {p: k for k, p in enumerate(unknown)}
    a = np.zeros((len(unknown), len(unknown)))
    b = np.zeros((len(unknown), img.shape[-1]))
    for k, (r, c) in enumerate(unknown):
        for (dy, dx), weight in NEIGHBOUR_WEIGHTS:
            rr, cc = r + dy, c + dx
            if not (0 <= rr < h and 0 <= cc < w):
                continue
            a[k, k] += weight
            if mask[rr, cc]:
                a[k, index[(rr, cc)]] -= weight
            else:
                b[k] += weight * img[rr, cc]
    out = img.astype(np.float64).copy()
    out[mask] = np.linalg.solve(a, b)
    return out


def _road_mask():
    m = np.zeros((9, 11), bool)
    m[2:6, 3:7] = True  # a block
    m[0, :3] = True  # touching the border
    m[7:, 9:] = True  # a corner
    m[4, 9] = True  # a lone pixel
    return m


def test_road_equals_the_dense_solve_of_rong_et_al_system():
    rng = np.random.default_rng(4)
    x = rng.random((1, 9, 11, 3)).astype(np.float32)
    m = _road_mask()[None]
    out = NoisyLinearImputation(noise=0.0).perturb(x, m, np.array([0]))
    ref = _road_reference(x[0], m[0])
    np.testing.assert_allclose(out[0], ref, atol=1e-5)
    # the defining property, checked on the output itself: a masked pixel is the weighted mean of its neighbours
    o = out[0].astype(np.float64)
    for r, c in zip(*np.nonzero(m[0]), strict=True):
        num, den = np.zeros(3), 0.0
        for (dy, dx), weight in NEIGHBOUR_WEIGHTS:
            if 0 <= r + dy < 9 and 0 <= c + dx < 11:
                num += weight * o[r + dy, c + dx]
                den += weight
        np.testing.assert_allclose(o[r, c], num / den, atol=1e-5)


def test_road_noise_is_seeded_per_image_and_a_full_mask_takes_the_mean():
    rng = np.random.default_rng(5)
    x = rng.random((2, 9, 11, 3)).astype(np.float32)
    m = np.stack([_road_mask()] * 2)
    noisy = NoisyLinearImputation(noise=0.05).perturb(x, m, np.array([11, 12]))
    for i, seed in enumerate((11, 12)):
        field = np.random.default_rng(seed).standard_normal(x.shape[1:])
        expected = _road_reference(x[i], m[i])[m[i]] + 0.05 * field[m[i]]
        np.testing.assert_allclose(noisy[i][m[i]], expected, atol=1e-5)
    full = np.ones((1, 9, 11), bool)
    out = NoisyLinearImputation(noise=0.0).perturb(x[:1], full, np.array([0]))
    np.testing.assert_allclose(out[0], np.broadcast_to(x[0].reshape(-1, 3).mean(axis=0), x[0].shape), atol=1e-6)


def test_road_solves_each_image_and_mask_once():
    rng = np.random.default_rng(6)
    x = rng.random((1, 9, 11, 3)).astype(np.float32)
    m = _road_mask()[None]
    p = NoisyLinearImputation()
    batch = p.perturb(np.repeat(x, 3, axis=0), np.repeat(m, 3, axis=0), np.array([1, 1, 1]))
    assert p.solves == 1  # one solve for three identical (seed, image, mask) rows of one call
    np.testing.assert_array_equal(batch[0], batch[2])
    again = p.perturb(x, m, np.array([1]))
    assert p.solves == 1 and np.array_equal(again[0], batch[0])  # from the cache
    p.perturb(x, m, np.array([2]))  # another seed (another image id): solved again
    assert p.solves == 2
    other = m.copy()
    other[0, 8, 0] = True
    p.perturb(x, other, np.array([1]))
    assert p.solves == 3
