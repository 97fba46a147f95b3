"""The harness's trainer (not per plugin): the study's recipe, fast.

Adam, categorical cross-entropy, ``epochs`` epochs, batch size ``batch_size``;
after every epoch the validation split is scored and the epoch chosen by the
selection rule (default ``disease_recall``: best macro recall over the classes the
dataset declares positive, ``DatasetSplits.positive_classes``, ties ->
earlier epoch) has its weights restored.

A model with ``frozen_backbone = True`` (the transfer models) exposes
``feature_extractor`` (images -> the frozen part's output: the pooled backbone
features, or the input of the first trained backbone layer) and ``head`` (those
features -> probabilities: the trained part, sharing weights with ``keras``): the
frozen part then runs ONCE per image. Features of train/val/test are computed in
batches, cached on disk under a content key (frozen weights hash, where the frozen
part ends, input size, split contents), and the head is trained on them. Any other model trains end to end on images, batches
built with :func:`bench.data.to_model_input` (never the whole set as float32).

With ``cache`` and ``key`` the trained model is stored as ``models/<key>.keras``
plus ``models/<key>.json`` (the report); a later call with the same key and the
same fingerprint (config, model params, data) loads the weights instead of
training. Loading reads only weights from the ``.keras`` archive (no code runs);
use :meth:`bench.models.KerasModel.from_file` (``safe_mode=True``) to load the
stored file as a standalone model. In features mode the trained part's weights are
also stored alone (``models/<key>-trained.npz``) with a hash of the frozen part's
weights: a hit whose frozen part hashes the same (a seeded random backbone rebuilt, the
same ImageNet file) sets just those (loading DenseNet201's whole ``.keras`` file took
about 10 s on 2 cores).
"""

from __future__ import annotations

import hashlib
import numbers
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bench.data import DatasetSplits, Split, to_model_input
from bench.errors import BenchError, ConfigError, did_you_mean
from bench.pipeline.keys import bench_version, code_digest
from bench.pipeline.store import STAGE_FILES, Cache, content_key

#: The model stage's cache folder and its files, the report (JSON, :meth:`Cache.put_json`) and the
#: ``.keras`` archive, as :data:`bench.pipeline.store.STAGE_FILES` lists them (the cache probe reads
#: the same table). The frozen-part weights lie beside them (``<key>-trained.npz``).
_MODEL_FOLDER, (_REPORT_SUFFIX, _ARCHIVE_SUFFIX) = STAGE_FILES["model"]

SELECTION_RULES: tuple[str, ...] = (
    "disease_recall",
    "macro_recall",
    "val_accuracy",
    "val_loss",
    "last",
)

#: Bump when the stored feature/model layout changes.
TRAINER_VERSION = "1"


class TrainingError(BenchError):
    """Training cannot run (bad data, empty split) or a cached model does not fit."""


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    """The training recipe; every field is recorded with the result.

    ``reinitialize``: re-draw the trainable weights from ``seed`` before training, so
    the same config gives the same weights whatever happened to the model before.
    """

    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    selection: str = "disease_recall"
    feature_batch_size: int = 32
    reinitialize: bool = True

    def __post_init__(self) -> None:
        if self.selection not in SELECTION_RULES:
            raise ConfigError(
                f"training.selection {self.selection!r} is unknown"
                f"{did_you_mean(self.selection, SELECTION_RULES)}; "
                f"choose one of {', '.join(SELECTION_RULES)}"
            )
        for name in ("epochs", "batch_size", "feature_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"training.{name} must be a positive integer, got {value!r}")
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (0 < lr < float("inf")):
            raise ConfigError(f"training.learning_rate must be a finite number > 0, got {lr!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"run.seed must be an integer in [0, {2**32 - 1}], got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingReport:
    """What happened: per-epoch history, the selected epoch, timings, provenance."""

    history: list[dict[str, Any]]
    best_epoch: int
    selection: str
    seconds: float
    features_seconds: float
    from_cache: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    #: the classes ``disease_recall`` averaged over (the dataset's positive classes, else all)
    positive_classes: list[str] = field(default_factory=list)
    mode: str = "images"  # "features" (frozen backbone) or "images"
    fingerprint: str = ""
    model_file: str | None = None
    #: hash of the frozen part's weights (features mode): a cache hit whose frozen part hashes
    #: the same loads only the trained part's weights (fast), not the whole ``.keras`` file
    frozen_digest: str = ""
    #: probabilities of the test split from the cached features (not serialised)
    test_probabilities: np.ndarray | None = field(default=None, repr=False)

    @property
    def best(self) -> dict[str, Any]:
        return self.history[self.best_epoch - 1] if self.history else {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best": self.best,
            "selection": self.selection,
            "seconds": self.seconds,
            "features_seconds": self.features_seconds,
            "from_cache": self.from_cache,
            "config": self.config,
            "class_names": self.class_names,
            "positive_classes": self.positive_classes,
            "mode": self.mode,
            "fingerprint": self.fingerprint,
            "model_file": self.model_file,
            "frozen_digest": self.frozen_digest,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainingReport:
        return cls(
            history=list(d["history"]),
            best_epoch=int(d["best_epoch"]),
            selection=d["selection"],
            seconds=float(d["seconds"]),
            features_seconds=float(d.get("features_seconds", 0.0)),
            from_cache=bool(d.get("from_cache", False)),
            config=dict(d.get("config", {})),
            class_names=list(d.get("class_names", [])),
            positive_classes=list(d.get("positive_classes", d.get("disease_classes", []))),
            mode=d.get("mode", "images"),
            fingerprint=d.get("fingerprint", ""),
            model_file=d.get("model_file"),
            frozen_digest=d.get("frozen_digest", ""),
        )


# ---- model selection ---------------------------------------------------------------
def select_epoch(history: list[dict[str, Any]], rule: str) -> int:
    """The 1-based epoch the rule keeps; ties -> the earlier epoch.

    ``disease_recall``/``macro_recall``/``val_accuracy``: highest; ``val_loss``:
    lowest; ``last``: the last epoch. NaN values never win.
    """
    if not history:
        raise TrainingError("cannot select an epoch from an empty history")
    if rule not in SELECTION_RULES:
        raise ConfigError(f"unknown selection rule {rule!r}{did_you_mean(rule, SELECTION_RULES)}")
    if rule == "last":
        return len(history)
    sign = -1.0 if rule == "val_loss" else 1.0
    best_i, best_v = 0, -np.inf
    for i, h in enumerate(history):
        v = h.get(rule)
        if v is None or not np.isfinite(v):
            continue
        v = sign * float(v)
        if v > best_v:  # strict: ties keep the earlier epoch
            best_i, best_v = i, v
    return best_i + 1


def epoch_metrics(
    probs: np.ndarray, labels: np.ndarray, class_names: list[str], positive_idx: list[int]
) -> dict[str, Any]:
    """val_loss, val_accuracy, per-class val recall, macro recall over ``positive_idx``
    (``disease_recall``) and over all classes (``macro_recall``) from probabilities."""
    n_classes = len(class_names)
    labels = np.asarray(labels, dtype=np.int64)
    p = np.clip(probs[np.arange(len(labels)), labels].astype(np.float64), 1e-7, 1.0)
    pred = probs.argmax(axis=1)
    recall: dict[str, float] = {}
    for i, c in enumerate(class_names):
        sel = labels == i
        recall[c] = float(np.mean(pred[sel] == i)) if sel.any() else float("nan")
    present = [recall[class_names[i]] for i in range(n_classes) if np.isfinite(recall[class_names[i]])]
    positive = [recall[class_names[i]] for i in positive_idx if np.isfinite(recall[class_names[i]])]
    return {
        "val_loss": float(-np.mean(np.log(p))) if len(labels) else float("nan"),
        "val_accuracy": float(np.mean(pred == labels)) if len(labels) else float("nan"),
        "val_recall": recall,
        "disease_recall": float(np.mean(positive)) if positive else float("nan"),
        "macro_recall": float(np.mean(present)) if present else float("nan"),
    }


# ---- helpers -----------------------------------------------------------------------
def _progress(iterable: Any, *, enabled: bool, desc: str, total: int | None = None) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


def _split_digest(split: Split) -> str:
    h = hashlib.sha256()
    h.update(str(split.images.shape).encode())
    h.update(np.ascontiguousarray(split.images).tobytes())
    h.update(np.asarray(split.labels, dtype=np.int64).tobytes())
    h.update("\0".join(map(str, split.ids)).encode())
    return h.hexdigest()[:20]


def weights_digest(variables: list[Any]) -> str:
    """A hash of variables' values (identifies a backbone whatever its weights' source)."""
    h = hashlib.sha256()
    for v in variables:
        a = np.asarray(v)
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:20]


def _one_hot(labels: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((len(labels), n), np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def _reinitialize(layers: list[Any], seed: int) -> None:
    """Re-draw each layer's kernel/bias from its initialisers, seeded from ``seed``
    (batch normalisation: back to its constant initial values).

    Keras draws an unseeded initialiser's seed when the layer is created, so the
    initialisers are rebuilt with explicit seeds (layer order, attribute): the same
    seed gives the same weights whenever and however the model was built.
    """
    counter = 0
    for layer in layers:
        # batch normalisation (a trained head's, a trained upper block's): its scale, offset and
        # moving statistics back to their (constant) initial values
        for attr, init_attr in (("gamma", "gamma_initializer"), ("beta", "beta_initializer"),
                                ("moving_mean", "moving_mean_initializer"),
                                ("moving_variance", "moving_variance_initializer")):
            var = getattr(layer, attr, None)
            init = getattr(layer, init_attr, None)
            if var is not None and init is not None and hasattr(var, "assign"):
                var.assign(init(tuple(var.shape), dtype=var.dtype))
        for attr, init_attr in (("kernel", "kernel_initializer"), ("bias", "bias_initializer"),
                                ("depthwise_kernel", "depthwise_initializer")):
            var = getattr(layer, attr, None)
            init = getattr(layer, init_attr, None)
            if var is None or init is None or not getattr(var, "trainable", True):
                continue
            counter += 1
            config = init.get_config()
            if "seed" in config:
                config["seed"] = int((seed * 1_000_003 + counter) % (2**31 - 1))
                init = type(init).from_config(config)
            var.assign(init(tuple(var.shape), dtype=var.dtype))


def extract_features(
    feature_extractor: Any, split: Split, *, batch_size: int = 32, progress: bool = False,
    desc: str = "features",
) -> np.ndarray:
    """Run the frozen backbone once over a split, in batches (``predict_on_batch``: compiled)."""
    out = []
    batches = range(0, len(split), batch_size)
    for start in _progress(batches, enabled=progress, desc=desc, total=len(batches)):
        x = to_model_input(split.images[start : start + batch_size])
        out.append(np.asarray(feature_extractor.predict_on_batch(x)))
    if not out:
        shape = tuple(int(d) for d in feature_extractor.outputs[0].shape[1:])
        return np.zeros((0, *shape), np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def _predict(target: Any, n: int, get_batch: Callable[[slice], np.ndarray],
             batch_size: int) -> np.ndarray:
    out = []
    for start in range(0, n, batch_size):
        out.append(np.asarray(target.predict_on_batch(get_batch(slice(start, min(start + batch_size, n))))))
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


# ---- training ----------------------------------------------------------------------
def _fingerprint(model: Any, splits: DatasetSplits, config: TrainingConfig) -> str:
    params = model.get_params() if hasattr(model, "get_params") else {}
    winfo = model.weights_info() if hasattr(model, "weights_info") else {}
    return content_key(
        "train", TRAINER_VERSION, type(model).__name__, params, winfo.get("md5"),
        splits.fingerprint, list(splits.class_names), list(splits.positive_classes),
        config.to_dict(),
    )


def _load_cached(model: Any, cache: Cache, key: str, fingerprint: str) -> TrainingReport | None:
    stored = cache.get_json(_MODEL_FOLDER, key)
    model_path = cache.root / _MODEL_FOLDER / f"{key}{_ARCHIVE_SUFFIX}"
    if stored is None or not cache.check_zip(model_path):
        return None  # missing, or damaged (then set aside): retrain
    if stored.get("fingerprint") != fingerprint:
        return None  # same key, different inputs: retrain (and overwrite)
    report = TrainingReport.from_dict(stored)
    report.from_cache = True
    report.model_file = str(model_path)
    if _load_trained_part(model, cache, key, report.frozen_digest):
        return report
    try:
        model.keras.load_weights(str(model_path))
    except Exception as exc:  # noqa: BLE001
        raise TrainingError(
            f"cached trained model {model_path} does not fit model "
            f"{getattr(model, 'name', type(model).__name__)!r}: {exc}. Delete it to retrain."
        ) from exc
    return report


def _trained_part_key(key: str) -> str:
    return f"{key}-trained"


def _load_trained_part(model: Any, cache: Cache, key: str, frozen_digest: str) -> bool:
    """Features mode: set the head's weights from ``models/<key>-trained.npz`` when the frozen
    part's weights hash to ``frozen_digest`` (the same frozen part, rebuilt or reloaded);
    False (load the whole ``.keras`` file instead) otherwise."""
    if not frozen_digest or not getattr(model, "frozen_backbone", False):
        return False
    arrays = cache.get_npz(_MODEL_FOLDER, _trained_part_key(key))
    if arrays is None or weights_digest(model.feature_extractor.weights) != frozen_digest:
        return False
    head = model.head
    values = [arrays[name] for name in sorted(arrays)]
    current = head.get_weights()
    if len(values) != len(current) or any(a.shape != b.shape for a, b in zip(values, current, strict=True)):
        return False
    head.set_weights(values)
    return True


def train(
    model: Any,
    splits: DatasetSplits,
    config: TrainingConfig | None = None,
    *,
    cache: Cache | None = None,
    key: str | None = None,
    progress: bool = True,
) -> TrainingReport:
    """Train ``model`` in place with ``config``; return the report (see module doc)."""
    import keras

    config = config or TrainingConfig()
    if len(splits.train) == 0:
        raise TrainingError(f"dataset {splits.name!r} has an empty train split")
    if len(splits.val) == 0:
        raise TrainingError(
            f"dataset {splits.name!r} has an empty val split; model selection needs one"
        )
    if getattr(model, "num_classes", splits.num_classes) != splits.num_classes:
        raise TrainingError(
            f"model has {model.num_classes} classes, dataset {splits.name!r} has "
            f"{splits.num_classes} ({', '.join(splits.class_names)})"
        )
    kmodel = model.keras  # build (and load weights) before fingerprinting
    fingerprint = _fingerprint(model, splits, config)
    if cache is not None and key:
        hit = _load_cached(model, cache, key, fingerprint)
        if hit is not None:
            return hit

    t0 = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    class_names = list(splits.class_names)
    positive_idx = list(splits.positive_class_indices) or list(range(splits.num_classes))
    frozen = bool(getattr(model, "frozen_backbone", False))
    frozen_digest = ""
    features_seconds = 0.0
    test_probs = None

    if frozen:
        tf0 = time.perf_counter()
        feats, frozen_digest = _features_for(model, splits, config, cache=cache, progress=progress)
        features_seconds = time.perf_counter() - tf0
        target = model.head
        train_x = lambda sl: feats["train"][sl]  # noqa: E731
        val_x = lambda sl: feats["val"][sl]  # noqa: E731
    else:
        target = kmodel
        train_x = lambda sl: to_model_input(splits.train.images[sl])  # noqa: E731
        val_x = lambda sl: to_model_input(splits.val.images[sl])  # noqa: E731

    if config.reinitialize:
        _reinitialize(
            [layer for layer in target.layers if layer.trainable and layer.weights], config.seed
        )

    history, best_epoch = _fit(
        target, splits, config, train_x, val_x, class_names, positive_idx, progress=progress
    )
    if frozen and len(splits.test):
        test_probs = _predict(target, len(splits.test), lambda sl: feats["test"][sl], 256)

    report = TrainingReport(
        history=history,
        best_epoch=best_epoch,
        selection=config.selection,
        seconds=time.perf_counter() - t0,
        features_seconds=features_seconds,
        config=config.to_dict(),
        class_names=class_names,
        positive_classes=[class_names[i] for i in positive_idx],
        mode="features" if frozen else "images",
        fingerprint=fingerprint,
        test_probabilities=test_probs,
        frozen_digest=frozen_digest,
    )
    if cache is not None and key:
        model_path = cache.path(_MODEL_FOLDER, key, _ARCHIVE_SUFFIX)
        _save_keras(kmodel, model_path)
        report.model_file = str(model_path)
        if frozen:
            weights = target.get_weights()
            cache.put_npz(_MODEL_FOLDER, _trained_part_key(key),
                          **{f"w{i:05d}": np.asarray(w) for i, w in enumerate(weights)})
        cache.put_json(_MODEL_FOLDER, key, report.to_dict())
    return report


def _save_keras(kmodel: Any, path: Any) -> None:
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=_ARCHIVE_SUFFIX)
    os.close(fd)
    try:
        kmodel.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _features_for(
    model: Any, splits: DatasetSplits, config: TrainingConfig, *, cache: Cache | None,
    progress: bool,
) -> tuple[dict[str, np.ndarray], str]:
    """Pooled backbone features per split, from the cache or computed once, and the hash of
    the frozen part's weights.

    The content key is what the features depend on: bench's version, the extractor's
    class and the code digest of its plugin, input size, pooling, where the extractor
    ends (its last layer and output shape: the pooled backbone output, or the input of
    the first trained layer) and a hash of its weights, and each split's contents; not
    the training config, so every recipe on the same backbone and data shares them.
    """
    extractor = model.feature_extractor
    frozen_digest = weights_digest(extractor.weights)
    backbone_id = content_key(
        "features", TRAINER_VERSION, bench_version(), type(model).__name__, code_digest(type(model)),
        list(getattr(model, "input_shape", ())), getattr(model, "pool_size", None),
        extractor.layers[-1].name, [int(d) for d in extractor.outputs[0].shape[1:]],
        frozen_digest,
    )
    out: dict[str, np.ndarray] = {}
    for split_name, split in splits.splits().items():
        fkey = content_key(backbone_id, split_name, _split_digest(split))
        if cache is not None:
            stored = cache.get_npz("features", fkey, required=("features",))
            if stored is not None and stored["features"].shape[0] == len(split):
                out[split_name] = stored["features"]
                continue
        feats = extract_features(
            extractor, split, batch_size=config.feature_batch_size, progress=progress,
            desc=f"{split_name} features",
        )
        if cache is not None:
            cache.put_npz("features", fkey, features=feats, labels=np.asarray(split.labels))
        out[split_name] = feats
    return out, frozen_digest


def _iter_batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    perm = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield perm[start : start + batch_size]


def _fit(
    target: Any, splits: DatasetSplits, config: TrainingConfig,
    train_x: Callable[[Any], np.ndarray], val_x: Callable[[Any], np.ndarray],
    class_names: list[str], positive_idx: list[int], *, progress: bool,
) -> tuple[list[dict[str, Any]], int]:
    import keras

    n_classes = len(class_names)
    target.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    y_train = _one_hot(np.asarray(splits.train.labels, dtype=np.int64), n_classes)
    rng = np.random.default_rng(config.seed)
    history: list[dict[str, Any]] = []
    snapshots: list[list[np.ndarray]] = []
    best_so_far = 0
    epochs = _progress(range(config.epochs), enabled=progress, desc="training", total=config.epochs)
    n = len(splits.train)
    for epoch in epochs:
        t_ep = time.perf_counter()
        losses, accs, counts = [], [], []
        for idx in _iter_batches(n, config.batch_size, rng):
            x = train_x(idx)
            logs = target.train_on_batch(x, y_train[idx], return_dict=True)
            losses.append(float(logs["loss"]))
            accs.append(float(logs.get("accuracy", logs.get("compile_metrics", np.nan))))
            counts.append(len(idx))
            target.reset_metrics()
        w = np.asarray(counts, np.float64)
        val_probs = _predict(target, len(splits.val), val_x, 256)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": float(np.average(losses, weights=w)),
            "accuracy": float(np.average(accs, weights=w)),
        }
        row.update(epoch_metrics(val_probs, splits.val.labels, class_names, positive_idx))
        row["seconds"] = time.perf_counter() - t_ep
        history.append(row)
        snapshots.append([np.array(v) for v in target.get_weights()])
        best_so_far = select_epoch(history, config.selection)
        # keep only the best snapshot and the latest (memory bounded)
        for i in range(len(snapshots) - 1):
            if i != best_so_far - 1:
                snapshots[i] = []
        if progress and hasattr(epochs, "set_postfix"):
            epochs.set_postfix(loss=f"{row['loss']:.3f}", val_acc=f"{row['val_accuracy']:.3f}",
                               disease_recall=f"{row['disease_recall']:.3f}")
    best_epoch = select_epoch(history, config.selection)
    target.set_weights(snapshots[best_epoch - 1])
    return history, best_epoch


__all__ = [
    "SELECTION_RULES",
    "TrainingConfig",
    "TrainingError",
    "TrainingReport",
    "epoch_metrics",
    "extract_features",
    "select_epoch",
    "train",
    "weights_digest",
]
