"""Rows of the README's performance table, declared by the benchmarks that measure them.

A benchmark calls :func:`readme_row` with what it measured (a ratio from one run, against
raw inference or a peer timed in the same run); the row lands in pytest-benchmark's
``extra_info["readme"]`` and so in ``--benchmark-json``. ``tests/benchmarks/readme_table.py``
turns the rows of one such JSON file into the README's table, so the table is always one
run's numbers and never typed by hand.
"""

from __future__ import annotations

from typing import Any


def readme_row(benchmark: Any, what: str, value: float, *, unit: str = "x", goal: str = "",
               detail: str = "") -> None:
    """Declare one row of the README's performance table for this benchmark.

    what: the comparison in words (``"AOPC engine vs raw model(x), VGG16 128 px"``).
    value: the measured ratio (``unit`` ``"x"``: printed ``5.21x``; ``""``: ``0.98``).
    goal: the target, as the issue or design states it (``">= 8x"``), or empty.
    detail: a short note (images, steps, max |dp|).
    """
    rows = benchmark.extra_info.setdefault("readme", [])
    rows.append({"what": str(what), "value": float(value), "unit": str(unit), "goal": str(goal),
                 "detail": str(detail)})
