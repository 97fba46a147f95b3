"""Atomic files, the content-addressed cache, and run directories.

No pickle anywhere: JSON, CSV, NPZ (``allow_pickle=False``) and ``.keras`` files.
Every write goes to a temporary file in the same folder and is renamed into
place, so a run killed mid-write never leaves a half-written result.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename (mode as a plain open would give)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; published files are readable
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any, *, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, sort_keys=False, default=_json_default, allow_nan=True)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, to_json(obj) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(Path(path), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def content_key(*parts: Any) -> str:
    """A content hash of JSON-able parts (names, versions, params, upstream keys, seeds)."""
    blob = json.dumps(parts, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


class Cache:
    """``results/cache/<stage>/<key>.<suffix>``: one file (or folder) per stage result."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, stage: str, key: str, suffix: str) -> Path:
        p = self.root / stage / f"{key}{suffix}"
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def exists(self, stage: str, key: str, suffix: str) -> bool:
        return (self.root / stage / f"{key}{suffix}").exists()

    def get_json(self, stage: str, key: str) -> Any | None:
        p = self.root / stage / f"{key}.json"
        return read_json(p) if p.exists() else None

    def put_json(self, stage: str, key: str, obj: Any) -> Path:
        p = self.path(stage, key, ".json")
        write_json(p, obj)
        return p

    def get_npz(self, stage: str, key: str) -> dict[str, np.ndarray] | None:
        p = self.root / stage / f"{key}.npz"
        return read_npz(p) if p.exists() else None

    def put_npz(self, stage: str, key: str, **arrays: np.ndarray) -> Path:
        p = self.path(stage, key, ".npz")
        write_npz(p, **arrays)
        return p


def iter_json_files(folder: Path, pattern: str = "*.json") -> Iterator[tuple[Path, Mapping[str, Any]]]:
    for p in sorted(Path(folder).glob(pattern)):
        yield p, read_json(p)
