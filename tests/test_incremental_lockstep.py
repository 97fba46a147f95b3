"""Lockstep incremental updates, the runtime check of ``auto``, and occlusion on the same engine.

All exact against full passes (max |dp| <= 1e-5) at small sizes; no timing is asserted
(timings live in tests/benchmarks/).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import bench  # noqa: E402
from bench.engine import incremental  # noqa: E402
from bench.engine.curves import evaluate_aopc  # noqa: E402
from bench.engine.forward import ForwardBatch  # noqa: E402
from bench.engine.incremental import (  # noqa: E402
    CallTiming,
    IncrementalForward,
    RuntimeCheck,
    occlusion_outputs,
)
from bench.errors import ConfigError  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_incremental import calibrate, hand_built_net, reinit  # noqa: E402

TOL = 1e-5


def _sequences(n_img: int, steps: int, size: int, seed: int = 0) -> np.ndarray:
    """x[i, k]: image i after k random box perturbations (each step changes one box)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n_img, steps, size, size, 3), np.float32)
    for i in range(n_img):
        cur = rng.uniform(0, 1, (size, size, 3)).astype(np.float32)
        for k in range(steps):
            if k:
                y0, x0 = rng.integers(0, size - 4, 2)
                hh, ww = rng.integers(2, 9, 2)
                cur = cur.copy()
                cur[y0 : y0 + hh, x0 : x0 + ww] = rng.uniform(0, 1, cur[y0 : y0 + hh, x0 : x0 + ww].shape)
            x[i, k] = cur
    return x


def _batch(x: np.ndarray, img: list[int], steps: list[int]) -> ForwardBatch:
    n = len(img)
    return ForwardBatch(images=x[img, steps], image_index=np.asarray(img), step=np.asarray(steps),
                        changed_box=np.zeros((n, 4), np.int64), targets=np.zeros(n, np.int64))


@pytest.fixture(scope="module")
def net() -> object:
    km = hand_built_net(33)
    reinit(km, seed=11)
    return km


@pytest.mark.parametrize("order", ["step-major", "image-major", "shuffled-groups"])
def test_lockstep_rows_in_any_order_are_exact(net: object, order: str) -> None:
    """Rows step-major across a group of images (one call updates every image's step k), image-major,
    or groups interleaved: each row sees exactly its own x^(k)."""
    n_img, steps = 3, 7
    x = _sequences(n_img, steps, 33)
    expected = np.asarray(net(x.reshape(-1, 33, 33, 3))).reshape(n_img, steps, -1)  # type: ignore[operator]
    if order == "step-major":
        pairs = [(i, k) for k in range(steps) for i in range(n_img)]
    elif order == "image-major":
        pairs = [(i, k) for i in range(n_img) for k in range(steps)]
    else:
        pairs = [(i, k) for g in ((0, 1), (2,)) for k in range(steps) for i in g]
    strat = IncrementalForward()
    strat.prepare(net, batch_size=8, image_shape=(33, 33, 3), mask_local=True)
    got = np.zeros_like(expected)
    for s in range(0, len(pairs), 5):  # batches of 5: a step's rows and an image's rows span calls
        chunk = pairs[s : s + 5]
        out = strat.forward(_batch(x, [p[0] for p in chunk], [p[1] for p in chunk]))
        for (i, k), row in zip(chunk, out, strict=True):
            got[i, k] = row
    assert np.abs(got - expected).max() <= TOL
    stats = strat.layer_report()
    assert all(r["rows"] > 0 for r in stats if r["kind"] == "window")
    assert all(r["padded"] <= r["ideal"] + 1e-9 for r in stats)


def test_lockstep_equals_one_row_at_a_time_and_full(net: object) -> None:
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 1, (3, 33, 33, 3)).astype("float32")
    heatmaps = rng.uniform(0, 1, (3, 4, 4)).astype("float32")
    calibrate(net, images)
    full = evaluate_aopc(net, images, None, heatmaps, grid=4, batch_size=12, strategy="full")
    lock = evaluate_aopc(net, images, full.targets, heatmaps, grid=4, batch_size=12, strategy=IncrementalForward())
    one = evaluate_aopc(net, images, full.targets, heatmaps, grid=4, batch_size=12,
                        strategy=IncrementalForward(lockstep_rows=1))
    assert lock.strategy == one.strategy == "incremental"
    assert np.abs(lock.curves - full.curves).max() <= TOL
    assert np.abs(one.curves - full.curves).max() <= TOL
    assert float(np.ptp(full.curves, axis=1).min()) > 1e-3


def test_unchanged_rows_big_boxes_repeats_and_memory_cap(net: object) -> None:
    """Identical consecutive images, a step that changes most of the image (a full pass in the
    middle of a sequence), a repeated step, and more images in one call than the cache holds."""
    rng = np.random.default_rng(3)
    x = _sequences(6, 4, 33, seed=4)
    x[0, 2] = x[0, 1]  # no change
    x[1, 2] = rng.uniform(0, 1, (33, 33, 3))  # the whole image changes
    strat = IncrementalForward(memory_budget_mb=0.01)  # one image cached, two held during a call
    strat.prepare(net, batch_size=32, image_shape=(33, 33, 3), mask_local=True)
    assert strat.info["cached_images"] == 1
    pairs = [(i, k) for k in range(4) for i in range(6)] + [(0, 3), (0, 3)]
    out = strat.forward(_batch(x, [p[0] for p in pairs], [p[1] for p in pairs]))
    expected = np.asarray(net(np.stack([x[i, k] for i, k in pairs])))  # type: ignore[operator]
    assert np.abs(out - expected).max() <= TOL
    assert len(strat._states) <= 1


def _vgg64() -> object:
    return bench.create("model", "vgg16", weights="none", input_shape=(64, 64, 3), num_classes=4, pool_size=2)


def _vgg64_full_and(model, strategy, *, seed: int):
    """(images, full-pass result, ``strategy``'s result) on 2 random 64 px images, 9x9 grid,
    the weights re-drawn so that the curves move."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (2, 64, 64, 3)).astype("float32")
    heatmaps = rng.uniform(0, 1, (2, 9, 9)).astype("float32")
    reinit(model.keras)
    calibrate(model.keras, images)
    full = evaluate_aopc(model, images, None, heatmaps, grid=9, batch_size=40, strategy="full")
    return images, full, evaluate_aopc(model, images, full.targets, heatmaps, grid=9, batch_size=40,
                                       strategy=strategy)


def test_vgg16_small_lockstep_exact_and_layer_report() -> None:
    model = _vgg64()
    strat = IncrementalForward()
    images, full, inc = _vgg64_full_and(model, strat, seed=1)
    assert np.abs(inc.curves - full.curves).max() <= TOL
    report = strat.layer_report(images[:1])
    names = [r["layer"] for r in report]
    assert "block1_conv1" in names and "block5_conv3" in names
    for r in report:
        assert {"ideal", "padded", "achieved", "full_ms_per_row", "compute_ms_per_row"} <= set(r)
        assert 1.0 <= r["padded"] <= r["ideal"] + 1e-9


# ---- auto's runtime check ------------------------------------------------------------------------
def _timing(full_rows: int, inc_rows: int, total: float, full_s: float = 0.0, probe_rows: int = 0,
            probe_s: float = 0.0) -> CallTiming:
    return CallTiming(full_rows=full_rows, full_s=full_s, inc_rows=inc_rows, probe_rows=probe_rows,
                      probe_s=probe_s, total_s=total)


def test_runtime_check_keeps_a_clear_win_without_a_probe() -> None:
    chk = RuntimeCheck(predicted_gain=3.0, start="incremental")
    chk.observe_incremental(_timing(1, 63, 2.0, full_s=0.5))
    assert chk.next_path() == ("incremental", 0) and not chk.decision
    chk.observe_incremental(_timing(1, 63, 2.0, full_s=0.5))
    assert chk.current == "incremental" and chk.decision.startswith("kept incremental")
    s = chk.summary()
    assert s["measured_gain"] == pytest.approx(0.5 / (4.0 / 128), rel=1e-3)
    assert s["full_rows_per_s"] and s["incremental_rows_per_s"] and s["predicted_gain"] == 3.0


def test_runtime_check_trusts_a_smaller_free_gain_measured_in_batches() -> None:
    """Step-0 rows run in batches (a lockstep group) cost about what a full batch costs per row, so a
    2x free gain is trusted there; the same 2x from one-row passes (dearer per row) is probed."""
    batched = RuntimeCheck(predicted_gain=3.0, start="incremental")
    one_by_one = RuntimeCheck(predicted_gain=3.0, start="incremental")
    for _ in range(2):  # 4 free rows at 0.5 s each, 60 incremental rows: 0.25 s per row in all
        batched.observe_incremental(CallTiming(full_rows=4, full_s=2.0, full_calls=1, inc_rows=60, total_s=16.0))
        one_by_one.observe_incremental(CallTiming(full_rows=4, full_s=2.0, full_calls=4, inc_rows=60,
                                                  total_s=16.0))
    assert batched.current == "incremental" and batched.decision.startswith("kept incremental")
    assert batched.summary()["measured_gain"] == pytest.approx(2.0, rel=1e-3)
    assert "in 2 call(s)" in batched.summary()["full_measured_on"]
    assert not one_by_one.decision and one_by_one.next_path() == ("incremental", incremental.PROBE_ROWS)


def test_runtime_check_probes_when_unsure_and_switches_to_full() -> None:
    chk = RuntimeCheck(predicted_gain=3.0, start="incremental")
    for _ in range(2):  # 1 s per row incremental, the free estimate 1.5 s: unsure
        chk.observe_incremental(_timing(1, 63, 64.0, full_s=1.5))
    assert chk.next_path() == ("incremental", 8)
    # the probe: 8 rows at 0.5 s each in a batched full pass, the other 56 rows incremental at 1 s
    chk.observe_incremental(_timing(0, 56, 60.0, probe_rows=8, probe_s=4.0))
    assert chk.current == "full"
    assert "switched to full passes" in chk.decision and "predicted 3.00x" in chk.decision
    assert chk.summary()["measured_gain"] == pytest.approx(0.5, rel=1e-3)
    assert chk.next_path() == ("full", 0)


def test_runtime_check_starting_full_tries_incremental_once() -> None:
    chk = RuntimeCheck(predicted_gain=0.9, start="full")
    assert chk.next_path() == ("full", 0)
    chk.observe_full(64, 64.0)
    assert chk.next_path() == ("incremental", 0)
    chk.observe_incremental(_timing(1, 63, 32.0, full_s=1.0))
    assert chk.current == "incremental" and "switched to incremental" in chk.decision
    slow = RuntimeCheck(predicted_gain=0.9, start="full")
    slow.observe_full(64, 64.0)
    slow.observe_incremental(_timing(1, 63, 128.0, full_s=1.0))
    assert slow.current == "full" and "kept full passes" in slow.decision


@pytest.mark.parametrize("min_gain", [0.0, 1e6])
def test_auto_with_its_runtime_check_is_exact_whatever_it_decides(net: object, min_gain: float,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting incremental or full, switching or not mid-run: the curves are those of full passes."""
    monkeypatch.setattr(incremental, "PROBE_MIN_GAIN", 0.0)  # starting full, always try incremental
    rng = np.random.default_rng(5)
    images = rng.uniform(0, 1, (4, 33, 33, 3)).astype("float32")
    heatmaps = rng.uniform(0, 1, (4, 3, 3)).astype("float32")
    full = evaluate_aopc(net, images, None, heatmaps, grid=3, batch_size=4, strategy="full")
    strat = IncrementalForward(mode="auto", min_gain=min_gain)
    auto = evaluate_aopc(net, images, full.targets, heatmaps, grid=3, batch_size=4, strategy=strat)
    assert np.abs(auto.curves - full.curves).max() <= TOL
    check = auto.strategy_info["runtime_check"]
    assert check["started"] == ("incremental" if min_gain == 0.0 else "full")
    assert check["decision"] and "pending" not in check["decision"]
    assert check["incremental_rows_per_s"] > 0 and check["full_rows_per_s"] > 0
    assert auto.strategy == auto.strategy_info["used"] in ("incremental", "full")


# ---- occlusion -----------------------------------------------------------------------------------
def _grid_boxes(size: int, g: int) -> np.ndarray:
    e = np.linspace(0, size, g + 1).round().astype(int)
    return np.array([(e[r], e[r + 1], e[c], e[c + 1]) for r in range(g) for c in range(g)], np.int64)


@pytest.mark.parametrize("fill", ["zero", "per-image", "baseline"])
def test_occlusion_outputs_incremental_equals_full(net: object, fill: str) -> None:
    rng = np.random.default_rng(7)
    images = rng.uniform(0, 1, (3, 33, 33, 3)).astype("float32")
    boxes = np.concatenate([_grid_boxes(33, 4), [[0, 33, 0, 20], [5, 9, 30, 33]]])  # one box > half the image
    fills = {"zero": 0.0, "per-image": images.mean(axis=(1, 2, 3)),
             "baseline": rng.uniform(0, 1, (33, 33, 3)).astype("float32")}
    f = fills[fill]
    full = occlusion_outputs(net, images, boxes, fill=f, batch_size=7, strategy="full")
    inc = occlusion_outputs(net, images, boxes, fill=f, batch_size=7, strategy="incremental",
                            memory_budget_mb=0.01)
    assert full.strategy == "full" and inc.strategy == "incremental"
    assert inc.occluded.shape == (3, len(boxes), 4) and inc.base.shape == (3, 4)
    np.testing.assert_allclose(inc.base, np.asarray(net(images)), atol=TOL)  # type: ignore[operator]
    assert np.abs(inc.occluded - full.occluded).max() <= TOL
    assert np.abs(full.occluded - full.base[:, None]).max() > 1e-3  # occluding changes the outputs
    # the reference: each occluded image built by hand
    x = images[1].copy()
    y0, y1, x0, x1 = boxes[2]
    x[y0:y1, x0:x1] = np.broadcast_to(np.asarray(f, np.float32)[1] if fill == "per-image" else f,
                                      x.shape)[y0:y1, x0:x1]
    np.testing.assert_allclose(inc.occluded[1, 2], np.asarray(net(x[None]))[0], atol=TOL)  # type: ignore[operator]


def test_occlusion_outputs_auto_falls_back_with_reason_and_checks_inputs() -> None:
    model = bench.create("model", "simple-cnn", weights="none", input_shape=(32, 32, 3), num_classes=4)
    images = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    out = occlusion_outputs(model, images, _grid_boxes(32, 2), strategy="auto")
    assert out.strategy == "full" and "PerImageStandardization" in out.info["reason"]
    assert out.occluded.shape == (2, 4, 4) and out.forward_passes == 10
    with pytest.raises(ConfigError, match="box"):
        occlusion_outputs(model, images, np.array([[0, 40, 0, 4]]))
    with pytest.raises(ConfigError, match="fill"):
        occlusion_outputs(model, images, _grid_boxes(32, 2), fill=np.zeros(5))
    with pytest.raises(ConfigError, match="fill"):
        occlusion_outputs(model, images, _grid_boxes(32, 2), fill=np.zeros((2, 5)))


# ---- prefix/suffix split ------------------------------------------------------------------------
def test_prefix_split_is_chosen_by_the_cost_model_and_exact() -> None:
    """VGG16 at 64 px: the boxes of a 7-pixel region cover the 8x8 maps of block 4 and 5, so the
    cost model ends the incremental prefix earlier; the split run equals full passes."""
    model = _vgg64()
    plan = incremental.analyse_model(model.keras)
    n_ops, gain = incremental.best_prefix_split(plan)
    assert 0 < n_ops < len(plan.ops) and gain > incremental.estimate_gain(plan)
    split_plan = incremental.analyse_model(model.keras, max_ops=n_ops)
    assert len(split_plan.ops) == n_ops and split_plan.stop_reason == "split"
    strat = IncrementalForward(split=True)
    _, full, inc = _vgg64_full_and(model, strat, seed=4)
    assert inc.strategy_info["prefix_split"]["layers"] == n_ops
    assert inc.strategy_info["prefix_layers"] == n_ops and "split" in inc.strategy_info["prefix_ends_at"]
    assert np.abs(inc.curves - full.curves).max() <= TOL
    # the limit of a split (Amdahl): the share of multiply-adds in the prefix, counted here by hand
    # over the convolutions and dense layers (the cost model also counts element-wise layers)
    prefix_names = {op.layer.name for op in split_plan.ops}

    def macs(layer: object) -> float:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            return float(np.prod(layer.output.shape[1:3])) * kh * kw * cin * cout
        if isinstance(layer, keras.layers.Dense):
            return float(np.prod(layer.kernel.shape))
        return 0.0

    layers = [lay for lay in model.keras._flatten_layers() if not isinstance(lay, keras.Model)]
    by_hand = sum(macs(lay) for lay in layers if lay.name in prefix_names) / sum(macs(lay) for lay in layers)
    info = inc.strategy_info
    assert info["prefix_mac_share"] == pytest.approx(by_hand, abs=0.02)
    assert info["upper_bound_gain"] == pytest.approx(1 / (1 - info["prefix_mac_share"]), rel=1e-3)
    assert f"at most {info['upper_bound_gain']:.2f}x" in info["limit"]
    assert gain <= info["upper_bound_gain"]  # the cost model's prediction respects the bound
    whole = IncrementalForward()  # "incremental" keeps the whole local prefix unless asked
    whole.prepare(model, batch_size=40, image_shape=(64, 64, 3), mask_local=True)
    assert "prefix_split" not in whole.info and whole.info["prefix_layers"] == len(plan.ops)
    assert whole.info["prefix_mac_share"] > 0.99 and "limit" not in whole.info


# ---- tracing -------------------------------------------------------------------------------------
def test_box_graphs_trace_once_whatever_the_steps_images_and_batch_sizes(net: object) -> None:
    """Every graph of the engine (prefix, suffix, one box graph per layer) is traced once per model:
    box sizes, rows per call and batch sizes vary from step to step and must not retrace (a retrace
    per new shape would cost more than the boxes save)."""
    rng = np.random.default_rng(7)
    images = rng.uniform(0, 1, (5, 33, 33, 3)).astype("float32")
    full = evaluate_aopc(net, images, None, rng.uniform(0, 1, (5, 3, 3)), grid=3, batch_size=7, strategy="full")
    strat = IncrementalForward()
    evaluate_aopc(net, images[:1], full.targets[:1], rng.uniform(0, 1, (1, 3, 3)), grid=3, batch_size=7,
                  strategy=strat)
    fns = strat._fns
    graphs = [fns.prefix, fns.suffix, *fns.boxes]
    before = [g.experimental_get_tracing_count() for g in graphs]
    assert max(before) <= 1
    for grid, bs in ((3, 7), (5, 16), (7, 64), (4, 5)):  # other box sizes, rows per call, batch sizes
        heatmaps = rng.uniform(0, 1, (5, grid, grid)).astype("float32")
        ref = evaluate_aopc(net, images, full.targets, heatmaps, grid=grid, batch_size=bs, strategy="full")
        again = IncrementalForward()
        got = evaluate_aopc(net, images, full.targets, heatmaps, grid=grid, batch_size=bs, strategy=again)
        assert again._fns is fns  # the same graphs (not rebuilt)
        assert np.abs(got.curves - ref.curves).max() <= TOL
    after = [g.experimental_get_tracing_count() for g in graphs]
    assert after == before, f"the engine's graphs retraced: {before} -> {after}"


def test_box_graphs_follow_weights_changed_after_tracing() -> None:
    """The box graphs hold the kernels as constants: new weights (between evaluations) rebuild them."""
    km = hand_built_net(33)
    reinit(km, seed=1)
    rng = np.random.default_rng(8)
    images = rng.uniform(0, 1, (2, 33, 33, 3)).astype("float32")
    heatmaps = rng.uniform(0, 1, (2, 3, 3)).astype("float32")
    first = IncrementalForward()
    evaluate_aopc(km, images, [0, 1], heatmaps, grid=3, batch_size=8, strategy=first)
    reinit(km, seed=2)
    full = evaluate_aopc(km, images, [0, 1], heatmaps, grid=3, batch_size=8, strategy="full")
    second = IncrementalForward()
    inc = evaluate_aopc(km, images, [0, 1], heatmaps, grid=3, batch_size=8, strategy=second)
    assert second._fns is not first._fns
    assert np.abs(inc.curves - full.curves).max() <= TOL
    # changed again (a model whose weights keep changing): the rebuilt graphs read the variables,
    # so they are reused, not rebuilt at every change, and stay exact
    assert second._fns.weights == []
    reinit(km, seed=3)
    third = IncrementalForward()
    inc = evaluate_aopc(km, images, [0, 1], heatmaps, grid=3, batch_size=8, strategy=third)
    assert third._fns is second._fns
    full = evaluate_aopc(km, images, [0, 1], heatmaps, grid=3, batch_size=8, strategy="full")
    assert np.abs(inc.curves - full.curves).max() <= TOL


def test_box_graphs_raise_no_false_retracing_warning(caplog: pytest.LogCaptureFixture) -> None:
    """~a dozen per-layer box graphs, and the prefix, suffix and full-pass graphs of six models, each
    traced once, are not "frequent retracing" (TensorFlow counts traces per Python code object:
    functions built per model or per layer must not share one)."""
    rng = np.random.default_rng(9)
    images = rng.uniform(0, 1, (3, 33, 33, 3)).astype("float32")
    with caplog.at_level("WARNING", logger="tensorflow"):
        for seed in range(6):
            km = hand_built_net(33)
            reinit(km, seed=seed)
            strat = IncrementalForward()
            heat = rng.uniform(0, 1, (3, 3, 3))
            evaluate_aopc(km, images, [0, 1, 2], heat, grid=3, batch_size=8, strategy=strat)
            evaluate_aopc(km, images, [0, 1, 2], heat, grid=3, batch_size=8, strategy="full")
    assert len(strat._fns.boxes) >= 8  # enough graphs to have tripped TensorFlow's detector
    assert all(g.experimental_get_tracing_count() == 1 for g in [strat._fns.prefix, *strat._fns.boxes])
    retracing = [r.getMessage() for r in caplog.records if "retracing" in r.getMessage()]
    assert not retracing, retracing[0]


def test_lockstep_images_group_step_zero_rows_into_one_prefix_pass(net: object,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The strategy asks the engine to interleave its images (``lockstep_images``): the step-0 rows of a
    group then reach it in one batch and get one batched prefix pass; the curves stay exact."""
    rng = np.random.default_rng(12)
    images = rng.uniform(0, 1, (5, 33, 33, 3)).astype("float32")
    heatmaps = rng.uniform(0, 1, (5, 3, 3)).astype("float32")
    full = evaluate_aopc(net, images, None, heatmaps, grid=3, batch_size=20, strategy="full")
    monkeypatch.setattr(incremental, "LOCKSTEP_IMAGES", 4)
    strat = IncrementalForward()
    seen: list[ForwardBatch] = []
    forward = strat.forward

    def spy(batch: ForwardBatch) -> np.ndarray:
        seen.append(batch)
        return forward(batch)

    monkeypatch.setattr(strat, "forward", spy)
    got = evaluate_aopc(net, images, full.targets, heatmaps, grid=3, batch_size=20, strategy=strat)
    assert np.abs(got.curves - full.curves).max() <= TOL
    assert strat.lockstep_images == 4 and got.strategy_info["lockstep_images"] == 4
    # groups of 4 images then 1; every batch holds one block of steps of every image of its group
    assert [sorted(set(b.image_index.tolist())) for b in seen] == [[0, 1, 2, 3]] * 2 + [[4]]
    assert seen[0].step.tolist() == [0, 1, 2, 3, 4] * 4
    assert strat.totals.full_rows == 5  # one step-0 row per image, nothing else
    prefix_rows: list[int] = []
    prefix = strat._prefix_fn

    def count(x: object) -> object:
        prefix_rows.append(int(x.shape[0]))  # type: ignore[attr-defined]
        return prefix(x)

    strat2 = IncrementalForward()
    evaluate_aopc(net, images[:4], full.targets[:4], heatmaps[:4], grid=3, batch_size=20, strategy=strat2)
    strat2._prefix_fn = count  # the traced graphs are shared: wrap this instance's handle only
    strat2._states.clear()
    strat2.forward(seen[0])
    assert prefix_rows == [4]  # the group's four step-0 rows in one prefix call


@pytest.mark.parametrize(("n", "steps", "bs", "g"), [(5, 10, 20, 4), (7, 82, 64, 4), (3, 82, 64, 8), (9, 10, 7, 3),
                                                     (4, 10, 3, 8), (6, 5, 64, 1), (0, 10, 8, 4)])
def test_batch_schedule_covers_every_row_once_in_step_order(n: int, steps: int, bs: int, g: int) -> None:
    from bench.engine.curves import batch_schedule

    sched = batch_schedule(n, steps, bs, g)
    img = np.concatenate([i for i, _ in sched]) if sched else np.zeros(0, int)
    k = np.concatenate([s for _, s in sched]) if sched else np.zeros(0, int)
    pairs = sorted(zip(img.tolist(), k.tolist(), strict=True))
    assert pairs == [(i, s) for i in range(n) for s in range(steps)]  # every row once
    for i in range(n):  # each image's steps arrive in increasing order
        assert np.all(np.diff(k[img == i]) == 1)
    for bi, _ in sched:
        assert 1 <= len(bi) <= bs and np.all(np.diff(bi) >= 0)  # bounded, each image's rows contiguous
    if g == 1 or min(g, bs) == 1:  # image-major: the pairs in order, batches of bs
        assert img.tolist() == [i for i in range(n) for _ in range(steps)]
        assert [len(b) for b, _ in sched[:-1]] == [bs] * (len(sched) - 1)
    else:
        for bi, bk in sched:  # one block of steps, the same for every image of the batch
            members = sorted(set(bi.tolist()))
            blocks = {tuple(bk[bi == i].tolist()) for i in members}
            assert len(blocks) == 1 and len(members) <= g


def test_replay_parts_keep_images_whole_and_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incremental, "REPLAY_THREADS", 2)  # (one on a single-CPU machine)
    rows = np.arange(12)
    img_of = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 0, 1])
    parts = incremental._replay_parts(rows, img_of)
    assert 1 < len(parts) <= incremental.REPLAY_THREADS
    assert sorted(np.concatenate(parts).tolist()) == rows.tolist()
    owners = [set(img_of[p].tolist()) for p in parts]
    assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1:])  # an image in one part
    assert all(np.all(np.diff(p) > 0) for p in parts)  # row order kept
    assert [len(p) for p in incremental._replay_parts(rows, np.zeros(12, int))] == [12]


def test_replay_threads_all_finish_before_an_error_is_raised() -> None:
    import threading
    import time

    done: list[str] = []
    gate = threading.Event()

    def slow() -> None:
        gate.wait(5)
        time.sleep(0.05)
        done.append("slow")

    def fails() -> None:
        gate.set()
        raise ValueError("replay failed")

    with pytest.raises(ValueError, match="replay failed"):
        incremental._run_all([slow, fails])
    assert done == ["slow"]  # the other task had ended when the error reached the caller


def test_buffer_arena_reuses_one_aligned_block_and_never_overlaps_within_a_batch() -> None:
    arena = incremental._BufferArena()
    shapes = [(3, 5, 7, 2), (1, 9, 9, 64), (2, 4, 4, 3)]

    def batch() -> list[np.ndarray]:
        return [arena.take(s) for s in shapes]

    arena.reset(max_bytes=2**20)
    first = batch()  # the first batch has no block yet: fresh buffers, and the block is sized for next time
    assert all(b.dtype == np.float32 and b.shape == s for b, s in zip(first, shapes, strict=True))
    assert arena.nbytes == 0
    arena.reset(max_bytes=2**20)
    assert arena.nbytes >= sum(int(np.prod(s)) * 4 for s in shapes)
    second = batch()
    for b in second:
        assert b.ctypes.data % 64 == 0 and b.flags.c_contiguous
        assert np.shares_memory(b, arena._block)  # carved from the block, not allocated
    for k, b in enumerate(second):  # disjoint: writing one leaves the others as they were
        b.fill(float(k))
    assert [float(b.min()) for b in second] == [float(b.max()) for b in second] == [0.0, 1.0, 2.0]
    arena.reset(max_bytes=2**20)
    assert [b.ctypes.data for b in batch()] == [b.ctypes.data for b in second]  # the same memory again
    big = arena.take((1024, 1024))  # beyond the block: a fresh buffer, still aligned
    assert not np.shares_memory(big, arena._block) and big.ctypes.data % 64 == 0
    arena.reset(max_bytes=2**20)  # 4 MiB wanted > 1 MiB allowed: a block of the bound
    assert 2**20 <= arena.nbytes <= 2**20 + 64
    arena.reset(max_bytes=16)  # a lower bound than the block held: the block is dropped
    assert arena.nbytes == 0


def test_arena_pool_keeps_the_largest_idle_arena_and_release_buffers_frees_it() -> None:
    pool = incremental._ArenaPool()
    a, b = pool.acquire(), pool.acquire()
    assert a is not b  # two batches at once get two arenas
    for arena, n in ((a, 1000), (b, 10)):
        arena.reset(2**20)
        arena.take((n,))
        arena.reset(2**20)
    pool.release(b)
    pool.release(a)
    assert pool.acquire() is a  # the larger block is the one kept
    pool.release(a)
    pool.clear()
    assert pool.acquire() not in (a, b)


def test_release_buffers_frees_the_block_an_evaluation_kept(net: object) -> None:
    images = _sequences(2, 4, 33)[:, 0]
    heat = np.random.default_rng(0).random((2, 3, 3)).astype(np.float32)
    evaluate_aopc(net, images, None, heat, grid=3, batch_size=8, strategy=IncrementalForward())
    evaluate_aopc(net, images, None, heat, grid=3, batch_size=8, strategy=IncrementalForward())
    kept = incremental._ARENAS._idle
    assert kept and kept[0].nbytes > 0  # kept between calls, reused by the second
    incremental.release_buffers()
    assert not incremental._ARENAS._idle


def test_a_batch_wanting_more_than_the_bound_reuses_a_block_of_the_bound() -> None:
    arena = incremental._BufferArena()
    arena.reset(max_bytes=4096)
    arena.take((4096,))  # 16 KiB wanted
    arena.reset(max_bytes=4096)
    assert 4096 <= arena.nbytes <= 4096 + 64
    first = arena.take((512,))  # 2 KiB: from the block
    assert np.shares_memory(first, arena._block)
    assert not np.shares_memory(arena.take((2048,)), arena._block)  # beyond it: fresh


def test_propagate_answers_are_memoised_read_only_and_equal_to_a_fresh_walk(net: object) -> None:
    plan = incremental.analyse_model(getattr(net, "keras", net))
    fresh = dict(incremental.propagate(plan, [2, 9, 3, 11]))  # any int sequence, a list too
    again = incremental.propagate(plan, (2, 9, 3, 11))
    assert again is plan.reach[(2, 9, 3, 11)] and dict(again) == fresh
    with pytest.raises(TypeError):
        again[plan.input_id] = None  # type: ignore[index]
    boxes = {plan.input_id: (2, 9, 3, 11)}
    for op in plan.ops:  # the walk by hand
        b = incremental._union([boxes.get(t) for t in op.inputs])
        boxes[op.output] = None if b is None else incremental.out_box(op, b)
    assert boxes == fresh
