"""Sanity checks (family ``randomisation``): does the explanation depend on the model and the class?

* :class:`ModelRandomisation` (``model-randomisation``): the cascading model-parameter
  randomisation test of Adebayo et al. 2018 ("Sanity Checks for Saliency Maps", NeurIPS),
  by **blocks** of weighted layers, from the top (output) block down;
* :class:`RandomLogit` (``random-logit``): Sixt et al. 2020 ("When Explanations Lie",
  ICML): the explanation of the explained (predicted) class against that of a random
  other class.

Blocks (:func:`layer_blocks`). The weighted layers (layers holding variables; nested Keras
sub-models are walked into, in graph order) are grouped into maximal runs of consecutive
layers of the same *stage*: the part of the layer's name before its first ``_`` or ``/``
when that part holds a digit and the rest is not a bare number (``block3_conv2`` -> ``block3``,
``conv4_block12_1_conv`` -> ``conv4``, ``pool3_conv`` -> ``pool3``, ``conv1/conv`` ->
``conv1``), else the layer's own name (``head_dense``, ``logits``, ``conv2d_1``, ``features``).
That is the named stage of the Keras applications: VGG16 + the study's head is 7 blocks
(block1..block5, head_dense, logits), DenseNet201 + head 11 (conv1, conv2, pool2, conv3,
pool3, conv4, pool4, conv5, bn, head_dense, logits). Where that gives more than
``max_blocks`` blocks (a model whose layers carry no stage names), consecutive blocks are
merged into ``max_blocks`` groups of near-equal size, so a step count stays a handful.

Randomisation. The trained model is never changed: it is cloned once
(``keras.models.clone_model``, its weights copied), and the copy's blocks are re-initialised
cumulatively, top block first: step k has the top k blocks re-initialised. A variable is
re-drawn by its layer's own initializer (``kernel`` by ``kernel_initializer``, ``gamma`` by
``gamma_initializer``, ...; the model as it was before training) seeded by
``derive_seed(seed, variable path)``, or, with no initializer to be found, from a normal
of the trained values' mean and standard deviation.

One clone per model. The 22 explainer cells of a model share its trained model, blocks and
seed, so the clone is memoised (:func:`randomised_copy`, a :class:`bench.engine.memo.ModelMemo`):
per trained Keras model (weakly: the memo never keeps a model alive), its layer structure,
feature layer, blocks and seed, at most :data:`COPY_MEMO_SIZE` clones in the process. Each
cascade copies the trained model's current weights into it again and re-initialises its
blocks from values drawn once, so a cascade gives what a fresh clone gives, to the bit, and
the explainers' traces of the clone (:mod:`bench.engine.tracing`, keyed by the Keras model)
serve every cell of the model.
"""

from __future__ import annotations

import numbers
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.engine.memo import ModelMemo

from .similarity import max_normalised, spearman_rows, ssim_rows


# ---- blocks ----------------------------------------------------------------------------
def stage_of(name: str) -> str:
    """The stage a layer name belongs to (see the module's docstring), or the name itself."""
    for i, ch in enumerate(name):
        if ch in "_/":
            head, rest = name[:i], name[i + 1:]
            if any(c.isdigit() for c in head) and rest and not rest.isdigit():
                return head
            return name
    return name


@dataclass(frozen=True)
class Block:
    """A block of weighted layers: its name and the layers' paths (``sub_model/layer``), in graph order."""

    name: str
    layers: tuple[str, ...]


def weighted_layers(keras_model: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(path, layer) of every layer holding variables, nested sub-models walked into, in graph order."""
    import keras

    out: list[tuple[str, Any]] = []
    for layer in keras_model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            out.extend(weighted_layers(layer, prefix=f"{path}/"))
        elif layer.weights:
            out.append((path, layer))
    return out


def layer_blocks(keras_model: Any, max_blocks: int = 12) -> list[Block]:
    """The blocks of ``keras_model``, input to output (see the module's docstring)."""
    runs: list[tuple[str, list[str]]] = []
    last_key: tuple[str, str] | None = None
    for path, layer in weighted_layers(keras_model):
        parent = path.rpartition("/")[0]
        stage = stage_of(layer.name)
        key = (parent, stage)
        if key != last_key:
            runs.append((f"{parent}/{stage}" if parent else stage, []))
            last_key = key
        runs[-1][1].append(path)
    blocks = [Block(name, tuple(paths)) for name, paths in runs]
    limit = int(max_blocks)
    if limit >= 1 and len(blocks) > limit:
        groups = np.array_split(np.arange(len(blocks)), limit)
        blocks = [
            Block(
                blocks[g[0]].name if len(g) == 1 else f"{blocks[g[0]].name}..{blocks[g[-1]].name}",
                tuple(p for j in g for p in blocks[j].layers),
            )
            for g in groups
        ]
    return blocks


# ---- randomised copies -------------------------------------------------------------------
def _layer_at(keras_model: Any, path: str) -> Any:
    layer = keras_model
    for part in path.split("/"):
        layer = layer.get_layer(part)
    return layer


def _initializer_for(layer: Any, variable_name: str) -> Any:
    base = variable_name.rpartition("/")[2].partition(":")[0]
    candidates = [f"{base}_initializer"]
    if base.endswith("_kernel"):
        candidates.append(f"{base[: -len('_kernel')]}_initializer")
    if base == "recurrent_kernel":
        candidates.append("recurrent_initializer")
    for attr in candidates:
        init = getattr(layer, attr, None)
        if init is not None and callable(init):
            return init
    return None


def _seeded(init: Any, seed: int) -> Any:
    import keras

    init = keras.initializers.get(init)
    try:
        config = init.get_config()
    except (AttributeError, NotImplementedError):
        return init
    if "seed" in config:
        config = {**config, "seed": int(seed)}
        return type(init).from_config(config)
    return init


def variable_seed(seed: int, path: str, variable: Any) -> int:
    """The seed of ``variable`` of the layer at ``path``: ``derive_seed(seed, variable path)``."""
    from bench.engine.regions import derive_seed

    return derive_seed(seed, f"{path}/{variable.name}", "model-randomisation") % (2**31 - 1)


def drawn_value(layer: Any, variable: Any, path: str, seed: int) -> np.ndarray | None:
    """The value its layer's initializer re-draws for ``variable`` (seeded: the same every time),
    or None when the layer has no initializer for it (then :func:`fallback_value`)."""
    init = _initializer_for(layer, variable.name)
    if init is None:
        return None
    shape = tuple(int(d) for d in variable.shape)
    value = np.asarray(_seeded(init, variable_seed(seed, path, variable))(shape=shape, dtype=variable.dtype))
    return value.astype(np.dtype(variable.dtype))


def fallback_value(variable: Any, path: str, seed: int) -> np.ndarray:
    """A normal of ``variable``'s current (trained) values' mean and standard deviation, seeded."""
    trained = np.asarray(variable.numpy(), dtype=np.float64)
    rng = np.random.default_rng(variable_seed(seed, path, variable))
    value = rng.normal(trained.mean(), trained.std() or 1.0, size=tuple(int(d) for d in variable.shape))
    return value.astype(np.dtype(variable.dtype))


def randomise_layer(layer: Any, path: str, seed: int) -> None:
    """Re-draw every variable of ``layer`` (see the module's docstring); deterministic given ``seed``."""
    for variable in layer.weights:
        value = drawn_value(layer, variable, path, seed)
        variable.assign(fallback_value(variable, path, seed) if value is None else value)


def clone_model(model: Any) -> Any:
    """A bench model around a copy of ``model``'s Keras graph and weights (the original untouched)."""
    import keras

    from bench.models import KerasModel

    source = model.keras
    try:
        copy = keras.models.clone_model(source)
    except Exception as exc:  # noqa: BLE001 - re-raised with the way forward
        raise ValueError(
            f"model {getattr(model, 'name', type(model).__name__)!r} cannot be cloned for the randomisation "
            f"test (keras.models.clone_model failed: {exc}); the test needs a functional or sequential model"
        ) from exc
    copy.set_weights(source.get_weights())
    return KerasModel(copy, feature_layer=model.feature_layer, name=f"{getattr(model, 'name', 'model')}-randomised")


class RandomisedCopy:
    """One clone of a trained model, randomised block by block, reusable by every cascade of it.

    It holds the clone (a bench model, so the explainers' traces of its Keras model and the
    wrapper's graphs are made once), its weighted layers by path, and the values each
    layer's initializer re-draws (drawn once, at the first use of the block: they depend only
    on the seed and the variable's path). :meth:`reset` copies the trained model's current
    weights in, :meth:`randomise` re-initialises one block; a value drawn from the trained
    values' statistics (no initializer) is drawn again at every use. ``lock`` is held by the
    cascade in progress.
    """

    def __init__(self, model: Any, seed: int):
        self.copy = clone_model(model)
        self.seed = int(seed)
        self.lock = threading.Lock()
        self._layers: dict[str, Any] = {}
        self._drawn: dict[str, list[np.ndarray | None]] = {}

    def fits(self, source: Any) -> bool:
        """Whether the copy's variables still match ``source``'s (a Keras model) one for one, by shape."""
        mine, theirs = self.copy.keras.weights, source.weights
        return len(mine) == len(theirs) and all(
            tuple(a.shape) == tuple(b.shape) for a, b in zip(mine, theirs, strict=True)
        )

    def reset(self, source: Any) -> None:
        """Every variable of the copy set to ``source``'s current value (nothing randomised)."""
        for mine, theirs in zip(self.copy.keras.weights, source.weights, strict=True):
            mine.assign(theirs)

    def layer(self, path: str) -> Any:
        """The copy's layer at ``path`` (looked up once)."""
        if path not in self._layers:
            self._layers[path] = _layer_at(self.copy.keras, path)
        return self._layers[path]

    def randomise(self, block: Block) -> None:
        """Re-initialise the copy's layers of ``block`` (see :func:`randomise_layer`, which this equals)."""
        for path in block.layers:
            layer = self.layer(path)
            drawn = self._drawn.get(path)
            if drawn is None:
                drawn = self._drawn[path] = [drawn_value(layer, v, path, self.seed) for v in layer.weights]
            for variable, value in zip(layer.weights, drawn, strict=True):
                variable.assign(fallback_value(variable, path, self.seed) if value is None else value)


#: The most randomised copies kept in the process (each about two models' worth of weights).
COPY_MEMO_SIZE = 2

#: trained Keras model (weakly) -> {(structure, feature layer, name, blocks, seed): copy}, at most
#: COPY_MEMO_SIZE copies over every model, the least recently used dropped first
_COPIES: ModelMemo[RandomisedCopy] = ModelMemo(total=COPY_MEMO_SIZE)


def _copy_key(model: Any, blocks: list[Block], seed: int) -> tuple[Any, ...]:
    from bench.engine.tracing import structure

    return (structure(model.keras), str(model.feature_layer), getattr(model, "name", None), tuple(blocks), int(seed))


def randomised_copy(model: Any, blocks: list[Block], seed: int) -> tuple[RandomisedCopy, bool]:
    """(the randomised copy of ``model`` for ``blocks`` and ``seed``, whether it is the memoised one).

    Memoised per trained Keras model (weakly: the memo never keeps a model alive), its layer
    structure, feature layer, name, blocks and seed, at most :data:`COPY_MEMO_SIZE` copies
    in all (:class:`bench.engine.memo.ModelMemo`). The memoised copy is returned with its
    ``lock`` held by the caller; where it is in use (another cascade of it in progress) or the
    model cannot be weakly referenced, a fresh copy that nobody else sees is returned instead
    (correct, not memoised).
    """
    keras_model = model.keras
    key = _copy_key(model, blocks, seed)
    entry = _COPIES.get(keras_model, key, valid=lambda copy: copy.fits(keras_model))
    if entry is not None:
        if entry.lock.acquire(blocking=False):
            return entry, True
        return RandomisedCopy(model, seed), False
    entry = RandomisedCopy(model, seed)  # cloned outside the memo's lock (seconds for a large model)
    entry.lock.acquire()
    if not _COPIES.put(keras_model, key, entry):  # not weakly referenceable: correct, just not memoised
        entry.lock.release()
        return entry, False
    return entry, True


def clear_copies() -> None:
    """Forget every memoised randomised copy (the next cascade clones afresh)."""
    _COPIES.clear()


def memoised_copies(model: Any) -> list[Any]:
    """The bench models of ``model``'s memoised randomised copies (for tests and tools)."""
    return [entry.copy for entry in _COPIES.entries(model.keras).values()]


def cascade(model: Any, blocks: list[Block], seed: int) -> Iterator[tuple[Block, Any]]:
    """(block, copy) for k = 1..K: the copy with the top k blocks re-initialised (one copy, in place).

    The copy is the memoised one of :func:`randomised_copy` (cloned once per trained model,
    blocks and seed; the trained weights copied in again at every cascade), so the
    explainers' traces of it serve every cell of the model. It holds step k's weights until
    the cascade moves on; the trained model is never changed.
    """
    entry, memoised = randomised_copy(model, blocks, seed)
    try:
        if memoised:
            entry.reset(model.keras)
        for block in reversed(blocks):
            entry.randomise(block)
            yield block, entry.copy
    finally:
        if memoised:
            entry.lock.release()


# ---- the metrics ---------------------------------------------------------------------------
def _check_int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def explainer_masks(explainer: Any) -> tuple[str, ...]:
    """The dataset masks the registered spec of ``explainer``'s class declares (``()``: none or unregistered).

    A factory that is a ``functools.partial`` of the class (one class registered under several
    names) matches too; where several specs build the class, the masks of any of them count.
    """
    import functools

    import bench

    cls = type(explainer)
    reference = f"{cls.__module__}:{cls.__qualname__}"
    found: list[str] = []
    for entry in bench.registry()["explainer"].values():
        factory = entry.spec.factory
        while isinstance(factory, functools.partial):
            factory = factory.func
        if factory is cls or (isinstance(factory, str) and factory == reference):
            found.extend(getattr(entry.spec, "masks", ()) or ())
    return tuple(dict.fromkeys(found))


def explain_images(data: Any, model: Any, images: Any, targets: Any, ids: Any, batch_size: int,
                   rows: Any = None) -> np.ndarray:
    """The cell's explainer (``data.explainer``) on ``model``, in batches, through the harness's explain loop.

    ``rows``: the row of ``data`` each image belongs to (default: image i is row i). An
    explainer that reads dataset masks (an oracle control) gets the masks the harness gave
    the metric for it (``data.explainer_masks``, the same as for the cell's heatmaps), of
    those rows; where they are missing (the metric was given no masks for an explainer whose
    spec declares some) a ValueError says so (the metric fails in that cell only).
    """
    import bench

    explainer = data.explainer
    given = dict(data.explainer_masks)
    declared = explainer_masks(explainer)
    missing = [m for m in declared if m not in given]
    if missing:
        raise ValueError(
            f"{data.name} re-runs the cell's explainer, which reads the dataset mask(s) "
            f"{', '.join(map(repr, missing))}; the metric was not given them (data.explainer_masks), "
            "so it cannot be scored here"
        )
    masks = None
    if given:
        picked = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(picked) != len(images):
            raise ValueError(f"{data.name}: {len(picked)} rows for {len(images)} images")
        names = declared or tuple(given)
        masks = {m: np.asarray(given[m])[picked] for m in names}
    return bench.compute_heatmaps(
        explainer, model, images, targets, ids=np.asarray(ids), batch_size=int(batch_size), masks=masks,
        name=f"{data.name}: explainer",
    )


def heatmap_passes(explainer: Any, maps: int) -> float | None:
    """Forward-pass equivalents of ``maps`` heatmaps of ``explainer`` (its ``passes_per_map()``,
    asked after the maps were computed), None when it does not say."""
    method = getattr(explainer, "passes_per_map", None)
    per_map = method() if callable(method) else None
    if per_map is None:
        return None
    value = float(per_map)
    return value * int(maps) if np.isfinite(value) and value >= 0 else None


def _explain(data: Any, model: Any, targets: np.ndarray, batch_size: int) -> np.ndarray:
    return explain_images(data, model, data.images, targets, data.ids, batch_size)


class ModelRandomisation:
    """Cascading model-parameter randomisation (Adebayo et al. 2018), by blocks; lower is better.

    ``compute(data)`` returns ``model-randomisation`` (N,), the mean over the K steps of the
    Spearman rank correlation between |heatmap| on the trained model and on the randomised
    copy (1 = the explanation ignores the model), and the per-step columns ``spearman`` and
    ``ssim`` (N, K) (step k = the top k blocks randomised; SSIM on |h| / max |h|), ``last``
    (N,) the Spearman with every block randomised, ``layers`` (N, K) the number of weighted
    layers randomised at each step and ``heatmaps`` (N,) the maps computed per image (K + 1).

    Parameters
    ----------
    seed:
        Seeds the re-initialisation (default 0).
    max_blocks:
        The most randomisation steps (default 12; see :func:`layer_blocks`).
    batch_size:
        Images per explainer call (default 32).
    """

    def __init__(self, *, seed: int = 0, max_blocks: int = 12, batch_size: int = 32):
        self.seed = seed
        self.max_blocks = max_blocks
        self.batch_size = batch_size

    def get_params(self) -> dict[str, Any]:
        return {"seed": self.seed, "max_blocks": self.max_blocks, "batch_size": self.batch_size}

    def validate(self) -> None:
        _check_int(self.seed, "seed", 0)
        _check_int(self.max_blocks, "max_blocks", 1)
        _check_int(self.batch_size, "batch_size", 1)

    def blocks(self, model: Any) -> list[Block]:
        """The blocks of ``model`` (a bench model), input to output."""
        return layer_blocks(model.keras, self.max_blocks)

    def compute(self, data: Any) -> dict[str, np.ndarray]:
        self.validate()
        model = data.model
        targets = np.asarray(data.targets)
        n = len(data)
        blocks = self.blocks(model)
        if not blocks:
            raise ValueError(f"model {getattr(model, 'name', '?')!r} has no weighted layer to randomise")
        reference = _explain(data, model, targets, self.batch_size)
        ref_abs = np.abs(reference)
        ref_norm = max_normalised(reference)
        spearman = np.empty((n, len(blocks)))
        ssim = np.empty((n, len(blocks)))
        layers = np.empty((n, len(blocks)))
        done = 0
        for k, (block, copy) in enumerate(cascade(model, blocks, int(self.seed))):
            maps = _explain(data, copy, targets, self.batch_size)
            if maps.shape != reference.shape:
                raise ValueError(
                    f"the explainer's maps on the randomised model (block {block.name!r}) are {maps.shape[1:]}, "
                    f"on the trained one {reference.shape[1:]}"
                )
            spearman[:, k] = spearman_rows(ref_abs, np.abs(maps))
            ssim[:, k] = ssim_rows(ref_norm, max_normalised(maps))
            done += len(block.layers)
            layers[:, k] = done
        self._passes = heatmap_passes(data.explainer, n * (len(blocks) + 1))
        return {
            "model-randomisation": spearman.mean(axis=1),
            "spearman": spearman,
            "ssim": ssim,
            "last": spearman[:, -1],
            "layers": layers,
            "heatmaps": np.full(n, len(blocks) + 1.0),
        }

    def forward_passes(self) -> float | None:
        """What the last ``compute`` cost: (K+1) heatmaps per image at the explainer's passes per map."""
        return self.__dict__.get("_passes")

    def planned_passes(self, *, n_images: int, passes_per_map: float | None) -> float | None:
        """Before a run (``bench run --dry-run``): at most ``max_blocks + 1`` heatmaps per image (the
        model's block count is known once it is built), None when the explainer's cost is unknown."""
        return None if passes_per_map is None else float(n_images * (int(self.max_blocks) + 1) * passes_per_map)


class RandomLogit:
    """The random-logit test (Sixt et al. 2020): explained class vs a random other class; lower is better.

    ``compute(data)`` returns ``random-logit`` (N,), the SSIM (as Sixt et al.) between
    |h| / max |h| of the explanation of the explained class and of a random other class,
    drawn per image from ``derive_seed(seed, id, "random-logit")``; ``spearman`` (N,) the
    Spearman rank correlation of the two |maps|; ``other-class`` (N,) the class drawn;
    ``heatmaps`` (N,) the maps computed per image (2). 1 = the explanation ignores the class.

    Parameters
    ----------
    seed:
        Seeds the choice of the other class (default 0).
    batch_size:
        Images per explainer call (default 32).
    """

    def __init__(self, *, seed: int = 0, batch_size: int = 32):
        self.seed = seed
        self.batch_size = batch_size

    def get_params(self) -> dict[str, Any]:
        return {"seed": self.seed, "batch_size": self.batch_size}

    def validate(self) -> None:
        _check_int(self.seed, "seed", 0)
        _check_int(self.batch_size, "batch_size", 1)

    def other_classes(self, ids: Any, targets: Any, num_classes: int) -> np.ndarray:
        """int64 (N,): a class other than the target, uniform over the others, seeded by id."""
        from bench.engine.regions import derive_seed

        t = np.asarray(targets, dtype=np.int64)
        if num_classes < 2:
            raise ValueError(f"the random-logit test needs at least 2 classes, the model has {num_classes}")
        draws = np.array(
            [np.random.default_rng(derive_seed(int(self.seed), i, "random-logit")).integers(num_classes - 1)
             for i in np.asarray(ids)],
            dtype=np.int64,
        ).reshape(-1)
        return draws + (draws >= t)

    def compute(self, data: Any) -> dict[str, np.ndarray]:
        self.validate()
        model = data.model
        targets = np.asarray(data.targets, dtype=np.int64)
        others = self.other_classes(data.ids, targets, int(model.num_classes))
        n = len(data)
        both = explain_images(  # one stream of batches over both classes of every image
            data, model, np.concatenate([data.images, data.images]), np.concatenate([targets, others]),
            np.concatenate([np.asarray(data.ids)] * 2), self.batch_size, rows=np.tile(np.arange(n), 2),
        )
        explained, other = both[:n], both[n:]
        self._passes = heatmap_passes(data.explainer, 2 * n)
        return {
            "random-logit": ssim_rows(max_normalised(explained), max_normalised(other)),
            "spearman": spearman_rows(np.abs(explained), np.abs(other)),
            "other-class": others.astype(np.float64),
            "heatmaps": np.full(len(data), 2.0),
        }

    def forward_passes(self) -> float | None:
        """What the last ``compute`` cost: 2 heatmaps per image at the explainer's passes per map."""
        return self.__dict__.get("_passes")

    def planned_passes(self, *, n_images: int, passes_per_map: float | None) -> float | None:
        """Before a run: two heatmaps per image (the explained class and another one)."""
        return None if passes_per_map is None else float(2 * n_images * passes_per_map)
