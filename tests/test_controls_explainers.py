"""The control explainers (bench_controls): constant, edge, centre, oracle, anti-oracle."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from bench_controls import oracle_specs
from bench_controls.controls import (
    AntiOracleExplainer,
    CentrePrior,
    ConstantExplainer,
    ControlError,
    EdgeExplainer,
    OracleExplainer,
)

import bench
from bench.pipeline.settings import count_constant_heatmaps
from bench.testing import check_component, checks_for, tiny_images, tiny_model
from bench.testing.checks import check_null_control_ignores_the_image

ROLES = {
    "constant": "null-control", "edge": "other-control", "centre": "other-control",
    "oracle": "positive-control", "anti-oracle": "negative-control",
}
CLASSES = {
    "constant": ConstantExplainer, "edge": EdgeExplainer, "centre": CentrePrior,
    "oracle": OracleExplainer, "anti-oracle": AntiOracleExplainer,
}


def lesion_masks(n: int, size: int = 32, *, empty: tuple[int, ...] = ()) -> np.ndarray:
    """bool (n, size, size): a different box per image, none on the images in ``empty``."""
    m = np.zeros((n, size, size), bool)
    for i in range(n):
        if i not in empty:
            m[i, 3 + i : 12 + 2 * i, 5 : 9 + 3 * i] = True
    return m


# ---- registration -------------------------------------------------------------------------
def test_registered_with_their_roles_and_defaults():
    reg = bench.registry()
    for name, role in ROLES.items():
        entry = reg.get("explainer", name)
        component = bench.create("explainer", name)
        assert type(component) is CLASSES[name] and entry.spec.role == role, name
        assert component.get_params() == dict(entry.spec.parameters), name
        assert component.passes_per_map() == 0 and "0 passes per map" in entry.spec.description
    for name in ("oracle", "anti-oracle"):
        assert "empty" in reg.get("explainer", name).spec.description  # the Normal-image caveat
    assert "sigma=0.25" in reg.get("explainer", "centre").spec.description


def test_oracle_specs_declare_the_mask_they_read():
    reg = bench.registry()
    for name in ("oracle", "anti-oracle"):
        spec = reg.get("explainer", name).spec
        assert tuple(spec.masks) == ("lesion",) == (bench.create("explainer", name).mask,)
    for spec in oracle_specs("tumour"):
        assert tuple(spec.masks) == ("tumour",)


def test_oracle_for_another_mask():
    oracle, anti = oracle_specs("tumour")
    assert (oracle.name, anti.name) == ("oracle-tumour", "anti-oracle-tumour")
    assert (oracle.role, anti.role) == ("positive-control", "negative-control")
    assert isinstance(oracle.factory, functools.partial)
    o, a = oracle.load_factory()(), anti.load_factory()()
    assert (type(o), type(a), o.mask, a.mask) == (OracleExplainer, AntiOracleExplainer, "tumour", "tumour")
    m = lesion_masks(2)
    np.testing.assert_array_equal(o.explain(None, tiny_images(2), [0, 1], masks={"tumour": m}), m)
    assert [s.name for s in oracle_specs("lesion")] == ["oracle-lesion", "anti-oracle-lesion"]


# ---- oracle / anti-oracle ----------------------------------------------------------------
def test_oracle_and_anti_oracle_are_the_mask_and_its_inverse():
    images = tiny_images(4)
    m = lesion_masks(4, empty=(2,))
    other = np.ones_like(m)  # another mask the dataset carries: never read
    masks = {"lesion": m, "lungs": other}
    oracle = OracleExplainer().explain(tiny_model(), images, [0, 1, 2, 3], masks=masks)
    anti = AntiOracleExplainer().explain(tiny_model(), images, [0, 1, 2, 3], masks=masks)
    assert oracle.dtype == anti.dtype == np.float32 and oracle.shape == anti.shape == (4, 32, 32)
    np.testing.assert_array_equal(oracle, m.astype(np.float32))
    np.testing.assert_array_equal(anti, 1.0 - m.astype(np.float32))
    # the empty-mask image (a Normal image): a constant map for both, and only that one
    assert np.all(oracle[2] == 0) and np.all(anti[2] == 1)
    assert count_constant_heatmaps(oracle) == count_constant_heatmaps(anti) == 1
    lungs = OracleExplainer(mask="lungs").explain(None, images, [0] * 4, masks=masks)
    np.testing.assert_array_equal(lungs, other.astype(np.float32))


def test_oracle_on_the_region_grid_ranks_the_lesion_first():
    """Mapped onto the grid, the oracle's MoRF order starts with the lesion's regions, the
    anti-oracle's ends with them."""
    from bench.engine.regions import region_order, region_scores

    m = np.zeros((1, 36, 36), bool)
    m[0, 12:24, 24:36] = True  # exactly region (1, 2) = index 5 of the 3x3 grid
    images = np.zeros((1, 36, 36, 3), np.float32)
    for cls, first in ((OracleExplainer, True), (AntiOracleExplainer, False)):
        hm = cls().explain(None, images, [0], masks={"lesion": m})
        order = region_order(region_scores(hm, (36, 36), 3), "morf", ids=["x"])[0]
        assert bool(order[0] == 5) is first and bool(order[-1] == 5) is not first


def test_oracle_through_the_harness():
    """compute_heatmaps slices the declared masks batch by batch, aligned with the images."""
    from bench.pipeline.explain import compute_heatmaps

    images = (tiny_images(5) * 255).astype(np.uint8)
    m = lesion_masks(5, empty=(3,))
    for name, expected in (("oracle", m), ("anti-oracle", ~m)):
        maps = compute_heatmaps(name, tiny_model(), images, np.zeros(5, int), masks={"lesion": m}, batch_size=2)
        np.testing.assert_array_equal(maps, expected.astype(np.float32))


def test_oracle_errors_are_clear():
    images, t = tiny_images(2), [0, 1]
    with pytest.raises(ControlError, match=r"got no masks.*masks=\{'lesion'"):
        OracleExplainer().explain(None, images, t)
    with pytest.raises(ControlError, match=r"no 'lesion' among the masks passed \('lungs'\)"):
        AntiOracleExplainer().explain(None, images, t, masks={"lungs": lesion_masks(2)})
    with pytest.raises(ControlError, match=r"must be \(N, H, W\) = \(2, 32, 32\)"):
        OracleExplainer().explain(None, images, t, masks={"lesion": lesion_masks(3)})
    with pytest.raises(ControlError, match="must be bool"):
        OracleExplainer().explain(None, images, t, masks={"lesion": lesion_masks(2) * 0.5})
    with pytest.raises(ControlError) as info:
        OracleExplainer(mask="../x").validate()
    assert info.value.param == "mask"
    # 0/1 integers are read as a mask
    as_int = OracleExplainer().explain(None, images, t, masks={"lesion": lesion_masks(2).astype(np.uint8)})
    np.testing.assert_array_equal(as_int, lesion_masks(2))


# ---- constant, edge, centre --------------------------------------------------------------
def test_constant_is_all_equal_and_ignores_everything():
    a = ConstantExplainer().explain(tiny_model(), tiny_images(3, seed=1), [0, 1, 2])
    b = ConstantExplainer().explain(tiny_model(seed=9), tiny_images(3, seed=2), [3, 2, 1])
    assert a.shape == (3, 9, 9) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert count_constant_heatmaps(a) == 3
    assert ConstantExplainer(size=4).explain(None, tiny_images(1), [0]).shape == (1, 4, 4)
    assert ConstantExplainer(size=(2, 3)).explain(None, tiny_images(1), [0]).shape == (1, 2, 3)
    assert ConstantExplainer(size="image").explain(None, tiny_images(1), [0]).shape == (1, 32, 32)
    with pytest.raises(ControlError) as info:
        ConstantExplainer(size="big").validate()
    assert info.value.param == "size"


def sobel_reference(gray: np.ndarray) -> np.ndarray:
    """sqrt(Gx^2 + Gy^2), the 3x3 Sobel kernels applied pixel by pixel, borders mirrored."""
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
    p = np.pad(gray, 1, mode="symmetric")
    h, w = gray.shape
    out = np.empty((h, w))
    for y in range(h):
        for x in range(w):
            win = p[y : y + 3, x : x + 3]
            out[y, x] = np.hypot((win * kx).sum(), (win * kx.T).sum())
    return out


def test_edge_is_the_sobel_magnitude_of_the_gray_image():
    rng = np.random.default_rng(3)
    images = rng.random((2, 20, 24, 3), dtype=np.float32)
    maps = EdgeExplainer().explain(tiny_model(), images, [0, 1])
    assert maps.shape == (2, 20, 24) and maps.dtype == np.float32
    for i in range(2):
        np.testing.assert_allclose(maps[i], sobel_reference(images[i].astype(np.float64).mean(-1)), rtol=1e-5, atol=1e-6)
    # a vertical step: edges on the two columns either side of it, nothing elsewhere
    step = np.zeros((1, 10, 10, 3), np.float32)
    step[:, :, 5:] = 1.0
    m = EdgeExplainer().explain(None, step, [0])[0]
    assert np.all(m[:, 4:6] == 4.0) and np.all(m[:, :4] == 0) and np.all(m[:, 6:] == 0)
    # gray (N, H, W) images are read as they are
    np.testing.assert_allclose(EdgeExplainer().explain(None, images.mean(-1), [0, 1]), maps, rtol=1e-5, atol=1e-6)


def test_centre_prior():
    images = tiny_images(2)
    maps = CentrePrior(sigma=0.2).explain(tiny_model(), images, [0, 1])
    y, x = np.mgrid[0:32, 0:32] + 0.5
    ref = np.exp(-((y - 16) ** 2 + (x - 16) ** 2) / (2 * (0.2 * 32) ** 2))
    np.testing.assert_allclose(maps, np.stack([ref, ref]), rtol=1e-6)
    np.testing.assert_array_equal(maps, CentrePrior(sigma=0.2).explain(None, tiny_images(2, seed=5), [3, 3]))
    wide = CentrePrior().explain(None, np.zeros((1, 10, 30, 3), np.float32), [0])[0]
    assert wide.shape == (10, 30) and np.unravel_index(wide.argmax(), wide.shape)[1] in (14, 15)
    np.testing.assert_allclose(wide, wide[:, ::-1], rtol=1e-6)
    np.testing.assert_allclose(wide, wide[::-1], rtol=1e-6)
    with pytest.raises(ControlError) as info:
        CentrePrior(sigma=0).validate()
    assert info.value.param == "sigma"


# ---- the conformance kit, checks derived from the registered role -------------------------
@pytest.mark.parametrize("name", ["constant", "edge", "centre"])
def test_conformance_kit(name):
    component = bench.create("explainer", name)
    names = [n for n, _ in checks_for(component)]
    assert "check_control_ignores_the_model" in names
    assert ("check_null_control_ignores_the_image" in names) == (ROLES[name] == "null-control")
    check_component(component, tiny_model())


def test_edge_would_fail_as_a_null_control():
    """The role matters: edge maps carry information about the image."""
    with pytest.raises(AssertionError, match="null-control"):
        check_null_control_ignores_the_image(EdgeExplainer(), tiny_model())


#: masks of the kit's images by the ids the kit gives them ("img-0", "img-1", ...): one empty
_BANK = {f"img-{i}": m for i, m in enumerate(lesion_masks(4, empty=(1,)))}


def _bank_explain(self, model, images, targets, *, ids=None, masks=None):
    """The oracle as a harness would call it: the masks of the images it is given, by id."""
    bank = {self.mask: np.stack([_BANK[str(i)] for i in ids])}
    return OracleExplainer.explain(self, model, images, targets, ids=ids, masks=bank)


class _BankOracle(OracleExplainer):
    explain = _bank_explain


class _BankAntiOracle(AntiOracleExplainer):
    explain = _bank_explain


@pytest.mark.parametrize("cls, role", [(_BankOracle, "positive-control"), (_BankAntiOracle, "negative-control")])
def test_conformance_kit_oracles_given_their_masks(cls, role):
    names = [n for n, _ in checks_for(cls(), role=role)]
    assert "check_control_ignores_the_model" in names
    check_component(cls(), tiny_model(), role=role)


@pytest.mark.parametrize("name", ["oracle", "anti-oracle"])
def test_conformance_kit_on_the_registered_oracles(name):
    """The kit passes the masks the registered spec declares (one image's mask empty, as a Normal's)."""
    component = bench.create("explainer", name)
    names = [n for n, _ in checks_for(component)]
    assert "check_control_ignores_the_model" in names and "check_explainer_batch_independent" in names
    check_component(component, tiny_model())


def test_the_kit_gives_the_declared_masks_with_an_empty_one():
    from bench.testing.checks import declared_masks, registered_explainer_spec, tiny_masks

    images = tiny_images(3)
    masks = tiny_masks(images, ("lesion", "lungs"))
    assert sorted(masks) == ["lesion", "lungs"]
    for m in masks.values():
        assert m.dtype == np.bool_ and m.shape == (3, 32, 32)
        assert m[0].any() and m[1].any() and not m[2].any()  # image 2: no lesion, as a Normal image
    assert not np.array_equal(masks["lesion"], masks["lungs"])
    # the single-image calls of the batch check see the same masks as the batch
    for i in range(3):
        np.testing.assert_array_equal(tiny_masks(images[i : i + 1], ("lesion",), first=i)["lesion"][0],
                                      masks["lesion"][i])
    oracle = bench.create("explainer", "oracle")
    assert registered_explainer_spec(oracle).name == "oracle" and declared_masks(oracle) == ("lesion",)
    assert declared_masks(bench.create("explainer", "gradcam")) == ()


class _TumourPlugin:
    @bench.hookimpl
    def bench_register_explainers(self):
        return oracle_specs("tumour")


def test_the_kit_finds_an_oracle_for_another_mask_through_its_partial_factory():
    """``oracle_specs("tumour")`` registers partials of the same classes: the kit matches the spec
    whose fixed keywords agree with the component, so it passes ``tumour`` (not ``lesion``) and
    derives the control role."""
    from bench.testing.checks import declared_masks, registered_explainer_spec

    bench.register_plugin(_TumourPlugin(), name="test-tumour-oracles")
    try:
        for name, role in (("oracle-tumour", "positive-control"), ("anti-oracle-tumour", "negative-control")):
            component = bench.create("explainer", name)
            spec = registered_explainer_spec(component)
            assert (spec.name, spec.role, declared_masks(component)) == (name, role, ("tumour",))
            assert "check_control_ignores_the_model" in [n for n, _ in checks_for(component)]
            check_component(component, tiny_model())
        # the built-ins still resolve to theirs
        assert registered_explainer_spec(bench.create("explainer", "oracle")).name == "oracle"
    finally:
        bench.unregister_plugin("test-tumour-oracles")


def test_the_kit_takes_an_unregistered_explainer_spec():
    """``spec=`` drives role and masks for an explainer that is not registered (a plugin's own tests)."""
    spec = bench.ExplainerSpec(name="my-oracle", factory=OracleExplainer, role="positive-control",
                               masks=("roi",))
    component = OracleExplainer(mask="roi")
    names = [n for n, _ in checks_for(component, spec=spec)]
    assert "check_control_ignores_the_model" in names
    check_component(component, tiny_model(), spec=spec)
    # without it, the class's registered spec (the built-in oracle's) declares 'lesion', not 'roi'
    with pytest.raises(ControlError, match=r"no 'roi' among the masks passed \('lesion'\)"):
        check_component(OracleExplainer(mask="roi"), tiny_model())


# ---- the nested transfer model (never called: controls ignore the model) -----------------
@pytest.fixture(scope="module")
def vgg16():
    model = bench.create("model", "vgg16", weights="none", input_shape=[64, 64, 3], pool_size=2)
    model.keras  # noqa: B018
    return model


def test_smoke_on_nested_vgg16(vgg16):
    images = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    masks = {"lesion": lesion_masks(2, 64, empty=(0,))}
    for name in ROLES:
        kwargs = {"masks": masks} if "oracle" in name else {}
        maps = bench.create("explainer", name).explain(vgg16, images, np.array([0, 1]), ids=["a", "b"], **kwargs)
        assert maps.ndim == 3 and len(maps) == 2 and maps.dtype == np.float32 and np.all(np.isfinite(maps)), name
