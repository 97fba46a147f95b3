"""A figure is drawn once per content: the figure memo behind every ``plot_*`` function.

Drawing is most of what publishing costs (matplotlib lays out and rasterises every artist:
the rank grid of a 66-cell demo is seconds per figure), and a cached rerun or a republish
draws the same figures from the same numbers again. :func:`memoised_figure` wraps a
``plot_*(data..., path, **options) -> path`` function: inside :func:`figure_cache` (a
folder, e.g. ``<results>/cache/figures``), a figure whose key was drawn before is copied
from the memo instead of drawn. The key is made of contents only (never of names that may
point at new contents): the function's name, every argument except the output path (arrays
by dtype, shape and bytes; DataFrames by columns, index and values; mappings in their
order, which is the figure's panel order), the output's suffix, bench's code digest and the
matplotlib, NumPy and Pillow versions. An argument of a type it cannot fingerprint turns the
memo off for that call (the figure is drawn), never risks a stale picture. Outside
:func:`figure_cache` nothing is memoised.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import math
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

F = TypeVar("F", bound=Callable[..., Any])

#: the active memo folder (:func:`figure_cache`), None: off
_FOLDER: Path | None = None


class Unhashable(TypeError):
    """An argument the memo cannot fingerprint: the figure is drawn, not memoised."""


@contextlib.contextmanager
def figure_cache(folder: str | Path | None) -> Iterator[Path | None]:
    """Memoise the figures drawn inside it in ``folder`` (None: do not memoise)."""
    global _FOLDER
    previous = _FOLDER
    _FOLDER = Path(folder) if folder is not None else None
    try:
        yield _FOLDER
    finally:
        _FOLDER = previous


def _feed(h: Any, obj: Any) -> None:
    """Feed ``obj``'s content into the hash ``h`` (type-tagged, order-preserving)."""
    import pandas as pd

    if obj is None or isinstance(obj, bool):
        h.update(f"<{obj!r}>".encode())
    elif isinstance(obj, int | np.integer):
        h.update(f"i{int(obj)};".encode())
    elif isinstance(obj, float | np.floating):
        v = float(obj)
        h.update(("fnan;" if math.isnan(v) else f"f{v!r};").encode())
    elif isinstance(obj, str):
        h.update(f"s{len(obj)}:".encode() + obj.encode())
    elif isinstance(obj, bytes):
        h.update(f"b{len(obj)}:".encode() + obj)
    elif isinstance(obj, np.ndarray):
        if obj.dtype == object:
            h.update(f"O{obj.shape}".encode())
            for v in obj.ravel():
                _feed(h, v)
        else:
            h.update(f"a{obj.dtype.str}{obj.shape}".encode())
            h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, pd.DataFrame):
        h.update(b"df")
        _feed(h, [str(c) for c in obj.columns])
        _feed(h, obj.index.to_numpy())
        for c in obj.columns:
            _feed(h, obj[c].to_numpy())
    elif isinstance(obj, pd.Series):
        h.update(b"sr")
        _feed(h, str(obj.name))
        _feed(h, obj.index.to_numpy())
        _feed(h, obj.to_numpy())
    elif isinstance(obj, Mapping):
        h.update(f"m{len(obj)}{{".encode())
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
        h.update(b"}")
    elif isinstance(obj, list | tuple):
        h.update(f"{type(obj).__name__[0]}{len(obj)}[".encode())
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    elif isinstance(obj, set | frozenset):
        h.update(f"S{len(obj)}".encode())
        for v in sorted(obj, key=repr):
            _feed(h, v)
    elif isinstance(obj, Path):
        raise Unhashable(f"a path argument ({obj}) names a file, not its contents")
    else:
        raise Unhashable(f"cannot fingerprint a {type(obj).__name__}")


@functools.cache
def _environment() -> str:
    import matplotlib
    import PIL

    from bench.pipeline.keys import bench_code_digest

    return f"{bench_code_digest()}|mpl {matplotlib.__version__}|np {np.__version__}|PIL {PIL.__version__}"


def figure_key(name: str, arguments: Mapping[str, Any], suffix: str) -> str:
    """The memo key of figure function ``name`` called with ``arguments`` (its output path left out)."""
    h = hashlib.sha256()
    _feed(h, [name, suffix.lower(), _environment()])
    _feed(h, dict(arguments))
    return h.hexdigest()[:32]


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def memoised_figure(path_param: str = "path") -> Callable[[F], F]:
    """Decorate a ``plot_*`` function whose ``path_param`` argument is the output file (see the
    module's docstring); the decorated function returns the output path as before."""

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            folder = _FOLDER
            if folder is None:
                return fn(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            target = Path(arguments.pop(path_param))
            try:
                key = figure_key(fn.__qualname__, arguments, target.suffix or ".png")
            except Unhashable:
                return fn(*args, **kwargs)
            memo = folder / f"{key}{target.suffix or '.png'}"
            if memo.is_file() and memo.stat().st_size > 0:
                _copy(memo, target)
                return target
            out = Path(fn(*args, **kwargs))
            with contextlib.suppress(OSError):  # a memo that cannot be written is only slower next time
                _copy(out, memo)
            return out

        return wrapper  # type: ignore[return-value]

    return decorate
