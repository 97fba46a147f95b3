"""Component names, and the file names built from them.

A component name ends up in file names (``cells/<dataset>__<model>__<explainer>__<perturbation>.json``)
and in pages, so it is checked when it is registered (:func:`check_name`), and
every file name built from names goes through :func:`safe_child`, which refuses
anything that would nest a folder or leave the run folder, even for a name
that somehow got past the check.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from bench.errors import InvalidNameError, UnsafePathError

#: What a component name may look like.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")
MAX_NAME_LENGTH = 64
#: ``__`` joins the names of a cell id: inside a name it would let two cells share a file.
CELL_SEPARATOR = "__"
NAME_RULE = (
    f"lower-case letters, digits, '.', '_' and '-', starting with a letter or digit, "
    f"at most {MAX_NAME_LENGTH} characters, no '..' and no '{CELL_SEPARATOR}'"
)


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid component name, or None when it is."""
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not a string"
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"it is {len(name)} characters long (at most {MAX_NAME_LENGTH})"
    if not NAME_PATTERN.fullmatch(name):
        bad = sorted({c for c in name if not re.fullmatch(r"[a-z0-9._-]", c)})
        if bad:
            return "it contains " + " ".join(repr(c) for c in bad)
        return "it must start with a lower-case letter or digit"
    if ".." in name:
        return "it contains '..'"
    if CELL_SEPARATOR in name:
        return f"it contains '{CELL_SEPARATOR}', which separates the names in a cell id"
    return None


def check_name(name: object, *, what: str = "component") -> str:
    """``name`` itself, or :class:`InvalidNameError` saying what is wrong with it."""
    problem = name_problem(name)
    if problem is not None or not isinstance(name, str):
        raise InvalidNameError(
            f"{what} name {name!r} is invalid: {problem}. A name becomes part of file names and "
            f"pages, so it may use only {NAME_RULE}"
        )
    return name


def safe_child(root: str | os.PathLike[str], *parts: str) -> Path:
    """``root / part / ...``, refused (:class:`UnsafePathError`) unless it stays inside ``root``.

    Each part must be one plain path component: no separator, not empty, not
    ``.`` or ``..``, no NUL. The joined path is also resolved (following
    symlinks) and must lie inside the resolved ``root``. The unresolved path is
    returned.
    """
    if not parts:
        raise UnsafePathError(f"safe_child({str(root)!r}) needs at least one part")
    base = Path(root)
    for part in parts:
        if (
            not isinstance(part, str)
            or part in ("", ".", "..")
            or "/" in part
            or "\\" in part
            or os.sep in part
            or (os.altsep is not None and os.altsep in part)
            or "\x00" in part
        ):
            raise UnsafePathError(
                f"refusing file name part {part!r} under {str(base)!r}: a part must be one plain "
                "file or folder name (no '/', '\\', '.', '..' or NUL)"
            )
    path = base.joinpath(*parts)
    root_resolved = base.resolve()
    resolved = path.resolve()
    if resolved == root_resolved or not resolved.is_relative_to(root_resolved):
        raise UnsafePathError(f"refusing {str(path)!r}: it resolves outside {str(base)!r}")
    return path
