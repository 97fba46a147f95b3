"""Incremental MoRF inference: reuse the previous step's activations (Krypton-style).

A MoRF step changes one region of the image, so in a CNN only the activations
inside that region's growing receptive-field box change. :class:`IncrementalForward`
walks the Keras functional graph up to the first layer where spatial locality
ends (Flatten, global pooling, Dense, ...), keeps every activation of that
*local prefix* for the image being evaluated, and at each step recomputes only
the changed box of each layer from the cached inputs (the box grows by the
kernel's halo, is mapped through strides and padding and clipped to the map),
writes it back, then runs the rest of the network (the *suffix*) normally,
batched over the rows of the engine's batch.

Exactness does not depend on the engine's ``changed_box``: the changed box of
the input is the bounding box of the pixels that actually differ from the
cached ``x^(k-1)`` of the same image, so any perturbation is evaluated exactly;
a row whose previous step is not cached (step 0, another order) gets a full
pass. ``mask_local=False`` perturbations and models where the box count
predicts a small gain make ``"auto"`` choose full passes, with the reason
recorded (:attr:`IncrementalForward.info`).

Supported in the local prefix: Conv2D (any stride, same/valid padding, no
dilation, groups=1), DepthwiseConv2D, MaxPooling2D (same/valid),
AveragePooling2D (valid), ZeroPadding2D, merges (Add, Subtract, Multiply,
Average, Maximum, Minimum, Concatenate on channels) and element-wise layers
(Activation, ReLU, BatchNormalization in inference, Rescaling, Normalization,
Dropout, and any custom layer that passes an element-wise probe, such as the
built-in models' preprocessing layers). Nested single-input Keras models (a
backbone not inlined) are walked through as if inlined.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.engine.forward import ForwardBatch, FullForward
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
DEFAULT_MIN_GAIN = 2.0
DEFAULT_MEMORY_BUDGET_MB = 1024.0
#: the throughput of a layer on a small box relative to the full map (measured: ~0.65)
SMALL_BOX_EFFICIENCY = 0.65
#: the fixed cost of one per-layer box update (crop, call, write back) in multiply-adds
#: at full-pass throughput (~0.25 ms at ~60 GMAC/s on the 2-core reference CPU)
LAYER_OVERHEAD_MACS = 1.5e7


@dataclass
class _Op:
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


@dataclass
class GraphPlan:
    """The local prefix of a Keras functional model and the decision data for ``auto``."""

    input_id: int
    input_hw: tuple[int, int]
    ops: list[_Op]
    cached: dict[int, tuple[int, ...]]  # tensor id -> (H, W, C) of every prefix tensor
    boundary: list[int]  # prefix tensors (or the input) read by the suffix, in suffix order
    suffix_nodes: list[Any]
    stop_layer: str | None  # name (class) of the layer that ended the prefix
    stop_reason: str  # "locality" | "unsupported" | "end"
    full_cost: float = 0.0
    suffix_cost: float = 0.0
    bytes_per_image: int = 0
    notes: list[str] = field(default_factory=list)
    aliases: dict[int, list[int]] = field(default_factory=dict)  # canonical id -> nested-model ids
    output_id: int = 0


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


def _window_op(layer: Any, x_in: Any, x_out: Any) -> _Op | str:
    """An :class:`_Op` for a windowed layer, or the reason it is not supported."""
    cls = type(layer).__name__
    ih, iw, cin = _hw(x_in)
    oh, ow, cout = _hw(x_out)
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "channels_first"
    if cls == "ZeroPadding2D":
        (pt, _pb), (pl, _pr) = layer.padding
        return _Op(layer, "window", [], 0, (oh, ow), (ih, iw), (1, 1), (1, 1), (int(pt), int(pl)), 0.0, 0.0)
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
    return _Op(layer, "window", [], 0, (oh, ow), (ih, iw), k, s, pad, fill, float(cost))


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


def analyse_model(keras_model: Any) -> GraphPlan:
    """Walk a single-input Keras functional model: its local prefix, boundary and suffix."""
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
    ops: list[_Op] = []
    suffix: list[Any] = []
    stop_layer, stop_reason = None, "end"
    stopped = False
    for node in nodes:
        layer = node.operation
        cls = type(layer).__name__
        ins = list(node.input_tensors)
        outs = list(node.outputs)
        local_inputs = ins and all(cid(t) in prefix for t in ins)
        op: _Op | str | None = None
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
                    op = _Op(layer, "merge", [], 0, out_shape[:2], cost=float(out_shape[-1]) / 8.0)
            elif len(ins) == 1 and (cls in POINTWISE and same_hw):
                op = _Op(layer, "point", [], 0, out_shape[:2], cost=float(out_shape[-1]) / 8.0)
            elif len(ins) == 1 and cls in (
                "Conv2D", "DepthwiseConv2D", "MaxPooling2D", "AveragePooling2D", "ZeroPadding2D"
            ):
                op = _window_op(layer, ins[0], outs[0])
            elif cls in LOCALITY_END or hasattr(layer, "_nodes_by_depth"):
                op = None
            elif len(ins) == 1 and same_hw and _probe_pointwise(layer, _hw(ins[0])):
                op = _Op(layer, "point", [], 0, out_shape[:2], cost=float(out_shape[-1]) / 8.0)
            else:
                op = "not element-wise (a global or unknown operation)"
        if isinstance(op, _Op):
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
    plan.full_cost = sum(op.cost * op.out_hw[0] * op.out_hw[1] for op in ops)
    plan.suffix_cost = sum(_layer_cost(n.operation, n.outputs[0], list(n.input_tensors)) for n in suffix)
    plan.bytes_per_image = int(sum(4 * int(np.prod(s)) for s in cached.values()))
    return plan


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


def out_box(op: _Op, box: Box) -> Box | None:
    """The output box a layer must recompute when ``box`` of its input changed."""
    if op.kind != "window":
        return box
    y0, y1 = _out_range(box[0], box[1], op.k[0], op.s[0], op.pad[0], op.out_hw[0])
    x0, x1 = _out_range(box[2], box[3], op.k[1], op.s[1], op.pad[1], op.out_hw[1])
    if y0 >= y1 or x0 >= x1:
        return None
    return (y0, y1, x0, x1)


def propagate(plan: GraphPlan, box: Box) -> dict[int, Box | None]:
    """The changed box of every prefix tensor when ``box`` of the input changed."""
    boxes: dict[int, Box | None] = {plan.input_id: box}
    for op in plan.ops:
        b = _union([boxes.get(t) for t in op.inputs])
        boxes[op.output] = None if b is None else out_box(op, b)
    return boxes


def estimate_gain(plan: GraphPlan, grid: int = 9, *, realistic: bool = True) -> float:
    """Predicted full / incremental cost of one MoRF step on a ``grid`` x ``grid`` grid.

    Box counting: the multiply-adds of every prefix layer over its changed box,
    averaged over the grid's regions, plus the suffix run in full. ``realistic``
    (the default, what ``auto`` uses) also charges small boxes their lower
    throughput (:data:`SMALL_BOX_EFFICIENCY`) and each layer update a fixed cost
    (:data:`LAYER_OVERHEAD_MACS`), so that small images and very deep graphs
    (DenseNet's ~700 layers) are not predicted a gain they do not get;
    ``realistic=False`` is the ideal ratio of multiply-adds.
    """
    h, w = plan.input_hw
    ys = np.linspace(0, h, grid + 1).round().astype(int)
    xs = np.linspace(0, w, grid + 1).round().astype(int)
    full = plan.full_cost + plan.suffix_cost
    inc = 0.0
    for r in range(grid):
        for c in range(grid):
            boxes = propagate(plan, (int(ys[r]), int(ys[r + 1]), int(xs[c]), int(xs[c + 1])))
            for op in plan.ops:
                b = boxes.get(op.output)
                if b is not None:
                    macs = op.cost * (b[1] - b[0]) * (b[3] - b[2])
                    inc += macs / SMALL_BOX_EFFICIENCY + LAYER_OVERHEAD_MACS if realistic else macs
    inc = inc / (grid * grid) + plan.suffix_cost
    return float(full / inc) if inc > 0 else 1.0


# ---- the strategy ---------------------------------------------------------------------------
@dataclass
class _ImageState:
    step: int
    acts: dict[int, np.ndarray]  # tensor id -> (H, W, C) float32, this image's x^(step) activations


class IncrementalForward:
    """Forward strategy that reuses the previous step's activations (exact).

    mode: ``"incremental"`` (always, where any prefix exists) or ``"auto"``
        (incremental only when the box count predicts ``>= min_gain`` and the
        perturbation is mask-local; else full passes, reason in :attr:`info`).
    min_gain: the predicted saving ``auto`` needs.
    memory_budget_mb: bound on cached activations (default 1 GiB); decides how many
        images' caches are kept at once (at least one; the engine's image-major
        order needs one: VGG16 at 299 caches ~104 MiB per image, DenseNet201 ~505 MiB).
        What it used is in ``info["cached_images"]``.
    estimate_grid: region grid assumed by the gain estimate.
    """

    def __init__(
        self,
        *,
        mode: str = "incremental",
        min_gain: float = DEFAULT_MIN_GAIN,
        memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
        estimate_grid: int = 9,
    ):
        self.mode = mode
        self.min_gain = min_gain
        self.memory_budget_mb = memory_budget_mb
        self.estimate_grid = estimate_grid
        self.name = mode
        self.info: dict[str, Any] = {}
        self._plan: GraphPlan | None = None
        self._full: FullForward | None = None
        self._states: OrderedDict[int, _ImageState] = OrderedDict()
        self._max_images = 1
        self._prefix_fn: Any = None
        self._suffix_fn: Any = None

    def get_params(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "min_gain": self.min_gain,
            "memory_budget_mb": self.memory_budget_mb,
            "estimate_grid": self.estimate_grid,
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
        keras_model = getattr(model, "keras", model)
        self._states.clear()
        self._full = None
        plan = analyse_model(keras_model)
        if plan.input_hw != tuple(int(d) for d in image_shape[:2]):
            raise ConfigError(
                f"incremental inference: model {getattr(keras_model, 'name', '?')!r} takes "
                f"{plan.input_hw} images, the evaluation has {tuple(image_shape[:2])}"
            )
        gain = estimate_gain(plan, self.estimate_grid)
        ideal = estimate_gain(plan, self.estimate_grid, realistic=False)
        budget = float(self.memory_budget_mb) * 2**20
        self._max_images = max(1, int(budget // max(plan.bytes_per_image, 1)))
        info: dict[str, Any] = {
            "requested": self.mode,
            "predicted_gain": round(gain, 3),
            "ideal_gain": round(ideal, 3),
            "prefix_layers": len(plan.ops),
            "prefix_ends_at": plan.stop_layer,
            "cache_mb_per_image": round(plan.bytes_per_image / 2**20, 1),
            "cached_images": self._max_images,
            "memory_budget_mb": self.memory_budget_mb,
        }
        reason = ""
        if self.mode == "auto":
            if not mask_local:
                reason = "the perturbation changes pixels outside the perturbed region (mask_local=False)"
            elif plan.stop_reason == "unsupported":
                reason = f"layer {plan.stop_layer} before the locality boundary is not supported"
            elif gain < self.min_gain:
                reason = f"predicted gain {gain:.2f}x is below min_gain={self.min_gain:g}x"
        if reason:
            self.name = "full"
            info["used"] = "full"
            info["reason"] = reason
            log.info("AOPC forward strategy auto -> full: %s", reason)
            self._full = FullForward()
            self._full.prepare(model, batch_size=batch_size, image_shape=image_shape, mask_local=mask_local)
        else:
            self.name = "incremental"
            info["used"] = "incremental"
            info["reason"] = (
                f"predicted gain {gain:.2f}x" if self.mode == "auto" else "requested"
            )
            if self.mode == "incremental" and not mask_local:
                info["note"] = "mask_local=False: changed boxes are taken from the actual pixel differences"
            self._plan = plan
            self._build_fns(keras_model, plan)
        self.info = info

    def _build_fns(self, keras_model: Any, plan: GraphPlan) -> None:
        import tensorflow as tf

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
        self._prefix_fn = tf.function(prefix, input_signature=[tf.TensorSpec((None, h, w, c), tf.float32)])
        specs = [tf.TensorSpec((None, *plan.cached[t]), tf.float32) for t in boundary]
        self._suffix_fn = tf.function(suffix, input_signature=specs)
        self._out_ids = out_ids
        # one graph per prefix layer for its box (shapes vary: traced with free spatial dims)
        self._window_fns = [
            tf.function(_box_fn(op), reduce_retracing=True) for op in ops
        ]

    # -- running
    def forward(self, batch: ForwardBatch) -> np.ndarray:
        if self._full is not None:
            return self._full.forward(batch)
        if self._plan is None:
            raise RuntimeError("IncrementalForward.prepare() must be called before forward()")
        plan = self._plan
        images = np.asarray(batch.images, dtype=np.float32)
        rows = []
        for r in range(len(images)):
            img, step = int(batch.image_index[r]), int(batch.step[r])
            state = self._states.get(img)
            if state is not None and step == state.step + 1:
                self._step(state, images[r])
                state.step = step
                self._states.move_to_end(img)
            else:
                state = self._full_pass(img, step, images[r])
            rows.append([state.acts[t].copy() for t in plan.boundary])
        import tensorflow as tf

        cols = [tf.constant(np.stack([row[j] for row in rows])) for j in range(len(plan.boundary))]
        return np.asarray(self._suffix_fn(*cols), dtype=np.float32)

    def _full_pass(self, img: int, step: int, image: np.ndarray) -> _ImageState:
        import tensorflow as tf

        outs = self._prefix_fn(tf.constant(image[None]))
        acts = {t: np.array(v[0]) for t, v in zip(self._out_ids, outs, strict=True)}
        self._states.pop(img, None)
        while len(self._states) >= self._max_images:
            self._states.popitem(last=False)
        state = _ImageState(step=step, acts=acts)
        self._states[img] = state
        return state

    def _step(self, state: _ImageState, image: np.ndarray) -> None:
        """Update ``state`` in place from its x^(k-1) activations to those of ``image``."""
        import tensorflow as tf

        plan = self._plan
        assert plan is not None
        acts = state.acts
        x_old = acts[plan.input_id]
        diff = np.any(image != x_old, axis=-1)
        ys = np.flatnonzero(diff.any(axis=1))
        if ys.size == 0:
            return
        xs = np.flatnonzero(diff.any(axis=0))
        box: Box = (int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1)
        x_old[box[0] : box[1], box[2] : box[3]] = image[box[0] : box[1], box[2] : box[3]]
        boxes: dict[int, Box | None] = {plan.input_id: box}
        for i, op in enumerate(plan.ops):
            b = _union([boxes.get(t) for t in op.inputs])
            if b is None:
                boxes[op.output] = None
                continue
            ob = out_box(op, b)
            boxes[op.output] = ob
            if ob is None:
                continue
            y0, y1, x0, x1 = ob
            if op.kind == "window":
                src = acts[op.inputs[0]]
                crop = _padded_crop(src, op, ob)
                val = self._window_fns[i](tf.constant(crop[None]))
            else:
                crops = [tf.constant(acts[t][None, y0:y1, x0:x1]) for t in op.inputs]
                val = self._window_fns[i](crops if op.kind == "merge" else crops[0])
            acts[op.output][y0:y1, x0:x1] = np.asarray(val)[0]


def _box_fn(op: _Op) -> Any:
    if op.kind == "window":
        return lambda x: _window_compute(op, x)
    return lambda x: _call(op.layer, x)


def _padded_crop(src: np.ndarray, op: _Op, ob: Box) -> np.ndarray:
    """The (padded) input window that output box ``ob`` of a windowed layer reads."""
    y0, y1, x0, x1 = ob
    a0 = y0 * op.s[0] - op.pad[0]
    a1 = (y1 - 1) * op.s[0] - op.pad[0] + op.k[0]
    b0 = x0 * op.s[1] - op.pad[1]
    b1 = (x1 - 1) * op.s[1] - op.pad[1] + op.k[1]
    h, w = src.shape[:2]
    ca0, ca1, cb0, cb1 = max(a0, 0), min(a1, h), max(b0, 0), min(b1, w)
    if ca0 == a0 and ca1 == a1 and cb0 == b0 and cb1 == b1:
        return src[a0:a1, b0:b1]
    out = np.full((a1 - a0, b1 - b0, src.shape[2]), op.fill, dtype=src.dtype)
    if ca1 > ca0 and cb1 > cb0:
        out[ca0 - a0 : ca1 - a0, cb0 - b0 : cb1 - b0] = src[ca0:ca1, cb0:cb1]
    return out


def _window_compute(op: _Op, x: Any) -> Any:
    """A windowed layer on an explicitly padded crop (``valid`` padding)."""
    import keras

    layer = op.layer
    cls = type(layer).__name__
    if cls == "ZeroPadding2D":
        return x
    if cls == "MaxPooling2D":
        return keras.ops.max_pool(x, op.k, op.s, padding="valid")
    if cls == "AveragePooling2D":
        return keras.ops.average_pool(x, op.k, op.s, padding="valid")
    if cls == "Conv2D":
        y = keras.ops.conv(x, layer.kernel, strides=op.s, padding="valid")
    else:  # DepthwiseConv2D
        y = keras.ops.depthwise_conv(x, layer.kernel, strides=op.s, padding="valid")
    if layer.use_bias:
        y = keras.ops.add(y, keras.ops.reshape(layer.bias, (1, 1, 1, -1)))
    if layer.activation is not None:
        y = layer.activation(y)
    return y


def auto_strategy() -> IncrementalForward:
    """The ``"auto"`` strategy: incremental where the model and perturbation allow a real gain."""
    return IncrementalForward(mode="auto")


def predicted_gain(model: Any, grid: int = 9, *, realistic: bool = True) -> float:
    """The box-count estimate of full / incremental work for ``model`` (a bench or Keras model)."""
    return estimate_gain(analyse_model(getattr(model, "keras", model)), grid, realistic=realistic)


__all__ = [
    "IncrementalForward",
    "GraphPlan",
    "analyse_model",
    "auto_strategy",
    "estimate_gain",
    "predicted_gain",
    "propagate",
    "out_box",
]
