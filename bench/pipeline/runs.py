"""Run folders: ``results/runs/<run>/manifest.json``, and whether a run's process still lives.

A run writes its manifest as ``running`` with its process identity (pid, host, start
time) and rewrites it when it ends. A run killed with SIGKILL (or a crash, a reboot)
never does: :func:`load_manifests` notices that its process is gone and marks it
``interrupted``, so its finished cells count and the next run finishes the rest.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.pipeline.store import read_json, write_json


def runs_dir(results_dir: str | Path) -> Path:
    return Path(results_dir) / "runs"


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of ``pid`` from Linux ``/proc``; None elsewhere or when gone."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text(encoding="ascii", errors="replace")
    except (OSError, ValueError):
        return None
    fields = stat.rpartition(")")[2].split()  # after "pid (comm)": state is field 3, start 22
    return (fields[0], fields[19]) if len(fields) > 19 else None


def process_identity() -> dict[str, Any]:
    """Who runs this process: ``{"pid", "host", "start"}`` (recorded in a run's manifest)."""
    pid = os.getpid()
    stat = _proc_stat(pid)
    return {"pid": pid, "host": socket.gethostname(), "start": stat[1] if stat else None}


def process_gone(identity: Mapping[str, Any] | None) -> bool:
    """True when the process ``identity`` names ran on this host and no longer exists.

    False when unknown (no identity, another host): a run on another machine is never
    declared dead from here. A zombie, or a pid reused by a newer process (another
    start time), counts as gone.
    """
    if not isinstance(identity, Mapping):
        return False
    pid, host = identity.get("pid"), identity.get("host")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False  # exists, owned by someone else
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, start = stat
    if state == "Z":
        return True
    recorded = identity.get("start")
    return recorded is not None and str(recorded) != start


def load_manifests(results_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``{run_id: manifest}`` for every run folder that has a readable ``manifest.json``.

    A manifest still ``running`` whose process is gone (killed with SIGKILL, a crash,
    a reboot; see :func:`process_gone`) is marked ``interrupted`` on disk: its finished
    cells count, and the next ``bench run`` finishes the rest from the cache.
    """
    out: dict[str, dict[str, Any]] = {}
    root = runs_dir(results_dir)
    if not root.is_dir():
        return out
    for run_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        path = run_dir / "manifest.json"
        if not path.exists():
            continue
        try:
            manifest = read_json(path)
        except (OSError, ValueError) as exc:
            warnings.warn(f"skipping unreadable run manifest {path}: {exc}", stacklevel=2)
            continue
        if (
            isinstance(manifest, dict)
            and manifest.get("status") == "running"
            and process_gone(manifest.get("process"))
        ):
            manifest["status"] = "interrupted"
            manifest["interrupted_note"] = (
                f"process {manifest['process'].get('pid')} on {manifest['process'].get('host')} "
                f"ended without finishing the run (killed?); noticed {datetime.now(UTC).isoformat(timespec='seconds')}"
            )
            try:
                write_json(path, manifest)
            except OSError as exc:
                warnings.warn(f"cannot mark run manifest {path} interrupted: {exc}", stacklevel=2)
        manifest["_dir"] = str(run_dir)
        out[run_dir.name] = manifest
    return out
