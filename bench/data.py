"""The in-memory form every dataset plugin returns, and per-batch model input.

Images are stored as uint8 grayscale (N, H, W); models get float32 [0, 1]
(B, H, W, 3) built one batch at a time, so a dataset is never held as float32.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """One split: uint8 images (N, H, W), int labels (N,), ids (N,), optional masks."""

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    lung_masks: np.ndarray | None = None
    lesion_masks: np.ndarray | None = None

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
        for mname in ("lung_masks", "lesion_masks"):
            m = getattr(self, mname)
            if m is not None and (m.dtype != np.bool_ or m.shape != self.images.shape):
                raise ValueError(
                    f"Split.{mname} must be bool {self.images.shape}, got {m.dtype} {m.shape}"
                )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:3])  # type: ignore[return-value]

    def subset(self, index: np.ndarray) -> Split:
        return Split(
            images=self.images[index],
            labels=self.labels[index],
            ids=self.ids[index],
            lung_masks=None if self.lung_masks is None else self.lung_masks[index],
            lesion_masks=None if self.lesion_masks is None else self.lesion_masks[index],
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
    #: Classes whose recall drives model selection (the study: the three diseases).
    disease_classes: tuple[str, ...] = ()
    #: Free-form provenance (file lists of each split, skipped files, generator params).
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shapes = {s.image_shape for s in self.splits().values() if len(s)}
        if len(shapes) > 1:
            raise ValueError(f"all splits must share one image size, got {sorted(shapes)}")
        for split_name, s in self.splits().items():
            if len(s) and (s.labels.min() < 0 or s.labels.max() >= len(self.class_names)):
                raise ValueError(f"{split_name} labels out of range for {len(self.class_names)} classes")

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.train.image_shape if len(self.train) else self.test.image_shape

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def disease_class_indices(self) -> tuple[int, ...]:
        return tuple(self.class_names.index(c) for c in self.disease_classes)

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            split_name: {
                c: int(np.sum(s.labels == i)) for i, c in enumerate(self.class_names)
            }
            for split_name, s in self.splits().items()
        }

    def describe(self) -> dict[str, Any]:
        """The stable JSON form of ``bench data describe``."""
        any_split = [s for s in self.splits().values() if len(s)]
        return {
            "dataset": self.name,
            "fingerprint": self.fingerprint,
            "classes": list(self.class_names),
            "image_size": list(self.image_shape),
            "splits": self.counts(),
            "masks": {
                "lung": any(s.lung_masks is not None for s in any_split),
                "lesion": any(s.lesion_masks is not None for s in any_split),
            },
        }

    # ---- persistence (NPZ, no pickle) -------------------------------------------------
    def save(self, path: str | Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        for split_name, s in self.splits().items():
            arrays[f"{split_name}/images"] = s.images
            arrays[f"{split_name}/labels"] = s.labels.astype(np.int64)
            arrays[f"{split_name}/ids"] = s.ids.astype(str)
            if s.lung_masks is not None:
                arrays[f"{split_name}/lung_masks"] = np.packbits(s.lung_masks, axis=-1)
            if s.lesion_masks is not None:
                arrays[f"{split_name}/lesion_masks"] = np.packbits(s.lesion_masks, axis=-1)
        meta = {
            "name": self.name,
            "class_names": list(self.class_names),
            "fingerprint": self.fingerprint,
            "disease_classes": list(self.disease_classes),
            "metadata": self.metadata,
        }
        arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        from .store import atomic_write_bytes

        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(Path(path), buf.getvalue())

    @classmethod
    def load_file(cls, path: str | Path) -> DatasetSplits:
        """Read a file written by :meth:`save`, whole (every member's CRC-32 checked).

        A truncated, bit-flipped or incomplete file raises
        :class:`~bench.store.CorruptFileError` naming it.
        """
        from .store import CorruptFileError, read_npz

        path = Path(path)
        arrays = read_npz(path)
        try:
            return cls._from_arrays(arrays)
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptFileError(path, f"not a complete dataset file ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray]) -> DatasetSplits:
        meta = json.loads(bytes(arrays["meta.json"]).decode())
        splits = {}
        for split_name in SPLIT_NAMES:
            images = arrays[f"{split_name}/images"]

            def mask(key: str, width: int = images.shape[2]) -> np.ndarray | None:
                if key not in arrays:
                    return None
                return np.unpackbits(arrays[key], axis=-1, count=width).astype(bool)

            splits[split_name] = Split(
                images=images,
                labels=arrays[f"{split_name}/labels"],
                ids=arrays[f"{split_name}/ids"],
                lung_masks=mask(f"{split_name}/lung_masks"),
                lesion_masks=mask(f"{split_name}/lesion_masks"),
            )
        return cls(
            name=meta["name"],
            class_names=tuple(meta["class_names"]),
            fingerprint=meta["fingerprint"],
            disease_classes=tuple(meta["disease_classes"]),
            metadata=meta["metadata"],
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
