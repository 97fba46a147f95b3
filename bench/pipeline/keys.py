"""Content keys: everything a cached stage result depends on, hashed.

A cached result is reused only when every input that can change it is identical,
so a stage key is made of contents, never of names that may point at new contents:

* files by their bytes: :func:`file_digest` / :func:`file_digests` hash a file's
  contents (SHA-256) once and remember the digest per (real path, size, mtime_ns,
  ctime_ns, inode) in a small JSON memo (``$BENCH_DIGEST_MEMO``, default
  ``$XDG_CACHE_HOME/bench/file-digests.json``; ``off`` keeps it in memory). The
  ctime is part of it because a file replaced and given its old mtime back
  (``os.utime``) has a new ctime, which no user can set;
* a plugin's code by its source: :func:`code_digest` hashes the ``.py`` files of
  the top-level package (or the module) a component's factory lives in, so an
  editable-installed plugin edited without a version bump gets new keys;
* bench's own version and code, and the stage's version (:func:`stage_key`): the
  engine (regions, perturbation streaming, incremental inference, the trainer) is
  bench's code, so an edited checkout of bench recomputes what it may have changed;
* files named by parameters (a ``weights`` path): :func:`param_files`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import inspect
import json
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.pipeline.store import atomic_write_text, content_key

#: Environment variable: where the file-digest memo lives (``off``: in memory only).
DIGEST_MEMO_ENV = "BENCH_DIGEST_MEMO"
#: A digest is not remembered for a file changed this recently (a write within the
#: file system's timestamp granularity could leave size and times unchanged).
RACY_WINDOW_NS = 2_000_000_000
#: Source files that make up a plugin's code.
SOURCE_SUFFIXES: tuple[str, ...] = (".py",)

_MEMO_FORMAT = 1
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------
# file contents
# --------------------------------------------------------------------------------------
def memo_path() -> Path | None:
    """The JSON memo of file digests, or None when ``$BENCH_DIGEST_MEMO`` is ``off``."""
    raw = os.environ.get(DIGEST_MEMO_ENV)
    if raw is not None:
        raw = raw.strip()
        if raw.lower() in ("", "0", "off", "none", "false"):
            return None
        return Path(raw).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bench" / "file-digests.json"


def stat_signature(st: os.stat_result) -> list[int]:
    """What must be unchanged for a remembered digest to hold."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def hash_file(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


class DigestMemo:
    """File digests remembered per (real path, stat signature); optionally kept in a JSON file.

    The memo is only a shortcut: an unreadable or unwritable memo file costs a re-hash,
    never a wrong digest (an entry is used only while the file's signature is unchanged).
    """

    def __init__(self, path: Path | None):
        self.path = path
        self._entries: dict[str, list[Any]] = {}
        self._new: dict[str, list[Any]] = {}
        self._loaded = path is None
        self._lock = threading.Lock()

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            data = json.loads(Path(self.path).read_text(encoding="utf-8"))  # type: ignore[arg-type]
        except (OSError, ValueError):
            return
        if isinstance(data, dict) and data.get("format") == _MEMO_FORMAT:
            entries = data.get("entries")
            if isinstance(entries, dict):
                self._entries.update(entries)

    def lookup(self, real: str, signature: list[int]) -> str | None:
        """The remembered digest of ``real`` if its signature is unchanged."""
        with self._lock:
            self._load()
            entry = self._entries.get(real)
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == signature:
            return str(entry[1])
        return None

    def remember(self, real: str, signature: list[int], digest: str) -> None:
        """Remember a digest unless the file changed too recently to trust its times."""
        if time.time_ns() - max(signature[1], signature[2]) < RACY_WINDOW_NS:
            return
        with self._lock:
            self._entries[real] = self._new[real] = [signature, digest]

    def save(self) -> None:
        """Merge new entries into the memo file (entries of vanished files are dropped)."""
        with self._lock:
            if self.path is None or not self._new:
                return
            new, self._new = self._new, {}
        try:
            on_disk = DigestMemo(self.path)
            on_disk._load()
            merged = {p: e for p, e in {**on_disk._entries, **new}.items() if os.path.exists(p)}
            atomic_write_text(self.path, json.dumps({"format": _MEMO_FORMAT, "entries": merged}))
        except OSError:
            pass  # a memo we cannot write only costs a re-hash next time


_MEMOS: dict[Path | None, DigestMemo] = {}
_MEMOS_LOCK = threading.Lock()


def digest_memo() -> DigestMemo:
    """This process's memo for the current ``$BENCH_DIGEST_MEMO``."""
    path = memo_path()
    with _MEMOS_LOCK:
        if path not in _MEMOS:
            _MEMOS[path] = DigestMemo(path)
        return _MEMOS[path]


def file_digests(paths: Sequence[str | Path], *, memo: DigestMemo | None = None) -> list[str]:
    """SHA-256 digests of the contents of ``paths`` (hashed once, then remembered)."""
    memo = memo or digest_memo()
    reals = [os.path.realpath(os.fspath(p)) for p in paths]
    signatures = [stat_signature(os.stat(r)) for r in reals]
    out: list[str | None] = [memo.lookup(r, s) for r, s in zip(reals, signatures, strict=True)]
    todo = [i for i, d in enumerate(out) if d is None]
    workers = min(os.cpu_count() or 1, 8)
    if len(todo) > 8 and workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            digests = list(pool.map(hash_file, [reals[i] for i in todo]))
    else:
        digests = [hash_file(reals[i]) for i in todo]
    for i, digest in zip(todo, digests, strict=True):
        out[i] = digest
        memo.remember(reals[i], signatures[i], digest)
    if todo:
        memo.save()
    return [str(d) for d in out]


def file_digest(path: str | Path) -> str:
    """SHA-256 of one file's contents (see :func:`file_digests`)."""
    return file_digests([path])[0]


def param_files(params: Any, *, prefix: str = "") -> dict[str, str]:
    """``{dotted parameter: content digest}`` of every parameter value naming an existing file.

    A path parameter (``weights = "u.weights.h5"``) names contents that can change
    while the name does not; folders are left to their owner's fingerprint.
    """
    out: dict[str, str] = {}
    if isinstance(params, Mapping):
        for k, v in params.items():
            out.update(param_files(v, prefix=f"{prefix}{k}."))
    elif isinstance(params, (list, tuple)):
        for i, v in enumerate(params):
            out.update(param_files(v, prefix=f"{prefix}{i}."))
    elif isinstance(params, (str, os.PathLike)):
        path = _as_file(params)
        if path is not None:
            out[prefix.rstrip(".")] = file_digest(path)
    return out


def _as_file(value: str | os.PathLike[str]) -> str | None:
    text = os.fspath(value)
    if not text or len(text) > 4096 or "\0" in text:
        return None
    path = os.path.expanduser(text)
    try:
        return path if os.path.isfile(path) else None
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------
# code
# --------------------------------------------------------------------------------------
_CODE_MEMO = DigestMemo(None)  # per process: source files are small, re-hashed when they change


def factory_module(factory: Any) -> str | None:
    """The module a factory (object or lazy ``"module:attr"`` string) lives in."""
    if isinstance(factory, str):
        return factory.partition(":")[0] or None
    while isinstance(factory, functools.partial):
        factory = factory.func
    module = getattr(factory, "__module__", None)
    if not isinstance(module, str):
        module = getattr(type(factory), "__module__", None)
    return module if isinstance(module, str) else None


def package_sources(module: str) -> list[tuple[str, str]]:
    """``(name relative to the package, path)`` of the source files of ``module``'s top package.

    A module outside any package (a single-file plugin) is its own file.
    """
    top = module.partition(".")[0]
    locations, origin = _locate(top)
    files: list[tuple[str, str]] = []
    for root in locations:
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
            for n in sorted(names):
                if n.endswith(SOURCE_SUFFIXES):
                    full = os.path.join(folder, n)
                    files.append((os.path.relpath(full, root).replace(os.sep, "/"), full))
    if not files and origin and os.path.isfile(origin):
        files.append((os.path.basename(origin), origin))
    return sorted(files)


def _locate(top: str) -> tuple[list[str], str | None]:
    """(package folders, module file) of a top-level module, importing nothing new."""
    spec = None
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError, AttributeError):
        spec = None
    if spec is None:
        loaded = sys.modules.get(top)
        return list(getattr(loaded, "__path__", []) or []), getattr(loaded, "__file__", None)
    return list(spec.submodule_search_locations or []), spec.origin


#: package -> code digest while :func:`frozen_code_digests` is active (None: not active)
_FROZEN_DIGESTS: dict[str, str] | None = None
_FROZEN_USERS = 0  # how many frozen_code_digests() blocks are open (nested or in other threads)
_FROZEN_LOCK = threading.Lock()


@contextlib.contextmanager
def frozen_code_digests() -> Any:
    """Within it (a run: ``bench.run`` is wrapped in it), each package's code digest is computed
    once and then reused: the keys of a run are those of the code the process runs, even if a
    source file is edited while it runs (an imported module does not change), and a cached
    rerun does not walk every package's files for each of its thousands of keys. Nested use
    shares the outer memo; outside it every call reads the files (an edit shows at once).
    Also a decorator. Runs that overlap in one process (threads) share the memo until the last
    one ends."""
    global _FROZEN_DIGESTS, _FROZEN_USERS
    with _FROZEN_LOCK:
        if _FROZEN_USERS == 0:
            _FROZEN_DIGESTS = {}
        _FROZEN_USERS += 1
    try:
        yield
    finally:
        with _FROZEN_LOCK:
            _FROZEN_USERS -= 1
            if _FROZEN_USERS == 0:
                _FROZEN_DIGESTS = None


def code_digest(factory: Any) -> str:
    """A hash of the source files of the package the factory lives in.

    Falls back to the factory's own source text (a class typed into a notebook), and
    to ``"unknown"`` where there is none. Within :func:`frozen_code_digests`, once per package.
    """
    module = factory_module(factory)
    frozen = _FROZEN_DIGESTS
    top = module.partition(".")[0] if module else None
    if frozen is not None and top is not None and top in frozen:
        return frozen[top]
    files = package_sources(module) if module else []
    if files:
        digests = file_digests([p for _, p in files], memo=_CODE_MEMO)
        lines = "".join(f"{name}\0{d}\n" for (name, _), d in zip(files, digests, strict=True))
        digest = hashlib.sha256(lines.encode()).hexdigest()[:20]
        if frozen is not None and top is not None:
            frozen[top] = digest
        return digest
    try:
        source = inspect.getsource(factory)
    except (OSError, TypeError):
        return "unknown"
    return hashlib.sha256(source.encode()).hexdigest()[:20]


# --------------------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------------------
def bench_version() -> str:
    """bench's own version (part of every stage key)."""
    import bench

    return str(bench.__version__)


def component_identity(kind: str, name: str) -> dict[str, str]:
    """What identifies a registered component's behaviour: name, version and code digest."""
    from bench.plugin.registry import registry

    entry = registry().get(kind, name)
    return {"kind": entry.kind, "name": name, "version": entry.version,
            "code": code_digest(entry.spec.factory)}


def bench_code_digest() -> str:
    """A hash of bench's own source files (the engine every stage runs through)."""
    return code_digest(bench_code_digest)


def stage_key(stage: str, version: int, *parts: Any) -> str:
    """The cache key of one stage result: stage, its version, bench's version and code, ``parts``."""
    return content_key(stage, version, bench_version(), bench_code_digest(), *parts)

