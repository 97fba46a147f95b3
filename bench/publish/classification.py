"""The study's classification tables: per trained model, per-class precision/recall/F1/support.

Read from the model reports (``runs/<run>/models/<dataset>__<model>.json``) of the runs
that produced a leaderboard's rows; numbers in :mod:`bench.publish.text`'s format.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import pandas as pd

from bench.pipeline.store import read_json
from bench.publish.collect import run_dir_of
from bench.publish.text import format_number

#: The columns of a classification table.
HEADERS: tuple[str, ...] = ("Class", "Precision", "Recall", "F1", "Support")


def classification_tables(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Per trained model: the classification report of the run that produced its rows.

    A trained model is a (dataset, model, weights) and, where the cells recorded it, the
    model's cache key (its training inputs): rows of one model under two training recipes
    get two tables. Each item: ``{"dataset", "model", "weights", "run_id", "file",
    "headers", "rows", "accuracy", "best_epoch", "settings"}`` with per-class
    precision/recall/F1/support rows plus the macro and weighted averages; ``settings``
    lists the settings fingerprints of the rows the model produced.
    """
    out = []
    if df.empty:
        return out
    by = ["dataset", "model", "weights", *(["_model_key"] if "_model_key" in df.columns else [])]
    groups = list(df.groupby(by, sort=False))
    per_model: dict[tuple[Any, ...], int] = {}
    for key, _ in groups:
        per_model[tuple(key[:3])] = per_model.get(tuple(key[:3]), 0) + 1
    for key, group in groups:
        dataset, model, weights = key[:3]
        # the most recent run among the rows shown for this model
        row = group.sort_values("_time").iloc[-1]
        path = run_dir_of(row) / "models" / f"{dataset}__{model}.json"
        if not path.exists():
            continue
        try:
            rec = read_json(path)
        except (OSError, ValueError) as exc:
            warnings.warn(f"cannot read model report {path}: {exc}", stacklevel=2)
            continue
        cls = rec.get("classification") or {}
        per_class = cls.get("per_class") or {}
        names = cls.get("class_names") or list(per_class)
        rows = []
        for name in names:
            d = per_class.get(name) or {}
            rows.append(_cls_row(str(name), d))
        for avg in ("macro avg", "weighted avg"):
            if isinstance(cls.get(avg), Mapping):
                rows.append(_cls_row(avg, cls[avg]))
        out.append({
            "dataset": dataset, "model": model, "weights": weights, "run_id": str(row["run_id"]),
            "file": str(path), "headers": list(HEADERS), "rows": rows,
            "accuracy": cls.get("accuracy"), "best_epoch": (rec.get("training") or {}).get("best_epoch"),
            "confusion_matrix": cls.get("confusion_matrix"), "class_names": [str(n) for n in names],
            "settings": (sorted({str(k) for k in group["settings"]})
                         if "settings" in group.columns and per_model[(dataset, model, weights)] > 1 else []),
        })
    return out


def _cls_row(name: str, d: Mapping[str, Any]) -> list[str]:
    def f(key: str) -> str:
        return format_number(d.get(key))

    sup = d.get("support")
    return [name, f("precision"), f("recall"), f("f1-score"), "" if sup is None else str(int(sup))]
