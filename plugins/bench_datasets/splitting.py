"""Stratified train/val/test splitting shared by the built-in datasets.

The rounding rule (documented, and the reason the study's numbers come out):
each split first gets ``floor(n * fraction)`` items; the items left over by the
flooring go one each to the splits with the largest fractional remainders,
ties going to the *later* split (test before val before train). For the
reference study, 1345 images per class with (0.8, 0.1, 0.1) give
``floor`` = 1076 / 134 / 134, one left over, remainders 0.0 / 0.5 / 0.5, the tie
goes to test: **1076 / 134 / 135** per class, 4304 / 536 / 540 in all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bench.data import SPLIT_NAMES
from bench.errors import ConfigError

_EPS = 1e-9

ROUNDING_RULE = (
    "per class, each split gets floor(n * fraction); the items left over go one each to the "
    "splits with the largest fractional remainders, ties to the later split (test, then val, "
    "then train): 1345 per class with (0.8, 0.1, 0.1) -> 1076 / 134 / 135"
)


def check_fractions(split: Sequence[float], *, where: str) -> tuple[float, float, float]:
    """Validate split fractions: three non-negative numbers summing to 1."""
    try:
        fractions = tuple(float(f) for f in split)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where}: 'split' must be three fractions (train, val, test), got {split!r}"
        ) from None
    if len(fractions) != len(SPLIT_NAMES):
        raise ConfigError(
            f"{where}: 'split' must have three fractions (train, val, test), got {split!r}"
        )
    if any(not math.isfinite(f) or f < 0 for f in fractions):
        raise ConfigError(f"{where}: 'split' fractions must be >= 0, got {split!r}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(f"{where}: 'split' fractions must sum to 1, got {split!r} (sum {sum(fractions):g})")
    if fractions[0] <= 0:
        raise ConfigError(f"{where}: 'split' train fraction must be > 0, got {split!r}")
    return fractions  # type: ignore[return-value]


def split_counts(n: int, fractions: Sequence[float]) -> tuple[int, ...]:
    """How many of ``n`` items each split gets (see the module docstring for the rule).

    >>> split_counts(1345, (0.8, 0.1, 0.1))
    (1076, 134, 135)
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    exact = [n * f for f in fractions]
    counts = [math.floor(e + _EPS) for e in exact]
    left = n - sum(counts)
    # largest remainder first; among equal remainders the later split first
    remainders = [(round(e - c, 9), i) for i, (e, c) in enumerate(zip(exact, counts, strict=True))]
    order = sorted(
        (r for r in remainders if fractions[r[1]] > 0), key=lambda r: (r[0], r[1]), reverse=True
    )
    for k in range(left):
        counts[order[k % len(order)][1]] += 1
    return tuple(counts)


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float], seed_sequence: np.random.SeedSequence
) -> dict[str, np.ndarray]:
    """Indices of each split, per class shuffled with a seeded generator, then cut by
    :func:`split_counts`. Within a split the indices are sorted (class-major order when
    ``labels`` is sorted by class)."""
    labels = np.asarray(labels)
    out: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    classes = np.unique(labels)
    children = seed_sequence.spawn(int(classes.max()) + 1 if len(classes) else 0)
    for c in classes:
        idx = np.flatnonzero(labels == c)
        rng = np.random.default_rng(children[int(c)])
        idx = idx[rng.permutation(len(idx))]
        start = 0
        for name, count in zip(SPLIT_NAMES, split_counts(len(idx), fractions), strict=True):
            out[name].append(np.sort(idx[start : start + count]))
            start += count
    return {
        name: (np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)).astype(np.int64)
        for name, parts in out.items()
    }
