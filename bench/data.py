"""The in-memory form every dataset plugin returns, and per-batch model input.

Images are stored as uint8 grayscale (N, H, W); models get float32 [0, 1]
(B, H, W, 3) built one batch at a time, so a dataset is never held as float32.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import did_you_mean
from bench.plugin.names import NAME_RULE, name_problem

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
#: ``DatasetSplits.metadata`` key: the classes a dataset declares positive (a list of its
#: class names); the ``disease_recall`` model-selection rule averages recall over them.
POSITIVE_CLASSES_KEY = "positive_classes"
#: NPZ member of a mask: ``<split>/masks/<name>`` (bits packed along the width).
MASKS_PREFIX = "masks/"
#: Older dataset files stored a mask as ``<split>/<name>_masks`` and the positive classes
#: in a meta key of their own; both are still read.
LEGACY_MASK_SUFFIX = "_masks"
LEGACY_POSITIVE_KEY = "disease_classes"


@dataclass(frozen=True)
class Split:
    """One split: uint8 images (N, H, W), int labels (N,), ids (N,), and named masks.

    ``masks`` maps a mask name (a component-style name: lower-case letters, digits,
    '.', '_', '-') to a bool array of the images' shape (N, H, W). Which masks a
    dataset carries, and what they mean, is the dataset plugin's business: the core
    names none. Any mapping is accepted and stored as a plain ``dict`` in the
    order given.
    """

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 3:
            raise ValueError(
                f"Split.images must be uint8 (N, H, W), got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.shape != (n,) or self.ids.shape != (n,):
            raise ValueError(
                f"Split.labels and ids must be (N,)={n}, got {self.labels.shape}, {self.ids.shape}"
            )
        if not isinstance(self.masks, Mapping):
            raise TypeError(
                f"Split.masks must be a mapping name -> bool (N, H, W) array, got {type(self.masks).__name__}"
            )
        masks: dict[str, np.ndarray] = {}
        for name, m in self.masks.items():
            problem = name_problem(name)
            if problem is not None:
                raise ValueError(
                    f"Split.masks: mask name {name!r} is invalid: {problem}; a mask name may use only {NAME_RULE}"
                )
            if not isinstance(m, np.ndarray) or m.dtype != np.bool_ or m.shape != self.images.shape:
                got = f"{m.dtype} {m.shape}" if isinstance(m, np.ndarray) else type(m).__name__
                raise ValueError(
                    f"Split.masks[{name!r}] must be a bool array of the images' shape "
                    f"{self.images.shape}, got {got}"
                )
            masks[name] = m
        object.__setattr__(self, "masks", masks)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:3])  # type: ignore[return-value]

    def subset(self, index: np.ndarray) -> Split:
        """The images at ``index`` (positions or a bool selector), masks kept aligned."""
        return Split(
            images=self.images[index],
            labels=self.labels[index],
            ids=self.ids[index],
            masks={name: m[index] for name, m in self.masks.items()},
        )

    def batches(self, batch_size: int) -> Iterator[tuple[slice, np.ndarray]]:
        """(slice, float32 model input) per batch."""
        for start in range(0, len(self), batch_size):
            sl = slice(start, min(start + batch_size, len(self)))
            yield sl, to_model_input(self.images[sl])


@dataclass(frozen=True)
class DatasetSplits:
    """What a dataset's ``load()`` returns."""

    name: str
    class_names: tuple[str, ...]
    train: Split
    val: Split
    test: Split
    fingerprint: str
    #: Free-form provenance (file lists of each split, skipped files, generator params),
    #: plus the keys the harness reads: ``positive_classes`` (see :attr:`positive_classes`).
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shapes = {s.image_shape for s in self.splits().values() if len(s)}
        if len(shapes) > 1:
            raise ValueError(f"all splits must share one image size, got {sorted(shapes)}")
        for split_name, s in self.splits().items():
            if len(s) and (s.labels.min() < 0 or s.labels.max() >= len(self.class_names)):
                raise ValueError(f"{split_name} labels out of range for {len(self.class_names)} classes")
        positive = self.metadata.get(POSITIVE_CLASSES_KEY, [])
        if not isinstance(positive, (list, tuple)) or not all(isinstance(c, str) for c in positive):
            raise ValueError(
                f"dataset {self.name!r}: metadata[{POSITIVE_CLASSES_KEY!r}] must be a list of class "
                f"names, got {positive!r}"
            )
        unknown = [c for c in positive if c not in self.class_names]
        if unknown:
            raise ValueError(
                f"dataset {self.name!r}: metadata[{POSITIVE_CLASSES_KEY!r}] names {unknown}, which are "
                f"not among its classes {list(self.class_names)}"
            )

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.train.image_shape if len(self.train) else self.test.image_shape

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def positive_classes(self) -> tuple[str, ...]:
        """The classes the dataset declares positive (``metadata["positive_classes"]``).

        The ``disease_recall`` selection rule averages the validation recall over them
        (all classes when the dataset declares none). The names are the dataset's own.
        """
        return tuple(self.metadata.get(POSITIVE_CLASSES_KEY, ()))

    @property
    def positive_class_indices(self) -> tuple[int, ...]:
        return tuple(self.class_names.index(c) for c in self.positive_classes)

    @property
    def mask_names(self) -> tuple[str, ...]:
        """Every mask name any split carries, in first-seen order (train, val, test)."""
        names: dict[str, None] = {}
        for s in self.splits().values():
            names.update(dict.fromkeys(s.masks))
        return tuple(names)

    def mask_coverage(self) -> dict[str, float]:
        """Per mask name: the fraction of all images (every split) whose mask is non-empty."""
        total = sum(len(s) for s in self.splits().values())
        out: dict[str, float] = {}
        for name in self.mask_names:
            nonempty = sum(
                int(s.masks[name].any(axis=(1, 2)).sum()) for s in self.splits().values() if name in s.masks
            )
            out[name] = nonempty / total if total else 0.0
        return out

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            split_name: {
                c: int(np.sum(s.labels == i)) for i, c in enumerate(self.class_names)
            }
            for split_name, s in self.splits().items()
        }

    def describe(self) -> dict[str, Any]:
        """The stable JSON form of ``bench data describe``."""
        return {
            "dataset": self.name,
            "fingerprint": self.fingerprint,
            "classes": list(self.class_names),
            "image_size": list(self.image_shape),
            "splits": self.counts(),
            "positive_classes": list(self.positive_classes),
            # name -> fraction of images with a non-empty mask
            "masks": {name: round(frac, 6) for name, frac in self.mask_coverage().items()},
        }

    # ---- persistence (NPZ, no pickle) -------------------------------------------------
    def save(self, path: str | Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        for split_name, s in self.splits().items():
            arrays[f"{split_name}/images"] = s.images
            arrays[f"{split_name}/labels"] = s.labels.astype(np.int64)
            arrays[f"{split_name}/ids"] = s.ids.astype(str)
            for mask_name, m in s.masks.items():
                arrays[f"{split_name}/{MASKS_PREFIX}{mask_name}"] = np.packbits(m, axis=-1)
        meta = {
            "name": self.name,
            "class_names": list(self.class_names),
            "fingerprint": self.fingerprint,
            "metadata": self.metadata,
            # the masks' order (NPZ members carry no order of their own)
            "masks": {split_name: list(s.masks) for split_name, s in self.splits().items()},
        }
        arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        from bench.pipeline.store import atomic_write_bytes

        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(Path(path), buf.getvalue())

    @classmethod
    def load_file(cls, path: str | Path) -> DatasetSplits:
        """Read a file written by :meth:`save`, whole (every member's CRC-32 checked).

        A truncated, bit-flipped or incomplete file raises
        :class:`~bench.pipeline.store.CorruptFileError` naming it. To read one split alone,
        see :meth:`load_split`.
        """
        from bench.pipeline.store import CorruptFileError, read_npz

        path = Path(path)
        arrays = read_npz(path)
        try:
            return cls._from_arrays(arrays)
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptFileError(path, f"not a complete dataset file ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def load_split(cls, path: str | Path, name: str) -> Split:
        """Split ``name`` (``"train"``, ``"val"`` or ``"test"``) of a file written by :meth:`save`,
        reading only that split's members and ``meta.json`` (the test split without reading,
        nor decompressing, the training images).

        The same :class:`Split` as ``load_file(path).<name>``: images, labels, ids and masks in
        the file's order, the older ``<split>/<mask>_masks`` layout included. Every member read
        is CRC-32 checked; a damaged member, or a split (of :data:`SPLIT_NAMES`) the file lacks
        whole or in part, raises :class:`~bench.pipeline.store.CorruptFileError` naming the file.
        Any other ``name`` raises ``ValueError`` naming the file and the splits it holds.
        """
        from bench.pipeline.store import CorruptFileError, npz_names, read_npz

        path = Path(path)
        heads = {m.partition("/")[0] for m in npz_names(path) if "/" in m}
        held = [s for s in SPLIT_NAMES if s in heads] + sorted(heads - set(SPLIT_NAMES))
        if name not in held:
            holds = f"it holds {', '.join(repr(s) for s in held) or 'no split'}"
            if name in SPLIT_NAMES:
                raise CorruptFileError(path, f"not a complete dataset file: no split {name!r} ({holds})")
            raise ValueError(f"{path}: no split {name!r}{did_you_mean(str(name), held)}; {holds}")
        arrays = read_npz(path, keep=lambda m: m == "meta.json" or m.startswith(f"{name}/"))
        try:
            meta = json.loads(bytes(arrays["meta.json"]).decode())
            return cls._split_from(arrays, meta, name)
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptFileError(
                path, f"not a complete dataset file, split {name!r} ({type(exc).__name__}: {exc})"
            ) from exc

    @staticmethod
    def _split_from(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], split_name: str) -> Split:
        """Split ``split_name`` from a file's members (``arrays``; others may be there too) and its
        ``meta.json``: masks (bit-packed along the width) in the order ``meta["masks"]`` gives
        (sorted by name where it gives none), the schema-1 ``<split>/<name>_masks`` members too."""
        images = arrays[f"{split_name}/images"]
        width = images.shape[2]
        keys: dict[str, str] = {}  # mask name -> member
        order = (meta.get("masks") or {}).get(split_name)
        for key in arrays:
            head, sep, rest = key.partition("/")
            if head != split_name or not sep:
                continue
            if rest.startswith(MASKS_PREFIX):
                keys[rest[len(MASKS_PREFIX):]] = key
            elif rest.endswith(LEGACY_MASK_SUFFIX):  # schema 1: "<split>/<name>_masks"
                keys.setdefault(rest[: -len(LEGACY_MASK_SUFFIX)], key)
        names = [n for n in order if n in keys] if order else sorted(keys)
        return Split(
            images=images,
            labels=arrays[f"{split_name}/labels"],
            ids=arrays[f"{split_name}/ids"],
            masks={n: np.unpackbits(arrays[keys[n]], axis=-1, count=width).astype(bool) for n in names},
        )

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray]) -> DatasetSplits:
        meta = json.loads(bytes(arrays["meta.json"]).decode())
        splits = {split_name: cls._split_from(arrays, meta, split_name) for split_name in SPLIT_NAMES}
        metadata = dict(meta["metadata"])
        if LEGACY_POSITIVE_KEY in meta:  # schema 1 kept the positive classes beside the metadata
            metadata.setdefault(POSITIVE_CLASSES_KEY, list(meta[LEGACY_POSITIVE_KEY]))
        return cls(
            name=meta["name"],
            class_names=tuple(meta["class_names"]),
            fingerprint=meta["fingerprint"],
            metadata=metadata,
            **splits,
        )


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (B, H, W) or (B, H, W, C) -> float32 (B, H, W, 3) in [0, 1].

    Float input is taken as already in [0, 1] (gray channel replicated if needed).
    """
    x = np.asarray(images)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) * np.float32(1.0 / 255.0)
    else:
        x = x.astype(np.float32, copy=False)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"images must be (B, H, W) or (B, H, W, C), got shape {x.shape}")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    elif x.shape[-1] != 3:
        raise ValueError(f"images must have 1 or 3 channels, got {x.shape[-1]}")
    return x


def fingerprint_of(payload: Any) -> str:
    """A stable short hash of JSON-able data."""
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
