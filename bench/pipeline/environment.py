"""What a result was computed with: versions, platform, git commit."""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def package_version(name: str) -> str | None:
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return None


def git_commit(folder: str | Path | None = None) -> str | None:
    here = Path(folder) if folder else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> dict[str, Any]:
    from bench import __version__

    return {
        "bench": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "tensorflow": package_version("tensorflow") or package_version("tensorflow-cpu"),
        "keras": package_version("keras"),
        "numpy": package_version("numpy"),
        "scikit-learn": package_version("scikit-learn"),
        "git_commit": git_commit(),
    }
