"""Atomic files, the content-addressed cache, and run directories.

No pickle anywhere: JSON, CSV, NPZ (``allow_pickle=False``) and ``.keras`` files.
Every write goes to a temporary file in the same folder and is renamed into
place, so a run killed mid-write never leaves a half-written result.

Every read is whole: an NPZ is read member by member to its end (each member's
CRC-32 checked), a cache JSON entry carries a SHA-256 of its value. A file that
fails raises :class:`CorruptFileError` naming it; the :class:`Cache` then sets
the entry aside under ``cache/corrupt/``, says so once on stderr, and reports a
miss, so the stage is recomputed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from bench.errors import BenchError

T = TypeVar("T")


class CorruptFileError(BenchError, ValueError):
    """A file that cannot be read back whole: truncated, bit-flipped or not what it claims."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path} is corrupt: {reason}")
        self.path = Path(path)
        self.reason = reason


#: What reading a damaged zip/npy/json raises (beyond our own checks).
_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError, UnicodeDecodeError)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


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


def share_file(source: Path, target: Path) -> bool:
    """Make ``target`` a hard link to ``source`` (atomically, replacing ``target``); False where
    the filesystem cannot link them (another device, no link support, ``source`` missing): the
    caller then writes its own copy. A linked file costs no space; both names stay valid when
    either is removed or atomically replaced (a rename makes a new file, the link keeps the old)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.link"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.link(source, tmp)
        os.replace(tmp, target)
        return True
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False


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
    """Parse a JSON file; a damaged one raises :class:`CorruptFileError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptFileError(path, _reason(exc)) from exc


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())


def read_npz(path: Path, keep: Callable[[str], bool] | None = None) -> dict[str, np.ndarray]:
    """Every array of an NPZ (or those whose name ``keep`` accepts: the others are neither read
    nor decompressed), each member read to its end (CRC-32 checked); no pickle.

    A truncated or bit-flipped file raises :class:`CorruptFileError` naming it.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            named = [(_array_name(path, info), info) for info in zf.infolist()]
            return {name: _read_member(zf, info) for name, info in named if keep is None or keep(name)}
    except CorruptFileError:
        raise
    except _DAMAGE as exc:
        raise CorruptFileError(path, _reason(exc)) from exc


def npz_names(path: Path) -> list[str]:
    """The names of an NPZ's arrays, from its directory alone (nothing decompressed); a file that
    is not a zip of arrays raises :class:`CorruptFileError` naming it."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            return [_array_name(path, info) for info in zf.infolist()]
    except CorruptFileError:
        raise
    except _DAMAGE as exc:
        raise CorruptFileError(path, _reason(exc)) from exc


def _array_name(path: Path, info: zipfile.ZipInfo) -> str:
    if not info.filename.endswith(".npy"):
        raise CorruptFileError(path, f"member {info.filename!r} is not an array (.npy)")
    return info.filename[: -len(".npy")]


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with zf.open(info) as fh:
        array = np.lib.format.read_array(fh, allow_pickle=False)
        if fh.read(1):  # reading to the end is what checks the member's CRC-32
            raise ValueError(f"member {info.filename!r} has data after its array")
    return array


def verify_zip(path: Path) -> None:
    """Read every member of a zip file (``.keras``, ``.npz``) to its end: CRC-32 checked."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                with zf.open(info) as fh:
                    while fh.read(1 << 20):
                        pass
    except _DAMAGE as exc:
        raise CorruptFileError(path, _reason(exc)) from exc


def content_key(*parts: Any) -> str:
    """A content hash of JSON-able parts (names, versions, params, upstream keys, seeds)."""
    blob = json.dumps(parts, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _verified(path: Path) -> Path:
    verify_zip(path)
    return path


_ENVELOPE_FORMAT = 1


def _value_digest(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, allow_nan=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def envelope(obj: Any) -> dict[str, Any]:
    """A cache JSON entry: the value as a reader will get it back, and its SHA-256."""
    value = json.loads(to_json(obj, indent=None))
    return {"format": _ENVELOPE_FORMAT, "sha256": _value_digest(value), "value": value}


def open_envelope(path: Path, entry: Any) -> Any:
    """The value of a cache JSON entry; :class:`CorruptFileError` if its checksum fails."""
    if not isinstance(entry, dict) or entry.get("format") != _ENVELOPE_FORMAT or "value" not in entry:
        raise CorruptFileError(path, "not a checksummed bench cache entry")
    if entry.get("sha256") != _value_digest(entry["value"]):
        raise CorruptFileError(path, "checksum mismatch (the file was changed after it was written)")
    return entry["value"]


#: Where each stage's result lies in the cache: its folder under ``results/cache/`` and the
#: suffixes of the files that together hold it, the JSON and NPZ ones written by
#: :meth:`Cache.put_json` / :meth:`Cache.put_npz`. The one source of the layout: the stage
#: methods (:mod:`bench.pipeline.stages`) and the trainer (:mod:`bench.training`, a model's
#: report and ``.keras`` archive) write there, and ``Stages.is_cached`` / ``Stages.cache_file``
#: (the dry run's cache probe) look there. (Changing a folder or suffix orphans existing caches.)
STAGE_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "dataset": ("datasets", (".npz",)),
    "model": ("models", (".json", ".keras")),
    "evaluation": ("evaluation", (".npz", ".json")),
    "heatmaps": ("heatmaps", (".npz", ".json")),
    "curves": ("curves", (".npz", ".json")),
    "metric": ("metrics", (".json", ".npz")),
}


class Cache:
    """``results/cache/<stage>/<key>.<suffix>``: one file (or folder) per stage result.

    Reads are whole and checked; a damaged entry is moved to
    ``<root>/corrupt/<stage>/<name>.corrupt-<UTC time>``, named once on stderr, and
    read as a miss.
    """

    CORRUPT = "corrupt"

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, stage: str, key: str, suffix: str) -> Path:
        p = self.root / stage / f"{key}{suffix}"
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def exists(self, stage: str, key: str, suffix: str) -> bool:
        return (self.root / stage / f"{key}{suffix}").exists()

    def get_json(self, stage: str, key: str) -> Any | None:
        """The stored value, or None when missing or corrupt (then set aside)."""
        p = self.root / stage / f"{key}.json"
        return self.read_checked(p, lambda path: open_envelope(path, read_json(path)))

    def put_json(self, stage: str, key: str, obj: Any) -> Path:
        p = self.path(stage, key, ".json")
        write_json(p, envelope(obj))
        return p

    def get_npz(
        self, stage: str, key: str, *, required: Iterable[str] = ()
    ) -> dict[str, np.ndarray] | None:
        """The stored arrays, or None when missing or corrupt (then set aside).

        ``required``: array names the entry must hold; one missing counts as corrupt.
        """
        p = self.root / stage / f"{key}.npz"
        need = tuple(required)

        def read(path: Path) -> dict[str, np.ndarray]:
            arrays = read_npz(path)
            missing = [n for n in need if n not in arrays]
            if missing:
                raise CorruptFileError(path, f"arrays missing: {', '.join(missing)}")
            return arrays

        return self.read_checked(p, read)

    def check_zip(self, path: Path) -> bool:
        """Whether ``path`` (a ``.keras`` entry) exists and reads whole; a damaged one is set aside."""
        return self.read_checked(Path(path), _verified) is not None

    def read_checked(self, path: Path, reader: Callable[[Path], T]) -> T | None:
        """``reader(path)``; None when the file is missing, or corrupt (then set aside)."""
        if not path.exists():
            return None
        try:
            return reader(path)
        except CorruptFileError as exc:
            self.set_aside(path, exc.reason)
            return None

    def set_aside(self, path: Path, reason: str) -> Path | None:
        """Move a damaged entry under ``<root>/corrupt/`` and say so once on stderr."""
        path = Path(path)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        try:
            rel = path.resolve().relative_to(self.root.resolve())
        except ValueError:
            rel = Path(path.name)
        target = self.root / self.CORRUPT / rel.parent / f"{rel.name}.corrupt-{stamp}"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        except FileNotFoundError:
            return None  # another process set it aside first
        except OSError as exc:
            print(f"bench: corrupt cache entry {path} ({reason}); cannot move it aside ({exc}): "
                  "recomputing", file=sys.stderr, flush=True)
            return None
        print(f"bench: corrupt cache entry {path} ({reason}): set aside as {target}; recomputing",
              file=sys.stderr, flush=True)
        return target

    def put_npz(self, stage: str, key: str, **arrays: np.ndarray) -> Path:
        p = self.path(stage, key, ".npz")
        write_npz(p, **arrays)
        return p


def iter_json_files(folder: Path, pattern: str = "*.json") -> Iterator[tuple[Path, Mapping[str, Any]]]:
    for p in sorted(Path(folder).glob(pattern)):
        yield p, read_json(p)
