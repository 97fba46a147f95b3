"""Classification evaluation on a split: scikit-learn's classification report, confusion matrix.

The leaderboard's "recall" and "F1" are the macro averages (the study's
0.86/0.86 for VGG16 and 0.88/0.88 for DenseNet201 are macro). The explanation
stage uses :attr:`ClassificationReport.correct` (the correctly classified images)
with targets = :attr:`ClassificationReport.predictions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import Split
from bench.errors import ComponentOutputError
from bench.pipeline.store import write_json, write_npz


@dataclass
class ClassificationReport:
    """Per-class precision/recall/F1/support, accuracy, averages, confusion matrix."""

    class_names: list[str]
    labels: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        from sklearn.metrics import classification_report, confusion_matrix

        idx = list(range(len(self.class_names)))
        self._sk = classification_report(
            self.labels, self.predictions, labels=idx, target_names=list(self.class_names),
            output_dict=True, zero_division=0,
        )
        self._cm = confusion_matrix(self.labels, self.predictions, labels=idx)

    # ---- numbers ---------------------------------------------------------------------
    @property
    def accuracy(self) -> float:
        return float(np.mean(self.labels == self.predictions)) if len(self.labels) else float("nan")

    @property
    def macro_recall(self) -> float:
        return float(self._sk["macro avg"]["recall"])

    @property
    def macro_f1(self) -> float:
        return float(self._sk["macro avg"]["f1-score"])

    @property
    def macro_precision(self) -> float:
        return float(self._sk["macro avg"]["precision"])

    @property
    def confusion_matrix(self) -> np.ndarray:
        return self._cm

    @property
    def correct(self) -> np.ndarray:
        """Indices (into the split) of the correctly classified images."""
        return np.flatnonzero(self.labels == self.predictions)

    def to_dict(self) -> dict[str, Any]:
        per_class = {
            c: {k: float(v) if k != "support" else int(v) for k, v in self._sk[c].items()}
            for c in self.class_names
        }

        def avg(name: str) -> dict[str, Any]:
            d = self._sk[name]
            return {k: float(v) if k != "support" else int(v) for k, v in d.items()}

        return {
            "class_names": list(self.class_names),
            "per_class": per_class,
            "accuracy": self.accuracy,
            "macro avg": avg("macro avg"),
            "weighted avg": avg("weighted avg"),
            "confusion_matrix": self._cm.astype(int).tolist(),
            "n": int(len(self.labels)),
            "n_correct": int(len(self.correct)),
        }

    # ---- persistence -----------------------------------------------------------------
    def save(self, folder: str | Path, *, stem: str = "classification") -> dict[str, Path]:
        """``<stem>.json`` (the report), ``<stem>.txt`` (the table), ``predictions.npz``."""
        folder = Path(folder)
        paths = {
            "json": folder / f"{stem}.json",
            "text": folder / f"{stem}.txt",
            "predictions": folder / "predictions.npz",
        }
        write_json(paths["json"], self.to_dict())
        from bench.pipeline.store import atomic_write_text

        atomic_write_text(paths["text"], format_report(self) + "\n")
        arrays: dict[str, np.ndarray] = {
            "labels": self.labels.astype(np.int64),
            "predictions": self.predictions.astype(np.int64),
            "probabilities": self.probabilities.astype(np.float32),
        }
        if self.ids is not None:
            arrays["ids"] = np.asarray(self.ids).astype(str)
        write_npz(paths["predictions"], **arrays)
        return paths


def report_from_probabilities(
    probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
    ids: np.ndarray | None = None,
) -> ClassificationReport:
    """A report from precomputed probabilities (e.g. the trainer's cached test features)."""
    probs = np.asarray(probabilities, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = len(class_names)
    if probs.ndim != 2 or probs.shape != (len(labels), n_classes):
        raise ComponentOutputError(
            f"probabilities must be (N={len(labels)}, {n_classes}) for classes "
            f"{list(class_names)}, got {probs.shape}"
        )
    if not np.all(np.isfinite(probs)):
        raise ComponentOutputError("model returned non-finite probabilities")
    return ClassificationReport(
        class_names=list(class_names),
        labels=labels,
        predictions=probs.argmax(axis=1).astype(np.int64),
        probabilities=probs,
        ids=ids,
    )


def evaluate_classification(
    model: Any, split: Split, class_names: Sequence[str], *, batch_size: int = 64,
    probabilities: np.ndarray | None = None,
) -> ClassificationReport:
    """Predict ``split`` with ``model`` (batched) and score it.

    ``probabilities``: reuse precomputed ones (e.g. ``TrainingReport.test_probabilities``)
    instead of running the model again.
    """
    if probabilities is None:
        from bench.models import as_bench_model

        bm = as_bench_model(model)
        if len(split):
            probabilities = bm.predict_proba(split.images, batch_size=batch_size)
        else:
            probabilities = np.zeros((0, len(class_names)), np.float32)
    return report_from_probabilities(probabilities, split.labels, class_names, ids=split.ids)


def format_report(report: ClassificationReport | dict[str, Any], *, digits: int = 2) -> str:
    """A text table like scikit-learn's / the study's, plus the confusion matrix."""
    d = report.to_dict() if isinstance(report, ClassificationReport) else report
    names = list(d["class_names"])
    rows = [*names, "macro avg", "weighted avg"]
    width = max(len(r) for r in [*rows, "accuracy"])
    head = f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"
    lines = [head, ""]

    def line(label: str, m: dict[str, Any]) -> str:
        return (
            f"{label:>{width}} {m['precision']:>9.{digits}f} {m['recall']:>9.{digits}f} "
            f"{m['f1-score']:>9.{digits}f} {int(m['support']):>9d}"
        )

    for c in names:
        lines.append(line(c, d["per_class"][c]))
    lines.append("")
    total = int(d["macro avg"]["support"])
    lines.append(f"{'accuracy':>{width}} {'':>9} {'':>9} {d['accuracy']:>9.{digits}f} {total:>9d}")
    lines.append(line("macro avg", d["macro avg"]))
    lines.append(line("weighted avg", d["weighted avg"]))
    cm = d.get("confusion_matrix")
    if cm:
        lines += ["", "confusion matrix (rows: true, columns: predicted)"]
        cw = max(6, *(len(c) for c in names), *(len(str(v)) for r in cm for v in r))
        lines.append(f"{'':>{width}} " + " ".join(f"{c:>{cw}}" for c in names))
        for c, r in zip(names, cm, strict=True):
            lines.append(f"{c:>{width}} " + " ".join(f"{v:>{cw}d}" for v in r))
    return "\n".join(lines)


__all__ = [
    "ClassificationReport",
    "evaluate_classification",
    "format_report",
    "report_from_probabilities",
]
