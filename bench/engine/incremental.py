"""Incremental MoRF inference: reuse the previous step's activations (Krypton-style), in lockstep.

A MoRF step changes one region of the image, so in a CNN only the activations
inside that region's growing receptive-field box change. :class:`IncrementalForward`
walks the Keras functional graph up to the first layer where spatial locality
ends (Flatten, global pooling, Dense, ...), keeps every activation of that
*local prefix* for the images being evaluated, and recomputes only the changed
box of each layer from the cached inputs (the box grows by the kernel's halo, is
mapped through strides and padding and clipped to the map), then runs the rest
of the network (the *suffix*) normally, batched over the rows of the engine's batch.

Lockstep: one forward call updates all of its rows together, layer by layer. The
boxes of a layer (all rows: consecutive steps of one image, or step k of several
images) are grouped by size, padded to the largest of their group and computed as
one batched call per group (:func:`_make_calls`: groups merge while the padding costs
less than a call); then every row's state is *replayed* in row order: its box is
written over its predecessor's state and the next layers' input crops are read from
it, so each row sees exactly the activations of its own ``x^(k)``. Rows may come in
any order (image-major as the engine sends them, or step-major within groups of images).

Exactness does not depend on the engine's ``changed_box``: the changed box of
the input is the bounding box of the pixels that actually differ from the
predecessor ``x^(k-1)`` of the same image, so any perturbation is evaluated exactly;
a row whose predecessor is not cached (step 0, another order) gets a full pass.
``mask_local=False`` perturbations, models where the box count predicts a small gain
and unsupported layers make ``"auto"`` choose full passes, with the reason recorded
(:attr:`IncrementalForward.info`); ``"auto"`` also checks its choice at run time
(:class:`RuntimeCheck`) and switches when the measured throughput says so.

Occlusion rides the same engine (:func:`occlusion_outputs`): each occluded row is a
variant of the cached original (its boxes are written, read and undone).

Supported in the local prefix: Conv2D (any stride, same/valid padding, no
dilation, groups=1), DepthwiseConv2D, MaxPooling2D (same/valid),
AveragePooling2D (valid), ZeroPadding2D, merges (Add, Subtract, Multiply,
Average, Maximum, Minimum, Concatenate on channels) and element-wise layers
(Activation, ReLU, BatchNormalization in inference, Rescaling, Normalization,
Dropout, and any custom layer that passes an element-wise probe, such as the
built-in models' preprocessing layers). Nested single-input Keras models (a
backbone not inlined) are walked through as if inlined.

This is the only module that reads Keras internals (:data:`KERAS_INTERNALS`;
canary: :func:`check_keras_internals`, tests/test_incremental_canary.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from bench.engine.forward import ForwardBatch, FullForward
from bench.engine.tracing import graph_function
from bench.errors import ConfigError

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1), half-open

#: layers where spatial locality ends (the prefix stops before them, silently)
LOCALITY_END = frozenset(
    {
        "Flatten", "Dense", "EinsumDense", "Reshape", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
        "GlobalAveragePooling1D", "GlobalMaxPooling1D", "Softmax", "Permute",
    }
)
POINTWISE = frozenset(
    {
        "Activation", "ReLU", "LeakyReLU", "ELU", "BatchNormalization", "Rescaling", "Normalization",
        "Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Identity",
    }
)
MERGE = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"})
DEFAULT_MIN_GAIN = 1.2
DEFAULT_MEMORY_BUDGET_MB = 1024.0
#: the throughput of a layer's box calls relative to a full pass (measured on VGG16 at 299 on the
#: 2-core reference CPU: ~0.6, the loss of small maps and of calls of a few rows)
SMALL_BOX_EFFICIENCY = 0.6
#: the cost of copying one byte of activations (replaying a row's state: writing its boxes,
#: reading the next layers' crops), in multiply-adds at full-pass throughput (~2.5 GB/s of
#: strided copies against ~80 GMAC/s: DenseNet201's concatenations copy ~0.7 GB per step)
REPLAY_MACS_PER_BYTE = 30.0
#: the fixed cost of one batched layer call in multiply-adds at full-pass throughput, plus
#: :data:`CALL_OVERHEAD_MACS_PER_WEIGHT` per kernel weight (oneDNN reorders the weights on
#: every call: ~5 ms for a 3x3x512x512 kernel on the 2-core reference CPU); rows whose boxes
#: differ in size are split into separate calls only when padding would cost more
CALL_OVERHEAD_MACS = 1.2e7
CALL_OVERHEAD_MACS_PER_WEIGHT = 130.0
#: ``auto``'s runtime check (:class:`RuntimeCheck`): incremental calls measured before deciding,
#: the measured gain above which the free full-pass estimate is trusted, the rows of one probe
#: call given a batched full pass when it is not, and the lowest predicted gain for which
#: ``auto`` starting with full passes still tries incremental on one call
CHECK_CALLS = 2
CONFIDENT_GAIN = 4.0
#: the same threshold where the free full passes ran in batches of at least
#: :data:`BATCHED_FREE_ROWS` rows (a lockstep group's step-0 rows): their cost per row is then
#: close to a full batch's (VGG16 at 160 px measured 3.2x this way against 3.8x side by side)
CONFIDENT_GAIN_BATCHED = 1.5
BATCHED_FREE_ROWS = 4
#: a prefix/suffix split is used only when it predicts at least this factor over the whole prefix
SPLIT_MIN_IMPROVEMENT = 1.05
PROBE_ROWS = 8
PROBE_MIN_GAIN = 0.6
#: the most images the curve engine is asked to interleave per batch (their step-0 full passes
#: then run as one batch; bounded further by the memory budget and the batch size)
LOCKSTEP_IMAGES = 8


@dataclass
class PrefixOp:
    """One node of the local prefix."""

    layer: Any
    kind: str  # "point" | "merge" | "window"
    inputs: list[int]
    output: int
    out_hw: tuple[int, int]
    in_hw: tuple[int, int] = (0, 0)
    k: tuple[int, int] = (1, 1)
    s: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)  # top, left
    fill: float = 0.0
    cost: float = 0.0  # multiply-adds per output pixel
    params: float = 0.0  # kernel weights (a call's fixed cost grows with them: weight reordering)


@dataclass
class GraphPlan:
    """The local prefix of a Keras functional model and the decision data for ``auto``."""

    input_id: int
    input_hw: tuple[int, int]
    ops: list[PrefixOp]
    cached: dict[int, tuple[int, ...]]  # tensor id -> (H, W, C) of every prefix tensor
    boundary: list[int]  # prefix tensors (or the input) read by the suffix, in suffix order
    suffix_nodes: list[Any]
    stop_layer: str | None  # name (class) of the layer that ended the prefix
    stop_reason: str  # "locality" | "unsupported" | "end" | "split"
    full_cost: float = 0.0
    suffix_cost: float = 0.0
    bytes_per_image: int = 0
    notes: list[str] = field(default_factory=list)
    aliases: dict[int, list[int]] = field(default_factory=dict)  # canonical id -> nested-model ids
    output_id: int = 0
    max_ops: int | None = None  # the prefix was cut after this many layers (see analyse_model)
    #: :func:`propagate`'s answers, per changed input box (the same regions recur for every image)
    reach: dict[Box, Mapping[int, Box | None]] = field(default_factory=dict, repr=False, compare=False)


def _flatten_nodes(model: Any, canon: dict[int, int]) -> Any:
    """The model's call nodes in execution order, nested single-input models inlined.

    ``canon`` collects aliases: a nested model's input tensor -> the tensor fed to it,
    the nested model's output (as seen outside) -> its inner output tensor.
    """
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            op = node.operation
            if op is None or node.is_input:
                continue
            ins = list(node.input_tensors)
            if (
                hasattr(op, "_nodes_by_depth")
                and len(op.inputs) == 1
                and len(op.outputs) == 1
                and len(ins) == 1
                and len(node.outputs) == 1
            ):
                canon[id(op.inputs[0])] = canon.get(id(ins[0]), id(ins[0]))
                yield from _flatten_nodes(op, canon)
                canon[id(node.outputs[0])] = canon.get(id(op.outputs[0]), id(op.outputs[0]))
            else:
                yield node


# ---- graph walk -----------------------------------------------------------------------------
def _hw(t: Any) -> tuple[int, ...]:
    return tuple(int(d) if d is not None else -1 for d in t.shape[1:])


def _same_pad(in_size: int, out_size: int, k: int, s: int) -> int:
    return max((out_size - 1) * s + k - in_size, 0) // 2


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def _window_op(layer: Any, x_in: Any, x_out: Any) -> PrefixOp | str:
    """An :class:`PrefixOp` for a windowed layer, or the reason it is not supported."""
    cls = type(layer).__name__
    ih, iw, cin = _hw(x_in)
    oh, ow, cout = _hw(x_out)
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "channels_first"
    if cls == "ZeroPadding2D":
        (pt, _pb), (pl, _pr) = layer.padding
        return PrefixOp(layer, "window", [], 0, (oh, ow), (ih, iw), (1, 1), (1, 1), (int(pt), int(pl)), 0.0, 0.0)
    if cls in ("Conv2D", "DepthwiseConv2D"):
        if _pair(layer.dilation_rate) != (1, 1):
            return "dilation_rate != 1"
        if cls == "Conv2D" and int(getattr(layer, "groups", 1)) != 1:
            return "groups != 1"
        k, s = _pair(layer.kernel_size), _pair(layer.strides)
        cost = k[0] * k[1] * (cin * cout if cls == "Conv2D" else cout)
    elif cls in ("MaxPooling2D", "AveragePooling2D"):
        k, s = _pair(layer.pool_size), _pair(layer.strides)
        if cls == "AveragePooling2D" and layer.padding == "same":
            return "AveragePooling2D with padding='same' (the border average excludes padding)"
        cost = k[0] * k[1] * cout / 4.0
    else:
        return "unsupported"
    if layer.padding == "same":
        pad = (_same_pad(ih, oh, k[0], s[0]), _same_pad(iw, ow, k[1], s[1]))
    elif layer.padding == "valid":
        pad = (0, 0)
    else:
        return f"padding={layer.padding!r}"
    fill = -np.inf if cls == "MaxPooling2D" else 0.0
    params = float(cost) if cls in ("Conv2D", "DepthwiseConv2D") else 0.0
    return PrefixOp(layer, "window", [], 0, (oh, ow), (ih, iw), k, s, pad, fill, float(cost), params)


def _probe_pointwise(layer: Any, shape: tuple[int, ...]) -> bool:
    """Whether an unknown single-input layer acts pixel by pixel (tested on random data)."""
    import keras

    h, w, c = (min(int(d), 12) if i < 2 else int(d) for i, d in enumerate(shape))
    if h < 3 or w < 3 or c < 1:
        return False
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (1, h, w, c)).astype(np.float32)
    x2 = x.copy()
    x2[0, h // 2, w // 2] += 0.5
    try:
        y = np.asarray(_call(layer, keras.ops.convert_to_tensor(x)))
        y2 = np.asarray(_call(layer, keras.ops.convert_to_tensor(x2)))
        yc = np.asarray(_call(layer, keras.ops.convert_to_tensor(x[:, 1:-1, 1:-1])))
    except Exception:  # noqa: BLE001 - any failure means "not provably element-wise"
        return False
    if y.shape[:3] != x.shape[:3] or y2.shape != y.shape:
        return False
    diff = np.abs(y2 - y).max(axis=-1)[0]
    diff[h // 2, w // 2] = 0.0
    tol = 1e-5 * (1.0 + float(np.abs(y).max()))
    return bool(diff.max() <= tol and np.allclose(yc, y[:, 1:-1, 1:-1], atol=tol, rtol=0))


def _call(layer: Any, *args: Any) -> Any:
    if "training" in getattr(layer, "_call_context_args", {}):
        return layer(*args, training=False)
    return layer(*args)


def _layer_cost(layer: Any, out: Any, ins: list[Any]) -> float:
    """Rough multiply-adds of one suffix/full layer call for one image."""
    cls = type(layer).__name__
    shape = _hw(out)
    n_out = float(np.prod([d for d in shape if d > 0])) if shape else 1.0
    if cls in ("Dense", "EinsumDense"):
        return float(np.prod([d for d in _hw(ins[0]) if d > 0])) * shape[-1] if ins else n_out
    if cls in ("Conv2D", "DepthwiseConv2D"):
        k = _pair(layer.kernel_size)
        cin = _hw(ins[0])[-1] if cls == "Conv2D" else 1
        return n_out * k[0] * k[1] * cin
    return n_out


def analyse_model(keras_model: Any, max_ops: int | None = None) -> GraphPlan:
    """Walk a single-input Keras functional model: its local prefix, boundary and suffix.

    ``max_ops``: end the prefix after that many layers even where locality goes on (a
    prefix/suffix split, see :func:`best_prefix_split`; ``stop_reason`` is then ``"split"``).
    """
    if not hasattr(keras_model, "_nodes_by_depth") or len(getattr(keras_model, "inputs", []) or []) != 1:
        raise ConfigError(
            f"incremental inference needs a single-input Keras functional model, got "
            f"{type(keras_model).__name__} {getattr(keras_model, 'name', '?')!r}"
        )
    x_in = keras_model.inputs[0]
    in_shape = _hw(x_in)
    canon: dict[int, int] = {}
    nodes = list(_flatten_nodes(keras_model, canon))

    def cid(t: Any) -> int:
        return canon.get(id(t), id(t))

    prefix: dict[int, tuple[int, ...]] = {id(x_in): in_shape}
    ops: list[PrefixOp] = []
    suffix: list[Any] = []
    stop_layer, stop_reason = None, "end"
    stopped = False
    for node in nodes:
        layer = node.operation
        cls = type(layer).__name__
        ins = list(node.input_tensors)
        outs = list(node.outputs)
        if not stopped and max_ops is not None and len(ops) >= max_ops:
            stopped = True
            stop_layer = f"{layer.name} ({cls}): prefix/suffix split after {len(ops)} layers"
            stop_reason = "split"
        local_inputs = ins and all(cid(t) in prefix for t in ins)
        op: PrefixOp | str | None = None
        if not stopped and local_inputs and len(outs) == 1 and len(_hw(outs[0])) == 3:
            out_shape = _hw(outs[0])
            same_hw = all(_hw(t)[:2] == out_shape[:2] for t in ins)
            if -1 in out_shape:
                op = "unknown static shape"
            elif cls in MERGE:
                axis = getattr(layer, "axis", -1)
                if not same_hw or (cls == "Concatenate" and axis not in (-1, 3)):
                    op = "merge of different spatial sizes / axis"
                else:
                    op = PrefixOp(layer, "merge", [], 0, out_shape[:2], cost=float(out_shape[-1]) / 8.0)
            elif len(ins) == 1 and (cls in POINTWISE and same_hw):
                op = PrefixOp(layer, "point", [], 0, out_shape[:2], cost=float(out_shape[-1]) / 8.0)
            elif len(ins) == 1 and cls in (
                "Conv2D", "DepthwiseConv2D", "MaxPooling2D", "AveragePooling2D", "ZeroPadding2D"
            ):
                op = _window_op(layer, ins[0], outs[0])
            elif cls in LOCALITY_END or hasattr(layer, "_nodes_by_depth"):
                op = None
            elif len(ins) == 1 and same_hw and _probe_pointwise(layer, _hw(ins[0])):
                op = PrefixOp(layer, "point", [], 0, out_shape[:2], cost=float(out_shape[-1]) / 8.0)
            else:
                op = "not element-wise (a global or unknown operation)"
        if isinstance(op, PrefixOp):
            op.inputs = [cid(t) for t in ins]
            op.output = cid(outs[0])
            ops.append(op)
            prefix[cid(outs[0])] = _hw(outs[0])
            continue
        if not stopped:
            stopped = True
            stop_layer = f"{layer.name} ({cls})"
            if op is None:
                stop_reason = "locality" if cls in LOCALITY_END or not local_inputs else "unsupported"
                if hasattr(layer, "_nodes_by_depth"):
                    stop_reason = "unsupported"
                    op = "a nested model (inline the backbone with input_tensor=...)"
            else:
                stop_reason = "unsupported"
            if stop_reason == "unsupported":
                stop_layer = f"{stop_layer}: {op}"
        suffix.append(node)
    # the prefix tensors the suffix reads (and the model outputs if they are prefix tensors)
    boundary: list[int] = []
    for node in suffix:
        for t in node.input_tensors:
            if cid(t) in prefix and cid(t) not in boundary:
                boundary.append(cid(t))
    for t in keras_model.outputs:
        if cid(t) in prefix and cid(t) not in boundary:
            boundary.append(cid(t))
    # activations read later (all prefix tensors but the model input itself is cached too)
    cached = dict(prefix)
    plan = GraphPlan(
        input_id=id(x_in),
        input_hw=(int(in_shape[0]), int(in_shape[1])),
        ops=ops,
        cached=cached,
        boundary=boundary,
        suffix_nodes=suffix,
        stop_layer=stop_layer,
        stop_reason=stop_reason,
    )
    for raw, c in canon.items():
        plan.aliases.setdefault(c, []).append(raw)
    plan.output_id = cid(keras_model.outputs[0])
    plan.max_ops = max_ops
    plan.full_cost = sum(op.cost * op.out_hw[0] * op.out_hw[1] for op in ops)
    plan.suffix_cost = sum(_layer_cost(n.operation, n.outputs[0], list(n.input_tensors)) for n in suffix)
    plan.bytes_per_image = int(sum(4 * int(np.prod(s)) for s in cached.values()))
    return plan


# ---- the Keras internals the walk reads (canary) ------------------------------------------------
#: what the graph walk and the suffix read from Keras beyond its public API
KERAS_INTERNALS = (
    "Functional._nodes_by_depth",
    "Node.operation",
    "Node.is_input",
    "Node.input_tensors",
    "Node.outputs",
    "Node.arguments.fill_in",
    "Layer._call_context_args",
)


def check_keras_internals(keras_model: Any = None) -> list[str]:
    """What of :data:`KERAS_INTERNALS` is missing or changed on ``keras_model`` ([] = all there).

    Without a model, a small functional model (Conv2D, BatchNormalization, Flatten, Dense)
    is built and checked. ``auto`` runs this on the model before walking it and uses full
    passes, with the problems as its reason, when anything is missing; the canary test
    (tests/test_incremental_canary.py) fails loudly on a Keras version where it is.
    """
    import keras

    if keras_model is None:
        x_in = keras.Input((8, 8, 3))
        y = keras.layers.Conv2D(2, 3, padding="same")(x_in)
        y = keras.layers.BatchNormalization()(y)
        keras_model = keras.Model(x_in, keras.layers.Dense(2)(keras.layers.Flatten()(y)))
    problems: list[str] = []
    by_depth = getattr(keras_model, "_nodes_by_depth", None)
    if not isinstance(by_depth, dict) or not by_depth:
        return ["Functional._nodes_by_depth (a dict: depth -> call nodes) is missing"]
    nodes = [node for depth in by_depth.values() for node in depth]
    for attr in ("operation", "is_input", "input_tensors", "outputs", "arguments"):
        if not all(hasattr(node, attr) for node in nodes):
            problems.append(f"Node.{attr} is missing")
    if problems:
        return problems
    calls = [node for node in nodes if not node.is_input and node.operation is not None]
    if not calls:
        return ["no call nodes under Functional._nodes_by_depth"]
    for node in calls:
        fill_in = getattr(node.arguments, "fill_in", None)
        if not callable(fill_in):
            problems.append("Node.arguments.fill_in is missing")
            break
        try:
            args, kwargs = fill_in({id(t): t for t in node.input_tensors})
        except Exception as exc:  # noqa: BLE001
            problems.append(f"Node.arguments.fill_in(values by tensor id) failed: {type(exc).__name__}: {exc}")
            break
        if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
            problems.append("Node.arguments.fill_in no longer returns (args, kwargs)")
            break
    for node in calls:
        layer = node.operation
        if type(layer).__name__ == "BatchNormalization" and "training" not in getattr(layer, "_call_context_args", ()):
            problems.append("Layer._call_context_args is missing or lacks 'training' (BatchNormalization)")
            break
    return problems



# ---- box propagation ------------------------------------------------------------------------
def _union(boxes: list[Box | None]) -> Box | None:
    bs = [b for b in boxes if b is not None]
    if not bs:
        return None
    return (min(b[0] for b in bs), max(b[1] for b in bs), min(b[2] for b in bs), max(b[3] for b in bs))


def _out_range(a0: int, a1: int, k: int, s: int, p: int, n_out: int) -> tuple[int, int]:
    """Output rows [o0, o1) that read any input row in [a0, a1) (window k, stride s, pad p)."""
    o0 = max(0, -((-(a0 + p - k + 1)) // s))  # ceil
    o1 = min(n_out, (a1 - 1 + p) // s + 1)
    return o0, max(o0, o1)


def out_box(op: PrefixOp, box: Box) -> Box | None:
    """The output box a layer must recompute when ``box`` of its input changed."""
    if op.kind != "window":
        return box
    y0, y1 = _out_range(box[0], box[1], op.k[0], op.s[0], op.pad[0], op.out_hw[0])
    x0, x1 = _out_range(box[2], box[3], op.k[1], op.s[1], op.pad[1], op.out_hw[1])
    if y0 >= y1 or x0 >= x1:
        return None
    return (y0, y1, x0, x1)


#: the most prefix-tensor entries :func:`propagate` keeps per plan, over all its boxes (~100 bytes
#: each: VGG16's 20-op prefix keeps 4096 boxes, ~8 MiB; DenseNet201's 706 ops ~370, ~32 MiB)
REACH_MEMO_ENTRIES = 2**18


def propagate(plan: GraphPlan, box: Sequence[int]) -> Mapping[int, Box | None]:
    """The changed box of every prefix tensor when ``box`` ``(y0, y1, x0, x1)`` of the input changed.

    Memoised on the plan per box (read-only answers, up to :data:`REACH_MEMO_ENTRIES` entries;
    the same regions recur for every image).
    """
    key: Box = (int(box[0]), int(box[1]), int(box[2]), int(box[3]))
    known = plan.reach.get(key)
    if known is not None:
        return known
    boxes: dict[int, Box | None] = {plan.input_id: key}
    for op in plan.ops:
        b = _union([boxes.get(t) for t in op.inputs])
        boxes[op.output] = None if b is None else out_box(op, b)
    answer = MappingProxyType(boxes)
    if len(plan.reach) < min(4096, REACH_MEMO_ENTRIES // max(len(plan.ops) + 1, 1)):
        plan.reach[key] = answer
    return answer


def estimate_gain(
    plan: GraphPlan,
    grid: int = 9,
    *,
    realistic: bool = True,
    rows_per_call: int = 64,
    regions: list[Box] | None = None,
) -> float:
    """Predicted full / incremental cost of one step that changes one region of a ``grid`` x ``grid`` grid.

    Box counting: the multiply-adds of every prefix layer over its changed box, averaged
    over the regions (``regions``: boxes instead of the grid), plus the suffix run in full.
    ``realistic`` (the default, what ``auto`` uses) counts what the lockstep updates do:
    each layer's boxes grouped and padded as :func:`_make_calls` groups them, computed at
    :data:`SMALL_BOX_EFFICIENCY` of full-map throughput, a fixed cost per layer call
    (:func:`_call_overhead`, shared by the ``rows_per_call`` rows of a call) and the replay
    of every row's state (:data:`REPLAY_MACS_PER_BYTE` per byte copied), so that small
    images and very deep graphs (DenseNet's ~700 layers) are not predicted a gain they do
    not get; ``realistic=False`` is the ideal ratio of multiply-adds (exact boxes, no overhead).
    """
    full = plan.full_cost + plan.suffix_cost
    inc = sum(_incremental_costs(plan, grid, realistic, rows_per_call, regions)) + plan.suffix_cost
    return float(full / inc) if inc > 0 else 1.0


def _grid_regions(plan: GraphPlan, grid: int) -> list[Box]:
    h, w = plan.input_hw
    ys = np.linspace(0, h, grid + 1).round().astype(int)
    xs = np.linspace(0, w, grid + 1).round().astype(int)
    return [(int(ys[r]), int(ys[r + 1]), int(xs[c]), int(xs[c + 1])) for r in range(grid) for c in range(grid)]


def _incremental_costs(
    plan: GraphPlan, grid: int, realistic: bool, rows_per_call: int, regions: list[Box] | None
) -> list[float]:
    """Per prefix layer: its predicted cost (multiply-adds) of one step, averaged over the regions."""
    regions = _grid_regions(plan, grid) if regions is None else regions
    if not regions:
        return [0.0] * len(plan.ops)
    per_region = [propagate(plan, box) for box in regions]
    n_reg = len(per_region)
    rows = max(int(rows_per_call), 1)
    costs = []
    for op in plan.ops:
        bs = [b[op.output] for b in per_region if b.get(op.output) is not None]
        if not bs:
            costs.append(0.0)
            continue
        exact = sum((b[1] - b[0]) * (b[3] - b[2]) for b in bs)
        if not realistic:
            costs.append(op.cost * exact / n_reg)
            continue
        if rows == 1:
            padded, calls_per_row = float(exact), len(bs) / n_reg
        else:
            calls = _make_calls(op, list(range(len(bs))), bs, None)
            padded = sum(c.padded_px for c in calls)
            calls_per_row = min(len(calls), rows) / rows * len(bs) / n_reg
        channels = sum(plan.cached[t][-1] for t in op.inputs) + plan.cached[op.output][-1]
        costs.append(
            (op.cost * padded / SMALL_BOX_EFFICIENCY + REPLAY_MACS_PER_BYTE * 4.0 * padded * channels) / n_reg
            + _call_overhead(op) * calls_per_row
        )
    return costs


def best_prefix_split(plan: GraphPlan, grid: int = 9, *, rows_per_call: int = 64) -> tuple[int, float]:
    """(layers, predicted gain) of the best incremental prefix: the first ``layers`` prefix layers
    incremental, the rest of the network full passes (batched over the rows).

    Deep networks whose boxes soon cover the whole map (DenseNet201: a 33-pixel region of a
    299-pixel image reaches most of the 37x37 maps of its second dense block) gain only over
    their first layers, and lose over the rest to the per-layer overhead and the replay of
    large concatenations; the split is chosen by the same cost model as :func:`estimate_gain`,
    charging the copy of the tensors that cross it (the suffix's inputs) to every row.
    """
    inc = _incremental_costs(plan, grid, True, rows_per_call, None)
    full_op = [op.cost * op.out_hw[0] * op.out_hw[1] for op in plan.ops]
    last: dict[int, int] = {}
    for i, op in enumerate(plan.ops):
        for t in op.inputs:
            last[t] = i
    for t in plan.boundary:
        last[t] = len(plan.ops) + 1
    size = {t: 4.0 * float(np.prod(sh)) for t, sh in plan.cached.items()}
    total = plan.full_cost + plan.suffix_cost
    live = {plan.input_id}
    cum_inc, rest = 0.0, float(sum(full_op))
    best = (0, 1.0)
    for j in range(len(plan.ops) + 1):
        if j:
            cum_inc += inc[j - 1]
            rest -= full_op[j - 1]
            live.add(plan.ops[j - 1].output)
            live = {t for t in live if last.get(t, -1) >= j}
        cost = cum_inc + rest + plan.suffix_cost + REPLAY_MACS_PER_BYTE * sum(size[t] for t in live)
        gain = total / cost if cost > 0 else 1.0
        if gain > best[1] * (1.0 + 1e-9):
            best = (j, gain)
    return best


@dataclass
class _Functions:
    """The traced graphs of one model's incremental inference (shared by every strategy instance)."""

    plan: GraphPlan
    prefix: Any
    suffix: Any
    boxes: list[Any]
    out_ids: list[int]
    consumers: dict[int, list[tuple[int, int]]]
    warmed: bool = False
    #: (variable, the value baked into the box graphs as a constant) for every prefix kernel/bias
    weights: list[tuple[Any, np.ndarray]] = field(default_factory=list)

    def weights_current(self) -> bool:
        """Whether the model's prefix weights still hold the values the box graphs were traced with."""
        import keras

        return all(np.array_equal(keras.ops.convert_to_numpy(v), snap) for v, snap in self.weights)

    def warm(self) -> None:
        """Trace every graph now (so that a timed call does not include tracing)."""
        if self.warmed:
            return
        for fn in [self.prefix, self.suffix, *self.boxes]:
            fn.get_concrete_function()
        self.warmed = True


_FUNCTIONS: weakref.WeakKeyDictionary[Any, dict[int | None, _Functions]] = weakref.WeakKeyDictionary()
_FUNCTIONS_LOCK = threading.Lock()


def cached_plan(keras_model: Any, max_ops: int | None = None) -> GraphPlan:
    """:func:`analyse_model`, memoised per Keras model (weakly) and ``max_ops``, with its graphs."""
    with _FUNCTIONS_LOCK:
        fns = _FUNCTIONS.get(keras_model, {}).get(max_ops)
    if fns is not None:
        return fns.plan
    plan = analyse_model(keras_model, max_ops)
    return compiled_functions(keras_model, plan).plan


def compiled_functions(keras_model: Any, plan: GraphPlan) -> _Functions:
    """The prefix, suffix and per-layer box graphs for ``plan``, traced once per Keras model.

    Box graphs have free batch and spatial dimensions, so calls with any number of rows and
    any box size reuse one trace; a new strategy instance on the same model reuses them all.
    The box graphs of Conv2D/DepthwiseConv2D hold their kernel and bias as constants (oneDNN
    then reorders a kernel once, not on every call: ~4 ms per call of a 3x3x512x512 kernel on
    the 2-core reference CPU, ~5% of VGG16's incremental run at 299); every call here checks
    that the model's weights still hold those values, and where they do not, rebuilds the graphs
    once more reading the variables (they never go stale, so a model whose weights keep changing,
    model-randomisation's copy, is traced twice, not once per change). A strategy reads its
    graphs in ``prepare``: weights changed mid-evaluation are not seen.
    """
    import keras
    import tensorflow as tf

    max_ops = plan.max_ops
    with _FUNCTIONS_LOCK:
        got = _FUNCTIONS.get(keras_model, {}).get(max_ops)
        if got is not None and got.weights_current():
            return got
        bake = got is None  # weights changed since the graphs were baked: read the variables now
        if got is not None:
            plan = got.plan
        ops = plan.ops
        out_ids = list(plan.cached)

        def prefix(x: Any) -> list[Any]:
            vals: dict[int, Any] = {plan.input_id: x}
            for op in ops:
                args = [vals[t] for t in op.inputs]
                vals[op.output] = _call(op.layer, args if op.kind == "merge" else args[0])
            return [vals[t] for t in out_ids]

        boundary = list(plan.boundary)
        aliases = plan.aliases

        def put(vals: dict[int, Any], key: int, v: Any) -> None:
            vals[key] = v
            for a in aliases.get(key, ()):
                vals[a] = v

        def suffix(*xs: Any) -> Any:
            vals: dict[int, Any] = {}
            for key, v in zip(boundary, xs, strict=True):
                put(vals, key, v)
            for node in plan.suffix_nodes:
                args, kwargs = node.arguments.fill_in(vals)
                layer = node.operation
                if "training" in getattr(layer, "_call_context_args", {}):
                    kwargs["training"] = False
                res = layer(*args, **kwargs)
                flat = res if isinstance(res, list | tuple) else [res]
                for t, v in zip(node.outputs, flat, strict=False):
                    put(vals, id(t), v)
            return vals[plan.output_id]

        h, w = plan.input_hw
        c = plan.cached[plan.input_id][-1]
        prefix_fn = graph_function(prefix, input_signature=[tf.TensorSpec((None, h, w, c), tf.float32)])
        specs = [tf.TensorSpec((None, *plan.cached[t]), tf.float32) for t in boundary]
        suffix_fn = graph_function(suffix, input_signature=specs)
        boxes = []
        weights: list[tuple[Any, np.ndarray]] = []
        for op in ops:
            sig = [tf.TensorSpec((None, None, None, plan.cached[t][-1]), tf.float32) for t in op.inputs]
            consts: dict[str, np.ndarray] = {}
            if bake and type(op.layer).__name__ in ("Conv2D", "DepthwiseConv2D"):
                for attr in ("kernel", "bias") if op.layer.use_bias else ("kernel",):
                    var = getattr(op.layer, attr)
                    consts[attr] = np.array(keras.ops.convert_to_numpy(var), dtype=np.float32)
                    weights.append((var, consts[attr]))
            boxes.append(graph_function(_box_fn(op, consts), input_signature=sig))
        consumers: dict[int, list[tuple[int, int]]] = {t: [] for t in plan.cached}
        for i, op in enumerate(ops):
            for j, t in enumerate(op.inputs):
                consumers[t].append((i, j))
        got = _Functions(plan, prefix_fn, suffix_fn, boxes, out_ids, consumers, weights=weights)
        _FUNCTIONS.setdefault(keras_model, {})[max_ops] = got
        return got



# ---- the strategy ---------------------------------------------------------------------------
_UNCACHED, _FULL, _INC = 0, 1, 2
#: a step whose changed input box covers more than this fraction of the image gets a full pass
FULL_ROW_FRACTION = 0.5


@dataclass
class _ImageState:
    step: int
    acts: dict[int, np.ndarray]  # tensor id -> (H, W, C) float32, this image's x^(step) activations


@dataclass
class _LayerStats:
    """What one prefix layer did over a run (see :meth:`IncrementalForward.layer_report`)."""

    calls: int = 0
    rows: int = 0
    compute_s: float = 0.0
    replay_s: float = 0.0
    exact_px: float = 0.0  # output pixels in the exact changed boxes, summed over rows
    padded_px: float = 0.0  # output pixels computed (boxes padded to the call's common size)


class IncrementalForward:
    """Forward strategy that reuses the previous step's activations (exact), in lockstep.

    Each call updates all its rows at once, layer by layer: for every prefix layer the
    changed boxes of all rows (consecutive steps of one image, or steps of several
    images) are padded to one common size and computed as one batched call; the rows'
    activation states are then replayed in row order (each row's box written over its
    predecessor's state, the next layer's input crops read from that state), so every
    row sees exactly the activations of its own ``x^(k)``.

    mode: ``"incremental"`` (always, where any prefix exists) or ``"auto"``
        (incremental when the box count predicts ``>= min_gain`` and the perturbation is
        mask-local; then checked at run time against the full-pass cost measured on the
        rows that needed full passes, and switched to full passes when slower; an
        unsupported layer, a failed graph walk or a failure at run time also mean full
        passes; the reason and both numbers are in :attr:`info`).
    min_gain: the predicted saving ``auto`` needs to start incremental.
    memory_budget_mb: bound on cached activations (default 1 GiB); decides how many
        images' caches are kept at once (at least one; the engine's image-major
        order needs one, a call spanning two images holds both while it runs: VGG16
        at 299 caches ~104 MiB per image, DenseNet201 ~505 MiB). What it used is in
        ``info["cached_images"]``. The layers' input crops of a batch (VGG16 at 299, 64 rows:
        ~330 MiB) come from one block reused from batch to batch and kept between calls
        (at most this much again; :func:`release_buffers` frees it).
    estimate_grid: region grid assumed by the gain estimate.
    lockstep_rows: the most rows updated by one call per layer (``None``: the whole
        batch; ``1``: one row at a time, the pre-lockstep behaviour, for comparisons).
    split: end the incremental prefix where the cost model says the rest is cheaper in
        full passes (:func:`best_prefix_split`: DenseNet201 after its first dense block and
        a bit); ``None`` (default): in ``"auto"`` mode only (``"incremental"`` keeps the
        whole local prefix). The split used is in ``info["prefix_split"]``.
    """

    def __init__(
        self,
        *,
        mode: str = "incremental",
        min_gain: float = DEFAULT_MIN_GAIN,
        memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
        estimate_grid: int = 9,
        lockstep_rows: int | None = None,
        split: bool | None = None,
    ):
        self.mode = mode
        self.min_gain = min_gain
        self.memory_budget_mb = memory_budget_mb
        self.estimate_grid = estimate_grid
        self.lockstep_rows = lockstep_rows
        self.split = split
        self.name = mode
        self.info: dict[str, Any] = {}
        #: images the curve engine interleaves per batch (set by :meth:`prepare`; 1 for full passes)
        self.lockstep_images = 1
        self._plan: GraphPlan | None = None
        self._full: FullForward | None = None
        self._states: OrderedDict[int, _ImageState] = OrderedDict()
        self._max_images = 1
        self._prefix_fn: Any = None
        self._suffix_fn: Any = None
        self._stats: list[_LayerStats] = []
        #: where the incremental calls spent their time, summed over the run (see :class:`CallTiming`)
        self.totals = CallTiming()
        self._check: RuntimeCheck | None = None
        self._full_model: FullForward | None = None
        self._model: Any = None
        self._prep_args: dict[str, Any] = {}

    def get_params(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "min_gain": self.min_gain,
            "memory_budget_mb": self.memory_budget_mb,
            "estimate_grid": self.estimate_grid,
            "lockstep_rows": self.lockstep_rows,
            "split": self.split,
        }

    # -- setup
    def prepare(
        self,
        model: Any,
        *,
        batch_size: int,
        image_shape: tuple[int, int, int],
        mask_local: bool = True,
    ) -> None:
        if self.mode not in ("auto", "incremental"):
            raise ConfigError(f"IncrementalForward mode must be 'auto' or 'incremental', got {self.mode!r}")
        if self.lockstep_rows is not None and int(self.lockstep_rows) < 1:
            raise ConfigError(f"lockstep_rows must be None or >= 1, got {self.lockstep_rows!r}")
        keras_model = getattr(model, "keras", model)
        self.lockstep_images = 1
        self._states.clear()
        self._full = None
        self._plan = None
        self._check = None
        self._full_model = None
        self._model = model if hasattr(model, "keras") else _KerasHolder(keras_model)
        self._prep_args = {"batch_size": batch_size, "image_shape": image_shape, "mask_local": mask_local}
        info: dict[str, Any] = {"requested": self.mode}
        try:
            problems = check_keras_internals(keras_model) if hasattr(keras_model, "_nodes_by_depth") else []
            if problems:
                import keras

                raise _InternalsChanged(f"Keras {keras.__version__}: {'; '.join(problems)}")
            plan = cached_plan(keras_model)
        except ConfigError:
            if self.mode == "incremental":
                raise
            plan, reason = None, "the model is not a single-input Keras functional model"
        except _InternalsChanged as exc:
            if self.mode == "incremental":
                raise ConfigError(f"incremental inference: the Keras internals it reads changed ({exc})") from exc
            plan, reason = None, f"the Keras internals the incremental walk reads changed ({exc})"
        except Exception as exc:  # noqa: BLE001 - a graph walk on another Keras version: fall back
            if self.mode == "incremental":
                raise ConfigError(
                    f"incremental inference could not walk the Keras graph of "
                    f"{getattr(keras_model, 'name', '?')!r} (Keras internals changed?): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            plan, reason = None, f"the Keras graph walk failed ({type(exc).__name__}: {exc})"
        if plan is None:
            self._use_full(info, reason)
            return
        if plan.input_hw != tuple(int(d) for d in image_shape[:2]):
            raise ConfigError(
                f"incremental inference: model {getattr(keras_model, 'name', '?')!r} takes "
                f"{plan.input_hw} images, the evaluation has {tuple(image_shape[:2])}"
            )
        rows = int(batch_size) if self.lockstep_rows is None else min(int(batch_size), int(self.lockstep_rows))
        gain = estimate_gain(plan, self.estimate_grid, rows_per_call=rows)
        ideal = estimate_gain(plan, self.estimate_grid, realistic=False)
        split = self.split if self.split is not None else self.mode == "auto"
        split_info: dict[str, Any] = {}
        if split and plan.ops and plan.stop_reason != "unsupported":
            n_ops, split_gain = best_prefix_split(plan, self.estimate_grid, rows_per_call=rows)
            if 0 < n_ops < len(plan.ops) and split_gain > gain * SPLIT_MIN_IMPROVEMENT:
                split_info = {
                    "layers": n_ops,
                    "of": len(plan.ops),
                    "after": plan.ops[n_ops - 1].layer.name,
                    "predicted_gain": round(split_gain, 3),
                    "whole_prefix_predicted_gain": round(gain, 3),
                }
                plan = cached_plan(keras_model, n_ops)
                gain = split_gain
        budget = float(self.memory_budget_mb) * 2**20
        self._max_images = max(1, int(budget // max(plan.bytes_per_image, 1)))
        info.update(
            {
                "predicted_gain": round(gain, 3),
                "ideal_gain": round(ideal, 3),
                "prefix_layers": len(plan.ops),
                "prefix_ends_at": plan.stop_layer,
                "cache_mb_per_image": round(plan.bytes_per_image / 2**20, 1),
                "cached_images": self._max_images,
                "memory_budget_mb": self.memory_budget_mb,
            }
        )
        if split_info:
            info["prefix_split"] = split_info
        share = plan.full_cost / max(plan.full_cost + plan.suffix_cost, 1e-9)
        info["prefix_mac_share"] = round(share, 4)
        if plan.ops and share < 0.99:  # Amdahl: the suffix runs in full whatever the prefix costs
            bound = 1.0 / (1.0 - share)
            info["upper_bound_gain"] = round(bound, 3)
            info["limit"] = (
                f"the incremental prefix ({len(plan.ops)} layers, to {plan.ops[-1].layer.name}) "
                f"holds {share:.0%} of the model's multiply-adds: even at no cost it gives at most {bound:.2f}x; "
                f"the ideal box count over the whole network is {ideal:.2f}x"
            )
        reason = ""
        probe = False
        if self.mode == "auto":
            if not mask_local:
                reason = "the perturbation changes pixels outside the perturbed region (mask_local=False)"
            elif plan.stop_reason == "unsupported":
                reason = f"layer {plan.stop_layer} before the locality boundary is not supported"
            elif not plan.ops:
                reason = "the model has no local prefix (its first layer is not spatially local)"
            elif gain < self.min_gain:
                reason = f"predicted gain {gain:.2f}x is below min_gain={self.min_gain:g}x"
                probe = gain >= PROBE_MIN_GAIN
        if reason and not probe:
            self._use_full(info, reason)
            return
        self._plan = plan
        self.info = info
        try:
            self._build_fns(keras_model, plan)
        except Exception as exc:  # noqa: BLE001
            if self.mode == "incremental":
                raise
            self._plan = None
            self._use_full(info, f"building the incremental graphs failed ({type(exc).__name__}: {exc})")
            return
        self._stats = [_LayerStats() for _ in plan.ops]
        self.totals = CallTiming()
        self.lockstep_images = max(1, min(self._max_images, LOCKSTEP_IMAGES, rows))
        info["lockstep_images"] = self.lockstep_images
        if self.mode == "incremental":
            self.name = "incremental"
            info["used"] = "incremental"
            info["reason"] = "requested"
            if not mask_local:
                info["note"] = "mask_local=False: changed boxes are taken from the actual pixel differences"
            return
        # auto: checked at run time against the other strategy
        self._full = FullForward()
        self._full.prepare(self._model, **self._prep_args)
        start = "full" if reason else "incremental"
        self._check = RuntimeCheck(predicted_gain=gain, start=start)
        self.name = start
        info["used"] = start
        info["reason"] = (
            f"{reason}; incremental is tried on one batch and kept if measured faster"
            if reason
            else f"predicted gain {gain:.2f}x (checked at run time against full passes)"
        )
        info["runtime_check"] = self._check.summary()

    def _use_full(self, info: dict[str, Any], reason: str) -> None:
        self.name = "full"
        info["used"] = "full"
        info["reason"] = reason
        self.info = info
        log.info("AOPC forward strategy %s -> full: %s", self.mode, reason)
        self._full = FullForward()
        self._full.prepare(self._model, **self._prep_args)

    def _build_fns(self, keras_model: Any, plan: GraphPlan) -> None:
        fns = compiled_functions(keras_model, plan)
        self._prefix_fn = fns.prefix
        self._suffix_fn = fns.suffix
        self._box_fns = fns.boxes
        self._out_ids = fns.out_ids
        self._consumers = fns.consumers
        self._fns = fns

    # -- running
    def forward(self, batch: ForwardBatch) -> np.ndarray:
        if self._check is not None:
            return self._checked_forward(batch)
        if self._full is not None:
            return self._full.forward(batch)
        if self._plan is None:
            raise RuntimeError("IncrementalForward.prepare() must be called before forward()")
        return self._incremental(batch)[0]

    def _incremental(self, batch: ForwardBatch, probe_rows: int = 0) -> tuple[np.ndarray, CallTiming]:
        t0 = time.perf_counter()
        n = len(batch)
        g = n if self.lockstep_rows is None else max(1, int(self.lockstep_rows))
        if g >= n:
            out, timing = self._lockstep(batch, probe_rows)
        else:
            parts, timing = [], CallTiming()
            for s in range(0, n, g):
                p, t = self._lockstep(_slice_batch(batch, s, min(s + g, n)), probe_rows if s == 0 else 0)
                parts.append(p)
                timing.add(t)
            out = np.concatenate(parts)
        timing.total_s = time.perf_counter() - t0
        self.totals.add(timing)
        return out, timing

    def _checked_forward(self, batch: ForwardBatch) -> np.ndarray:
        """``auto``: run the path the runtime check asks for, time it, follow its decision."""
        check = self._check
        full = self._full
        assert check is not None and full is not None
        path, probe = check.next_path()
        if path == "full":
            full.warm()  # traced outside the timed call
            t0 = time.perf_counter()
            out = full.forward(batch)
            check.observe_full(len(batch), time.perf_counter() - t0)
        else:
            try:
                self._fns.warm()
                t0 = time.perf_counter()
                out, timing = self._incremental(batch, probe)
                timing.total_s = time.perf_counter() - t0
            except Exception as exc:  # noqa: BLE001 - another Keras version, an unknown layer: full passes
                reason = f"incremental inference failed at run time ({type(exc).__name__}: {exc})"
                log.warning("AOPC forward strategy auto -> full: %s", reason)
                check.fail(reason)
                self._sync_check()
                return full.forward(batch)
            check.observe_incremental(timing)
        self._sync_check()
        return out

    def _sync_check(self) -> None:
        check = self._check
        assert check is not None
        if check.decision and check.current == "full":  # (before the decision, states feed the next try)
            self._states.clear()
        if check.decision and check.current != self.name:
            log.info("AOPC forward strategy auto: %s", check.decision)
        self.name = check.current
        self.info["used"] = check.current
        if check.decision:
            self.info["reason"] = check.decision
        self.info["runtime_check"] = check.summary()

    def _lockstep(
        self, batch: ForwardBatch, probe_rows: int = 0, *, siblings: bool = False
    ) -> tuple[np.ndarray, CallTiming]:
        """:meth:`_lockstep_rows` with a reused block for the layers' input crops."""
        arena = _ARENAS.acquire()
        try:
            arena.reset(float(self.memory_budget_mb) * 2**20)
            return self._lockstep_rows(batch, probe_rows, siblings=siblings, arena=arena)
        finally:
            _ARENAS.release(arena)

    def _lockstep_rows(
        self, batch: ForwardBatch, probe_rows: int, *, siblings: bool, arena: _BufferArena
    ) -> tuple[np.ndarray, CallTiming]:
        """All rows of ``batch`` at once: full passes where no predecessor is cached, boxes elsewhere.

        ``probe_rows``: the first that many incremental rows get full passes instead, timed on
        their own (the runtime check's measurement of the full-pass cost). ``siblings``: every
        row is a variant of its image's cached state (occlusion), not the next step of a
        sequence: each row's boxes are written over that state, read, and undone, and the
        states do not move (every image must have one).
        """
        import tensorflow as tf

        plan = self._plan
        assert plan is not None
        timing = CallTiming()
        images = np.ascontiguousarray(batch.images, dtype=np.float32)
        n = len(images)
        img_of = np.asarray(batch.image_index).astype(np.int64)
        step_of = np.asarray(batch.step).astype(np.int64)
        if siblings:
            kind = np.full(n, _INC, np.int8)
            prev = np.full(n, -1, np.int64)
            probe = np.zeros(n, bool)
        else:
            kind, prev, probe = self._classify(img_of, step_of, probe_rows)
        # the changed input box of every incremental row: the pixels that differ from its predecessor
        in_id = plan.input_id
        h, w = plan.input_hw
        in_box: dict[int, Box] = {}
        for r in np.flatnonzero(kind == _INC):
            ref = images[prev[r]] if prev[r] >= 0 else self._states[int(img_of[r])].acts[in_id]
            diff = np.not_equal(images[r].reshape(h, -1), ref.reshape(h, -1))
            ys = np.flatnonzero(diff.any(axis=1))
            if ys.size == 0:
                continue
            band = diff[ys[0] : ys[-1] + 1].reshape(-1, w, images.shape[-1])
            xs = np.flatnonzero(band.any(axis=(0, 2)))
            box = (int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1)
            if (box[1] - box[0]) * (box[3] - box[2]) > FULL_ROW_FRACTION * h * w:
                kind[r] = _UNCACHED if siblings else _FULL
            else:
                in_box[int(r)] = box
        _demote_unneeded_full_rows(kind, img_of)

        out = np.zeros((n, 0), np.float32)
        probs: dict[int, np.ndarray] = {}
        for is_probe in (True, False):  # rows whose state is never needed: a plain full pass
            uncached = np.flatnonzero((kind == _UNCACHED) & (probe == is_probe))
            if not uncached.size:
                continue
            if self._full_model is None:
                self._full_model = FullForward()
                self._full_model.prepare(self._model, **self._prep_args)
                self._full_model.warm()
            t0 = time.perf_counter()
            p = self._full_model.predict(images[uncached])
            for j, r in enumerate(uncached):
                probs[int(r)] = p[j]
            dt = time.perf_counter() - t0
            if is_probe:
                timing.probe_rows += len(uncached)
                timing.probe_s += dt
            else:
                timing.full_rows += len(uncached)
                timing.full_s += dt
                timing.full_calls += 1
        full_rows = np.flatnonzero(kind == _FULL)
        full_acts: dict[int, dict[int, np.ndarray]] = {}
        if full_rows.size:
            t0 = time.perf_counter()
            chunk = max(1, min(8, int(float(self.memory_budget_mb) * 2**20 // max(plan.bytes_per_image, 1))))
            for s in range(0, len(full_rows), chunk):
                rows = full_rows[s : s + chunk]
                outs = self._prefix_fn(tf.constant(images[rows]))
                timing.full_calls += 1
                arrs = [np.asarray(v) for v in outs]
                for j, r in enumerate(rows):
                    full_acts[int(r)] = {t: a[j] for t, a in zip(self._out_ids, arrs, strict=True)}  # read-only views
            timing.full_rows += len(full_rows)
            timing.full_s += time.perf_counter() - t0
        cached_rows = np.flatnonzero(kind != _UNCACHED)
        work: dict[int, dict[int, np.ndarray]] = {}
        for r in cached_rows:
            i = int(img_of[r])
            if i not in work:
                work[i] = self._states[i].acts if i in self._states else {}

        # per layer: the rows that recompute it, their boxes padded to a few common sizes
        box_of: dict[int, Mapping[int, Box | None]] = {r: propagate(plan, b) for r, b in in_box.items()}
        where: list[dict[int, tuple[_Call, int]]] = []
        calls: list[list[_Call]] = []
        for op in plan.ops:
            rows_i = [r for r, bs in box_of.items() if bs.get(op.output) is not None]
            cs = _make_calls(op, rows_i, [box_of[r][op.output] for r in rows_i], plan, arena) if rows_i else []  # type: ignore[misc]
            calls.append(cs)
            where.append({r: (c, q) for c in cs for q, r in enumerate(c.rows)})
        bnd_pos = {int(r): j for j, r in enumerate(cached_rows)}
        bnd = {t: np.empty((len(cached_rows), *plan.cached[t]), np.float32) for t in plan.boundary}

        parts = _replay_parts(cached_rows, img_of)

        def replay(t: int, written: dict[int, tuple[_Call, int]] | None) -> None:
            consumers = [(where[c], j) for c, j in self._consumers.get(t, ()) if where[c]]
            keep = bnd.get(t)
            if not consumers and keep is None and t == in_id:
                return
            if len(parts) > 1:  # images' states are disjoint: their rows replay in parallel
                _run_all([lambda rows=rows: replay_rows(t, written, consumers, keep, rows) for rows in parts])
            else:
                replay_rows(t, written, consumers, keep, cached_rows)

        def replay_rows(t: int, written: dict[int, tuple[_Call, int]] | None, consumers: list[Any],
                        keep: np.ndarray | None, rows: np.ndarray) -> None:
            for r in rows:
                r = int(r)
                saved = None
                if t == in_id:
                    src = images[r]
                else:
                    st = work[int(img_of[r])]
                    if kind[r] == _FULL:
                        st[t] = np.array(full_acts[r][t])  # its own, writable copy (in the replay threads)
                    elif written and r in written:
                        call, q = written[r]
                        y0, x0 = call.origin[q]
                        region = st[t][y0 : y0 + call.bh, x0 : x0 + call.bw]
                        if siblings:
                            saved = region.copy()
                        region[...] = call.patches[q]  # type: ignore[index]
                    src = st[t]
                for wc, j in consumers:
                    hit = wc.get(r)
                    if hit is not None:
                        hit[0].read(j, hit[1], src)
                if keep is not None:
                    keep[bnd_pos[r]] = src
                if saved is not None:
                    region[...] = saved

        t0 = time.perf_counter()
        replay(in_id, None)
        timing.replay_s += time.perf_counter() - t0
        for i, op in enumerate(plan.ops):
            stat = self._stats[i]
            for call in calls[i]:
                t0 = time.perf_counter()
                ins = [_as_tensor(b) for b in call.bufs]
                call.patches = np.asarray(self._box_fns[i](*ins))
                call.bufs = []
                dt = time.perf_counter() - t0
                stat.calls += 1
                stat.rows += len(call.rows)
                stat.compute_s += dt
                stat.exact_px += call.exact_px
                stat.padded_px += call.padded_px
                timing.compute_s += dt
            t0 = time.perf_counter()
            replay(op.output, where[i])
            for call in calls[i]:
                call.patches = None
            dt = time.perf_counter() - t0
            stat.replay_s += dt
            timing.replay_s += dt
        # the new states: each image's activations at its last row, its input that row's image
        last_row: dict[int, int] = {}
        for r in cached_rows if not siblings else ():
            last_row[int(img_of[r])] = int(r)
        for i, r in last_row.items():
            acts = work[i]
            acts[in_id] = images[r].copy()
            if i in self._states:
                self._states[i].step = int(step_of[r])
                self._states.move_to_end(i)
            else:
                self._states[i] = _ImageState(step=int(step_of[r]), acts=acts)
        while len(self._states) > self._max_images:
            self._states.popitem(last=False)
        if cached_rows.size:
            t0 = time.perf_counter()
            cols = [tf.constant(bnd[t]) for t in plan.boundary]
            p = np.asarray(self._suffix_fn(*cols), dtype=np.float32)
            timing.suffix_s += time.perf_counter() - t0
            for j, r in enumerate(cached_rows):
                probs[int(r)] = p[j]
        timing.inc_rows += int(np.sum(kind == _INC))
        if probs:
            out = np.stack([probs[r] for r in range(n)])
        return out, timing

    def _classify(
        self, img_of: np.ndarray, step_of: np.ndarray, probe_rows: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: uncached / full / incremental, the predecessor row (-1: the cached state), and
        whether it is one of the ``probe_rows`` first rows that would be incremental, given a
        plain full pass instead (their image's next row then starts afresh with a full pass)."""
        n = len(img_of)
        kind = np.full(n, _UNCACHED, np.int8)
        prev = np.full(n, -1, np.int64)
        probe = np.zeros(n, bool)
        cap = max(self._max_images, 2)
        slots: set[int] = set()
        last: dict[int, tuple[int, int]] = {}
        for r in range(n):
            i, k = int(img_of[r]), int(step_of[r])
            if i not in slots:
                if i not in self._states and len(slots) >= cap:
                    continue
                slots.add(i)
            if i in last:
                ls, lr = last[i]
            elif i in self._states:
                ls, lr = self._states[i].step, -1
            else:
                ls, lr = -2, -1
            if k == ls + 1 and probe_rows > 0:
                probe_rows -= 1
                probe[r] = True
                last[i] = (-2, -1)
                continue
            kind[r] = _INC if k == ls + 1 else _FULL
            prev[r] = lr
            last[i] = (k, r)
        return kind, prev, probe

    # -- reporting
    def layer_report(self, images: Any = None, *, repeats: int = 1) -> list[dict[str, Any]]:
        """Per prefix layer: what the lockstep updates achieved against the ideal box count.

        ``ideal`` = full-map pixels / exact changed-box pixels (the saving box counting
        promises), ``padded`` = full-map pixels / pixels computed (after padding each
        call's boxes to one size), both averaged over the rows updated so far. With
        ``images`` (float32 (B, H, W, 3)), each layer is also timed on full maps of those
        images (its share of a full pass), giving ``achieved`` = full seconds per row /
        incremental seconds per row (compute plus the replay of its state).
        """
        plan = self._plan
        if plan is None:
            raise RuntimeError("layer_report needs an incremental strategy that was prepared and used")
        full_s = self._time_full_layers(np.asarray(images, np.float32), repeats) if images is not None else None
        rows_out = []
        for i, (op, st) in enumerate(zip(plan.ops, self._stats, strict=True)):
            area = float(op.out_hw[0] * op.out_hw[1])
            row: dict[str, Any] = {
                "layer": op.layer.name,
                "kind": op.kind,
                "rows": st.rows,
                "calls": st.calls,
                "ideal": area * st.rows / st.exact_px if st.exact_px else float("inf"),
                "padded": area * st.rows / st.padded_px if st.padded_px else float("inf"),
                "compute_ms_per_row": 1e3 * st.compute_s / st.rows if st.rows else 0.0,
                "replay_ms_per_row": 1e3 * st.replay_s / st.rows if st.rows else 0.0,
            }
            if full_s is not None:
                inc = (st.compute_s + st.replay_s) / st.rows if st.rows else float("nan")
                row["full_ms_per_row"] = 1e3 * full_s[i]
                row["achieved"] = full_s[i] / inc if st.rows and inc > 0 else float("inf")
            rows_out.append(row)
        return rows_out

    def _time_full_layers(self, images: np.ndarray, repeats: int) -> list[float]:
        import tensorflow as tf

        plan = self._plan
        assert plan is not None
        outs = self._prefix_fn(tf.constant(images))
        vals = dict(zip(self._out_ids, outs, strict=True))
        fns = [graph_function(_layer_fn(op)) for op in plan.ops]
        best = [float("inf")] * len(plan.ops)
        for rep in range(repeats + 1):  # the first round traces
            for i, op in enumerate(plan.ops):
                args = [vals[t] for t in op.inputs]
                t0 = time.perf_counter()
                np.asarray(fns[i](args) if op.kind == "merge" else fns[i](args[0]))
                dt = time.perf_counter() - t0
                if rep:
                    best[i] = min(best[i], dt / len(images))
        return best

    def reset_stats(self) -> None:
        """Forget the per-layer statistics and :attr:`totals` gathered so far."""
        self._stats = [_LayerStats() for _ in (self._plan.ops if self._plan else [])]
        self.totals = CallTiming()


class _InternalsChanged(Exception):
    """The Keras internals the walk reads are not there (see :func:`check_keras_internals`)."""


@dataclass
class _KerasHolder:
    """A plain ``keras.Model`` where :class:`FullForward` wants a bench model (``.keras``)."""

    keras: Any


@dataclass
class CallTiming:
    """Where incremental forward calls spent their time, in seconds (the runtime check reads it).

    full_rows/full_s/full_calls: rows that needed a full pass (no cached predecessor), in how many
    model calls; probe_*: rows
    the runtime check gave a batched full pass; inc_rows: rows updated incrementally;
    compute_s: the layers' box calls; replay_s: writing boxes into states and reading the
    next layers' crops; suffix_s: the rest of the network; total_s: everything.
    """

    full_rows: int = 0
    full_s: float = 0.0
    full_calls: int = 0
    probe_rows: int = 0
    probe_s: float = 0.0
    inc_rows: int = 0
    compute_s: float = 0.0
    replay_s: float = 0.0
    suffix_s: float = 0.0
    total_s: float = 0.0

    def add(self, other: CallTiming) -> None:
        for f in ("full_rows", "full_s", "full_calls", "probe_rows", "probe_s", "inc_rows", "compute_s", "replay_s",
                  "suffix_s", "total_s"):
            setattr(self, f, getattr(self, f) + getattr(other, f))


class _Call:
    """One layer's batched box update: the rows, their common-size boxes and input crops."""

    def __init__(self, op: PrefixOp, rows: list[int], boxes: list[Box], bh: int, bw: int,
                 origin: list[tuple[int, int]], bufs: list[np.ndarray], exact_px: float):
        self.op, self.rows, self.boxes, self.bh, self.bw = op, rows, boxes, bh, bw
        self.origin = origin
        self.pos = {r: q for q, r in enumerate(rows)}
        self.bufs = bufs
        self.exact_px = exact_px
        self.padded_px = float(len(rows) * bh * bw)
        self.patches: np.ndarray | None = None

    @classmethod
    def make(cls, op: PrefixOp, rows: list[int], bs: list[Box], plan: GraphPlan | None,
             arena: _BufferArena | None = None) -> _Call:
        """``plan=None``: sizes only, no input buffers (for the gain estimate); buffers from ``arena``."""
        oh, ow = op.out_hw
        bh = min(oh, max(b[1] - b[0] for b in bs))
        bw = min(ow, max(b[3] - b[2] for b in bs))
        origin = [(min(b[0], oh - bh), min(b[2], ow - bw)) for b in bs]
        exact = float(sum((b[1] - b[0]) * (b[3] - b[2]) for b in bs))
        bufs = []
        for t in op.inputs if plan is not None else ():
            c = plan.cached[t][-1]
            if op.kind == "window":
                shape = ((bh - 1) * op.s[0] + op.k[0], (bw - 1) * op.s[1] + op.k[1], c)
            else:
                shape = (bh, bw, c)
            bufs.append(arena.take((len(rows), *shape)) if arena is not None else _aligned_empty((len(rows), *shape)))
        return cls(op, rows, bs, bh, bw, origin, bufs, exact)

    def read(self, slot: int, q: int, src: np.ndarray) -> None:
        """Copy row ``q``'s input crop (padded with the layer's fill outside the map) from ``src``."""
        op = self.op
        y0, x0 = self.origin[q]
        dst = self.bufs[slot][q]
        if op.kind != "window":
            dst[...] = src[y0 : y0 + self.bh, x0 : x0 + self.bw]
            return
        a0 = y0 * op.s[0] - op.pad[0]
        b0 = x0 * op.s[1] - op.pad[1]
        a1, b1 = a0 + dst.shape[0], b0 + dst.shape[1]
        hh, ww = src.shape[:2]
        ca0, ca1, cb0, cb1 = max(a0, 0), min(a1, hh), max(b0, 0), min(b1, ww)
        if ca0 == a0 and ca1 == a1 and cb0 == b0 and cb1 == b1:
            dst[...] = src[a0:a1, b0:b1]
            return
        dst.fill(op.fill)
        if ca1 > ca0 and cb1 > cb0:
            dst[ca0 - a0 : ca1 - a0, cb0 - b0 : cb1 - b0] = src[ca0:ca1, cb0:cb1]


def _call_overhead(op: PrefixOp) -> float:
    """The fixed cost of one call of a layer's box graph, in multiply-adds."""
    return CALL_OVERHEAD_MACS + CALL_OVERHEAD_MACS_PER_WEIGHT * op.params


_ALIGN = 64  # TensorFlow's CPU tensors must be 64-byte aligned to share a NumPy buffer


def _aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float32 array whose data is 64-byte aligned (see :func:`_as_tensor`)."""
    n = int(np.prod(shape)) * 4
    raw = np.empty(n + _ALIGN, np.uint8)
    off = (-raw.ctypes.data) % _ALIGN
    return raw[off : off + n].view(np.float32).reshape(shape)


class _BufferArena:
    """Aligned float32 buffers carved from one block that is reused batch after batch.

    A lockstep batch needs a few hundred MiB of input crops (VGG16 at 299 px, 64 rows: ~330 MiB).
    Fresh ``np.empty`` buffers of that size are new pages on every batch, and faulting them in
    cost more than the copies into them (the crop reads of 4 images x 82 steps: 1.40 s with fresh
    buffers, 0.40 s in a reused block, summed over the replay threads). :meth:`reset` starts a
    batch; :meth:`take` hands out the next buffer, from the block while it lasts, else a fresh one
    (and the next batch's block is made as large as this batch wanted, at most ``max_bytes``). A
    buffer is valid until the next :meth:`reset`.
    """

    def __init__(self) -> None:
        self.max_bytes = 0.0  # set by reset
        self._block = np.empty(0, np.uint8)
        self._start = 0
        self._used = 0
        self._wanted = 0

    @property
    def nbytes(self) -> int:
        return int(self._block.size)

    def reset(self, max_bytes: float) -> None:
        self.max_bytes = max_bytes
        if self._block.size > max_bytes + _ALIGN:
            self._block, self._start = np.empty(0, np.uint8), 0
        size = int(min(self._wanted, max_bytes))
        if self._block.size - self._start < size:  # the last batch outgrew the block
            self._block = np.empty(0, np.uint8)  # drop the old block before making the larger one
            self._block = np.empty(size + _ALIGN, np.uint8)
            self._start = (-self._block.ctypes.data) % _ALIGN
        self._used = self._start
        self._wanted = 0

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape)) * 4
        size = -(-n // _ALIGN) * _ALIGN  # every buffer starts on an aligned offset
        self._wanted += size
        if self._used + size > self._block.size:
            return _aligned_empty(shape)
        view = self._block[self._used : self._used + n]
        self._used += size
        return view.view(np.float32).reshape(shape)


class _ArenaPool:
    """The process's idle :class:`_BufferArena` (at most one is kept), handed to one batch at a time.

    Kept across strategy objects, as a caching allocator keeps freed memory: a run that makes a
    new strategy per evaluation (each curve cell, each benchmark round) would otherwise fault
    its crop memory in again. The block (at most a strategy's ``memory_budget_mb``, on top of its
    cached activations) stays until :func:`release_buffers` gives it back (``bench run`` does at
    its end).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_BufferArena] = []

    def acquire(self) -> _BufferArena:
        with self._lock:
            return self._idle.pop() if self._idle else _BufferArena()

    def release(self, arena: _BufferArena) -> None:
        with self._lock:
            if not self._idle or self._idle[0].nbytes < arena.nbytes:
                self._idle = [arena]

    def clear(self) -> None:
        with self._lock:
            self._idle = []


_ARENAS = _ArenaPool()


def release_buffers() -> None:
    """Free the reusable input-crop memory that incremental inference keeps between batches."""
    _ARENAS.clear()


def _as_tensor(a: np.ndarray) -> Any:
    """A TensorFlow tensor for ``a``, sharing its memory where that is safe (no copy), else copied."""
    import tensorflow as tf

    if a.flags.c_contiguous and a.ctypes.data % _ALIGN == 0 and a.size:
        try:
            return tf.experimental.dlpack.from_dlpack(a.__dlpack__())
        except Exception:  # noqa: BLE001 - an older NumPy / TF without DLPack: copy
            pass
    return tf.constant(a)


def _make_calls(op: PrefixOp, rows: list[int], boxes: list[Box], plan: GraphPlan | None,
                arena: _BufferArena | None = None) -> list[_Call]:
    """The calls that update one layer: rows grouped by box size, each group padded to its largest.

    ``plan=None``: sizes only (no input buffers); ``arena``: where the input buffers come from.

    Groups of equal box shapes are merged greedily while the pixels added by padding cost
    less than another call (:data:`CALL_OVERHEAD_MACS` at the layer's cost per pixel).
    """
    overhead = _call_overhead(op) / max(op.cost, 1e-9)
    groups = [[q for q, b in enumerate(boxes) if (b[1] - b[0], b[3] - b[2]) == shape]
              for shape in sorted({(b[1] - b[0], b[3] - b[2]) for b in boxes})]
    merged = _merge_groups(
        [[(boxes[q][1] - boxes[q][0], boxes[q][3] - boxes[q][2]) for q in g] for g in groups], overhead
    )
    out = []
    for members in merged:
        qs = [q for gi in members for q in groups[gi]]
        out.append(_Call.make(op, [rows[q] for q in qs], [boxes[q] for q in qs], plan, arena))
    return out


def _merge_groups(shapes: list[list[tuple[int, int]]], overhead: float) -> list[list[int]]:
    """Greedy merging of row groups: cost(group) = overhead + rows x max height x max width.

    Repeatedly merges the pair of groups whose merge saves the most, while any saves.
    """
    members = [[i] for i in range(len(shapes))]
    n = np.array([len(s) for s in shapes], np.float64)
    hh = np.array([max(h for h, _ in s) for s in shapes], np.float64)
    ww = np.array([max(w for _, w in s) for s in shapes], np.float64)
    while len(members) > 1:
        mh, mw = np.maximum.outer(hh, hh), np.maximum.outer(ww, ww)
        own = overhead + n * hh * ww
        delta = overhead + np.add.outer(n, n) * mh * mw - np.add.outer(own, own)
        np.fill_diagonal(delta, np.inf)
        k = int(np.argmin(delta))
        a, b = divmod(k, len(members))
        if delta[a, b] >= 0:
            break
        a, b = min(a, b), max(a, b)
        members[a] += members[b]
        n[a] += n[b]
        hh[a], ww[a] = max(hh[a], hh[b]), max(ww[a], ww[b])
        del members[b]
        n, hh, ww = np.delete(n, b), np.delete(hh, b), np.delete(ww, b)
    return members


def _demote_unneeded_full_rows(kind: np.ndarray, img_of: np.ndarray) -> None:
    """A full row followed (in this call) by another full row of its image needs no state: plain pass."""
    nxt: dict[int, int] = {}
    for r in range(len(kind) - 1, -1, -1):
        if kind[r] == _UNCACHED:
            continue
        i = int(img_of[r])
        if kind[r] == _FULL and i in nxt and kind[nxt[i]] == _FULL:
            kind[r] = _UNCACHED
            continue
        nxt[i] = r


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


#: threads replaying rows of different images at once (NumPy releases the GIL in large copies):
#: two, or one where the process may use a single CPU (a Ray worker given one, a pinned job)
REPLAY_THREADS = min(2, _usable_cpus())
_POOL: list[Any] = []
_POOL_LOCK = threading.Lock()


def _run_all(tasks: list[Any]) -> None:
    """Run ``tasks`` (callables) on the process's replay threads; return when every one has ended,
    then raise the first error (no task is still writing into a state when the caller goes on)."""
    from concurrent.futures import ThreadPoolExecutor, wait

    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(max_workers=REPLAY_THREADS, thread_name_prefix="bench-replay"))
        pool = _POOL[0]
    futures = [pool.submit(task) for task in tasks]
    wait(futures)
    for f in futures:
        f.result()


def _replay_parts(rows: np.ndarray, img_of: np.ndarray) -> list[np.ndarray]:
    """``rows`` split into at most :data:`REPLAY_THREADS` parts, whole images each (row order kept
    within an image), balanced by row count; one part where the rows hold one image."""
    if REPLAY_THREADS < 2 or not rows.size:
        return [rows]
    imgs, counts = np.unique(img_of[rows], return_counts=True)
    if len(imgs) < 2:
        return [rows]
    load = [0] * REPLAY_THREADS
    owner: dict[int, int] = {}
    for i, c in sorted(zip(imgs.tolist(), counts.tolist(), strict=True), key=lambda ic: -ic[1]):
        k = load.index(min(load))
        owner[i] = k
        load[k] += c
    which = np.array([owner[int(i)] for i in img_of[rows]])
    return [rows[which == k] for k in range(REPLAY_THREADS) if np.any(which == k)]


def _slice_batch(batch: ForwardBatch, s: int, e: int) -> ForwardBatch:
    return ForwardBatch(images=batch.images[s:e], image_index=batch.image_index[s:e], step=batch.step[s:e],
                        changed_box=batch.changed_box[s:e], targets=batch.targets[s:e])


def _box_fn(op: PrefixOp, consts: dict[str, np.ndarray] | None = None) -> Any:
    """One prefix layer's box computation on its input crops (traced by :func:`graph_function`)."""
    if op.kind == "merge":
        return lambda *xs: _call(op.layer, list(xs))
    if op.kind == "window":
        return lambda x: _window_compute(op, x, consts)
    return lambda x: _call(op.layer, x)


def _layer_fn(op: PrefixOp) -> Any:
    """One prefix layer on full maps (:meth:`IncrementalForward.layer_report`'s timing)."""
    return lambda x: _call(op.layer, x)


def _window_compute(op: PrefixOp, x: Any, consts: dict[str, np.ndarray] | None = None) -> Any:
    """A windowed layer on an explicitly padded crop (``valid`` padding).

    ``consts``: the layer's kernel (and bias) as arrays, embedded in the graph as constants
    (see :func:`compiled_functions`); without them the layer's variables are read.
    """
    import keras

    layer = op.layer
    cls = type(layer).__name__
    if cls == "ZeroPadding2D":
        return x
    if cls == "MaxPooling2D":
        return keras.ops.max_pool(x, op.k, op.s, padding="valid")
    if cls == "AveragePooling2D":
        return keras.ops.average_pool(x, op.k, op.s, padding="valid")
    consts = consts or {}
    kernel = keras.ops.convert_to_tensor(consts["kernel"]) if "kernel" in consts else layer.kernel
    if cls == "Conv2D":
        y = keras.ops.conv(x, kernel, strides=op.s, padding="valid")
    else:  # DepthwiseConv2D
        y = keras.ops.depthwise_conv(x, kernel, strides=op.s, padding="valid")
    if layer.use_bias:
        bias = keras.ops.convert_to_tensor(consts["bias"]) if "bias" in consts else layer.bias
        y = keras.ops.add(y, keras.ops.reshape(bias, (1, 1, 1, -1)))
    if layer.activation is not None:
        y = layer.activation(y)
    return y


class RuntimeCheck:
    """``auto``'s check of its own choice, at run time, from measured throughput.

    Starting incremental: after :data:`CHECK_CALLS` calls its cost per row (the rows that
    needed a full pass included) is compared with the full-pass cost per row measured on
    those full-pass rows (free: the step-0 rows, batched per group of ``lockstep_images``
    images; a smaller batch than the engine's, so a pass there may cost more per row than in a
    full batch): a measured gain of at least :data:`CONFIDENT_GAIN` keeps incremental
    (:data:`CONFIDENT_GAIN_BATCHED` where those passes ran :data:`BATCHED_FREE_ROWS` rows or more
    per call); below it, the next call gives :data:`PROBE_ROWS` rows a plain batched full
    pass (their results are used) to measure the full-pass cost exactly, and the faster
    strategy is kept. Starting full (a predicted gain below ``min_gain``): after one call,
    one call runs incremental, and the faster is kept. One decision per run; the numbers
    and the reason are in :meth:`summary`.
    """

    def __init__(self, *, predicted_gain: float, start: str):
        self.predicted_gain = predicted_gain
        self.start = start
        self.current = start
        self.decision = ""
        self.inc_calls = 0
        self.inc_rows = 0
        self.inc_s = 0.0
        self.free_rows = 0  # rows of incremental calls that needed a full pass anyway
        self.free_s = 0.0
        self.free_calls = 0
        self.full_calls = 0
        self.full_rows = 0  # rows of full-pass calls, or probe rows
        self.full_s = 0.0
        self.full_source = ""
        self.measured_gain: float | None = None
        self._probe = False

    def next_path(self) -> tuple[str, int]:
        """(``"full"`` or ``"incremental"``, probe rows) for the next call."""
        if self.decision:
            return self.current, 0
        if self.start == "full":
            return ("incremental", 0) if self.full_calls else ("full", 0)
        return "incremental", PROBE_ROWS if self._probe else 0

    def observe_full(self, rows: int, seconds: float) -> None:
        self.full_calls += 1
        self.full_rows += rows
        self.full_s += seconds
        self.full_source = "full-pass batches"

    def observe_incremental(self, t: CallTiming) -> None:
        rows = t.full_rows + t.inc_rows
        suffix_per_row = t.suffix_s / rows if rows else 0.0
        self.free_rows += t.full_rows
        self.free_s += t.full_s + suffix_per_row * t.full_rows
        self.free_calls += t.full_calls
        if not t.inc_rows and not t.probe_rows:  # only full passes (the targets' prediction): no news
            return
        self.inc_calls += 1
        self.inc_rows += rows
        self.inc_s += t.total_s - t.probe_s
        if t.probe_rows:
            self.full_rows += t.probe_rows
            self.full_s += t.probe_s
            self.full_source = f"{self.full_rows} probe rows given a batched full pass"
        self._decide()

    def fail(self, reason: str) -> None:
        self.current = "full"
        self.decision = reason

    def _decide(self) -> None:
        if self.decision or not self.inc_rows:
            return
        inc = self.inc_s / self.inc_rows
        if self.start == "full":
            if not self.full_rows:
                return
            gain = (self.full_s / self.full_rows) / inc if inc > 0 else float("inf")
            self.measured_gain = gain
            if gain > 1.0:
                self.current = "incremental"
                self.decision = (
                    f"switched to incremental: measured {gain:.2f}x faster than full passes "
                    f"(predicted {self.predicted_gain:.2f}x)"
                )
            else:
                self.decision = (
                    f"kept full passes: incremental measured at {gain:.2f}x of their speed "
                    f"(predicted {self.predicted_gain:.2f}x)"
                )
            return
        if self.inc_calls < CHECK_CALLS:
            return
        if self.full_rows:
            gain = (self.full_s / self.full_rows) / inc if inc > 0 else float("inf")
        elif self.free_rows:
            gain = (self.free_s / self.free_rows) / inc if inc > 0 else float("inf")
            batched = self.free_calls > 0 and self.free_rows / self.free_calls >= BATCHED_FREE_ROWS
            if gain < (CONFIDENT_GAIN_BATCHED if batched else CONFIDENT_GAIN):
                self._probe = True
                return
            self.full_source = f"{self.free_rows} row(s) that needed a full pass anyway, in {self.free_calls} call(s)"
        else:
            self._probe = True
            return
        self.measured_gain = gain
        if gain >= 1.0:
            self.decision = (
                f"kept incremental: measured {gain:.2f}x faster than full passes "
                f"(predicted {self.predicted_gain:.2f}x)"
            )
        else:
            self.current = "full"
            self.decision = (
                f"switched to full passes: incremental measured at {gain:.2f}x of their speed "
                f"(predicted {self.predicted_gain:.2f}x)"
            )

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"predicted_gain": round(self.predicted_gain, 3), "started": self.start}
        if self.inc_rows and self.inc_s > 0:
            out["incremental_rows_per_s"] = round(self.inc_rows / self.inc_s, 3)
            out["incremental_rows_measured"] = self.inc_rows
        full_rows, full_s = (self.full_rows, self.full_s) if self.full_rows else (self.free_rows, self.free_s)
        if full_rows and full_s > 0:
            out["full_rows_per_s"] = round(full_rows / full_s, 3)
            out["full_rows_measured"] = full_rows
            out["full_measured_on"] = self.full_source or f"{full_rows} row(s) that needed a full pass anyway"
        if self.measured_gain is not None:
            out["measured_gain"] = round(self.measured_gain, 3)
        out["decision"] = self.decision or "pending (too few rows measured yet)"
        return out


# ---- occlusion on the same engine ------------------------------------------------------------
@dataclass
class OcclusionOutputs:
    """What :func:`occlusion_outputs` returns.

    base: float32 (N, C), the model's outputs on the original images; occluded: float32
    (N, R, C), on image n with region r replaced; strategy: ``"incremental"`` or ``"full"``
    (what ran; why in ``info["reason"]``); seconds: wall time; forward_passes: N * (R + 1).
    With ``run_full=False`` and no incremental run, ``occluded`` is None (nothing ran).
    """

    base: np.ndarray
    occluded: np.ndarray | None
    strategy: str
    info: dict[str, Any]
    seconds: float
    forward_passes: int


def occlusion_outputs(
    model: Any,
    images: Any,
    boxes: Any,
    *,
    fill: Any = 0.0,
    batch_size: int = 64,
    strategy: str = "auto",
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    min_gain: float = 1.0,
    run_full: bool = True,
) -> OcclusionOutputs:
    """The model's outputs on every image with each region replaced by ``fill``, exactly.

    Occlusion's rows (image n, region r) each differ from the original image in one region
    only, so with ``strategy="incremental"`` (or ``"auto"``) every row reuses the original's
    cached activations: one full pass per image, then per row only the boxes that region
    reaches, in lockstep over ``batch_size`` rows (the rows are variants of the cached
    original, not a sequence: each row's boxes are written, read and undone).
    ``"auto"`` ends the incremental prefix where the cost model says so (as ``auto`` does for
    curves: :func:`best_prefix_split`) and uses full passes where the model cannot be walked,
    has an unsupported layer before its locality boundary, or is predicted less than
    ``min_gain`` faster; the reason is in ``info``. ``"full"``: one batched model call per
    ``batch_size`` rows.

    model: a bench model or a single-input functional ``keras.Model`` (its outputs are
        returned as they are: probabilities for bench models; pass a logits model for logits).
    images: float32 (N, H, W, 3), the model's input (bench models: [0, 1]).
    boxes: int (R, 4), ``(y0, y1, x0, x1)`` half-open, the regions.
    fill: the replacement, broadcast to the images: a scalar, one value per image (N,),
        per channel (1, C) or per image and channel (N, C), or images (N, H, W, C) /
        (H, W, C) (a baseline).
    run_full: ``False``: where the incremental path is not taken (``"auto"``'s choice or a
        failure at run time) run nothing and return ``occluded=None`` with the reason (for a
        caller with a full-pass path of its own).
    """
    started = time.perf_counter()
    x = np.ascontiguousarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise ConfigError(f"occlusion_outputs: images must be float32 (N, H, W, C), got shape {x.shape}")
    n, h, w, c = x.shape
    b = np.asarray(boxes)
    if b.ndim != 2 or b.shape[1] != 4 or not np.issubdtype(b.dtype, np.integer):
        raise ConfigError(f"occlusion_outputs: boxes must be int (R, 4) (y0, y1, x0, x1), got {b.shape} {b.dtype}")
    if b.size and (b[:, 0].min() < 0 or b[:, 2].min() < 0 or b[:, 1].max() > h or b[:, 3].max() > w
                   or (b[:, 1] <= b[:, 0]).any() or (b[:, 3] <= b[:, 2]).any()):
        raise ConfigError(f"occlusion_outputs: every box must be a non-empty part of the {h}x{w} image")
    fill_arr = np.asarray(fill, dtype=np.float32)
    if fill_arr.ndim == 1:
        if fill_arr.shape[0] != n:
            raise ConfigError(
                f"occlusion_outputs: a 1-d fill holds one value per image ({n}), got {fill_arr.shape[0]} "
                "(per-channel values: shape (1, C) or (N, C))"
            )
        fill_arr = fill_arr[:, None, None, None]
    elif fill_arr.ndim == 2:
        fill_arr = fill_arr[:, None, None, :]
    elif fill_arr.ndim == 3:
        fill_arr = fill_arr[None]
    try:
        fill_full = np.broadcast_to(fill_arr, x.shape)
    except ValueError as exc:
        raise ConfigError(f"occlusion_outputs: fill of shape {fill_arr.shape} does not broadcast to {x.shape}") from exc
    rows_total = n * len(b)
    bs = max(1, int(batch_size))
    keras_model = getattr(model, "keras", model)
    holder = model if hasattr(model, "keras") else _KerasHolder(keras_model)
    shape = (int(h), int(w), int(c))

    def occluded_rows(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.arange(start, stop)
        img, reg = idx // len(b), idx % len(b)
        out = x[img].copy()
        for j, (i, r) in enumerate(zip(img, reg, strict=True)):
            y0, y1, x0, x1 = (int(v) for v in b[r])
            out[j, y0:y1, x0:x1] = fill_full[i, y0:y1, x0:x1]
        return out, img

    info: dict[str, Any] = {"requested": strategy}
    inc: IncrementalForward | None = None
    if strategy not in ("auto", "incremental", "full"):
        raise ConfigError(f"occlusion_outputs: strategy must be 'auto', 'incremental' or 'full', got {strategy!r}")
    if strategy != "full":
        inc = IncrementalForward(mode="incremental", memory_budget_mb=memory_budget_mb, split=strategy == "auto")
        reason = ""
        try:
            inc.prepare(holder, batch_size=bs, image_shape=shape, mask_local=True)
            plan = inc._plan
            assert plan is not None
            gain = estimate_gain(plan, rows_per_call=bs, regions=[tuple(int(v) for v in r) for r in b])
            info.update({k: v for k, v in inc.info.items() if k not in ("requested", "used", "reason")})
            info["predicted_gain"] = round(gain, 3)
            if plan.stop_reason == "unsupported":
                reason = f"layer {plan.stop_layer} before the locality boundary is not supported"
            elif not plan.ops:
                reason = "the model has no local prefix"
            elif strategy == "auto" and gain < min_gain:
                reason = f"predicted gain {gain:.2f}x is below min_gain={min_gain:g}x"
        except Exception as exc:  # noqa: BLE001
            if strategy == "incremental":
                raise
            reason = f"the Keras graph walk failed ({type(exc).__name__}: {exc})"
        if reason and strategy == "auto":
            info["reason"] = reason
            inc = None
        elif reason:
            info["note"] = reason
    base = np.zeros((n, 0), np.float32)
    occluded: np.ndarray | None = None
    if inc is not None:
        try:
            group = max(1, min(inc._max_images, n))
            parts_base, parts_occ = [], []
            for g0 in range(0, n, group):
                g1 = min(n, g0 + group)
                inc._states.clear()
                ids = np.arange(g0, g1)
                zeros = np.zeros(g1 - g0, np.int64)
                out0, _ = inc._lockstep(ForwardBatch(images=x[g0:g1], image_index=ids, step=zeros,
                                                     changed_box=np.zeros((g1 - g0, 4), np.int64), targets=zeros))
                parts_base.append(out0)
                rows = []
                total = (g1 - g0) * len(b)
                for s in range(g0 * len(b), g0 * len(b) + total, bs):
                    e = min(s + bs, g0 * len(b) + total)
                    xb, img = occluded_rows(s, e)
                    ob, _ = inc._lockstep(ForwardBatch(images=xb, image_index=img, step=np.ones(e - s, np.int64),
                                                       changed_box=np.zeros((e - s, 4), np.int64),
                                                       targets=np.zeros(e - s, np.int64)), siblings=True)
                    rows.append(ob)
                parts_occ.append(np.concatenate(rows) if rows else np.zeros((0, out0.shape[1]), np.float32))
            inc._states.clear()
            base = np.concatenate(parts_base)
            occluded = np.concatenate(parts_occ).reshape(n, len(b), -1)
            info["used"] = "incremental"
            info.setdefault("reason", "requested" if strategy == "incremental" else "predicted gain")
        except Exception as exc:
            if strategy == "incremental":
                raise
            info["reason"] = f"incremental inference failed at run time ({type(exc).__name__}: {exc})"
            log.warning("occlusion: incremental -> full: %s", info["reason"])
            occluded = None
    if occluded is None and not run_full:
        info["used"] = "full"
        return OcclusionOutputs(base=base, occluded=None, strategy="full", info=info,
                                seconds=time.perf_counter() - started, forward_passes=0)
    if occluded is None:
        full = FullForward()
        full.prepare(holder, batch_size=bs, image_shape=shape, mask_local=True)
        base = np.concatenate([full.predict(x[s : s + bs]) for s in range(0, n, bs)]) if n else base
        outs = []
        for s in range(0, rows_total, bs):
            xb, _ = occluded_rows(s, min(s + bs, rows_total))
            outs.append(full.predict(xb))
        occluded = (np.concatenate(outs) if outs else np.zeros((0, base.shape[1]), np.float32)).reshape(n, len(b), -1)
        info["used"] = "full"
        info.setdefault("reason", "requested")
    return OcclusionOutputs(
        base=base, occluded=occluded, strategy=info["used"], info=info,
        seconds=time.perf_counter() - started, forward_passes=n * (len(b) + 1),
    )


def auto_strategy() -> IncrementalForward:
    """The ``"auto"`` strategy: incremental where the model and perturbation allow a real gain."""
    return IncrementalForward(mode="auto")


def predicted_gain(model: Any, grid: int = 9, *, realistic: bool = True) -> float:
    """The box-count estimate of full / incremental work for ``model`` (a bench or Keras model)."""
    return estimate_gain(analyse_model(getattr(model, "keras", model)), grid, realistic=realistic)


__all__ = [
    "IncrementalForward",
    "KERAS_INTERNALS",
    "OcclusionOutputs",
    "RuntimeCheck",
    "CallTiming",
    "PrefixOp",
    "check_keras_internals",
    "best_prefix_split",
    "cached_plan",
    "occlusion_outputs",
    "GraphPlan",
    "analyse_model",
    "auto_strategy",
    "estimate_gain",
    "predicted_gain",
    "propagate",
    "out_box",
    "release_buffers",
]
