"""Classification evaluation: scikit-learn's numbers, confusion matrix, files, the text table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import classification_report, confusion_matrix

from bench.data import Split
from bench.errors import ComponentOutputError
from bench.evaluation import (
    ClassificationReport,
    evaluate_classification,
    format_report,
    report_from_probabilities,
)
from bench.pipeline.store import read_json, read_npz

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]


class FixedModel:
    """A bench-model stand-in returning scripted probabilities, counting its calls."""

    def __init__(self, probs: np.ndarray):
        self.probs = probs
        self.calls: list[int] = []
        self.keras = None

    def features_and_logits(self, images):  # pragma: no cover - not used
        raise NotImplementedError

    def predict_proba(self, images, batch_size=64):
        self.calls.append(len(images))
        assert images.dtype == np.uint8  # never the whole split as float32
        return self.probs[: len(images)]


def _case(seed: int = 0, n: int = 40):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    logits = rng.normal(size=(n, 4)) + 2.0 * np.eye(4)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    split = Split(
        images=rng.integers(0, 255, (n, 8, 8), dtype=np.uint8),
        labels=labels,
        ids=np.array([f"img{i}" for i in range(n)]),
    )
    return split, probs.astype(np.float32)


def test_numbers_are_scikit_learns():
    split, probs = _case()
    model = FixedModel(probs)
    rep = evaluate_classification(model, split, CLASSES, batch_size=16)
    assert model.calls == [len(split)]
    pred = probs.argmax(1)
    sk = classification_report(split.labels, pred, target_names=CLASSES, output_dict=True,
                               zero_division=0)
    d = rep.to_dict()
    assert d["class_names"] == CLASSES
    for c in CLASSES:
        for k in ("precision", "recall", "f1-score"):
            assert d["per_class"][c][k] == pytest.approx(sk[c][k])
        assert d["per_class"][c]["support"] == sk[c]["support"]
    assert d["accuracy"] == pytest.approx(sk["accuracy"])
    for avg in ("macro avg", "weighted avg"):
        for k in ("precision", "recall", "f1-score"):
            assert d[avg][k] == pytest.approx(sk[avg][k])
    assert d["confusion_matrix"] == confusion_matrix(split.labels, pred).tolist()
    assert rep.macro_recall == pytest.approx(sk["macro avg"]["recall"])
    assert rep.macro_f1 == pytest.approx(sk["macro avg"]["f1-score"])
    np.testing.assert_array_equal(rep.predictions, pred)
    np.testing.assert_array_equal(rep.labels, split.labels)
    np.testing.assert_allclose(rep.probabilities, probs)
    np.testing.assert_array_equal(rep.correct, np.flatnonzero(pred == split.labels))
    json.dumps(d)  # JSON-able as is


def test_absent_class_has_zero_support_not_a_crash():
    labels = np.array([0, 0, 1, 1])
    probs = np.eye(4, dtype=np.float32)[[0, 1, 1, 1]]
    rep = report_from_probabilities(probs, labels, CLASSES)
    d = rep.to_dict()
    assert d["per_class"]["Viral Pneumonia"]["support"] == 0
    assert np.array(d["confusion_matrix"]).shape == (4, 4)
    assert d["accuracy"] == pytest.approx(0.75)


def test_precomputed_probabilities_skip_the_model():
    split, probs = _case(1)
    model = FixedModel(probs)
    rep = evaluate_classification(model, split, CLASSES, probabilities=probs)
    assert model.calls == []
    assert rep.to_dict()["n"] == len(split)


def test_bad_probabilities_are_reported():
    split, probs = _case(2)
    with pytest.raises(ComponentOutputError, match=r"\(N=40, 4\)"):
        report_from_probabilities(probs[:, :3], split.labels, CLASSES)
    bad = probs.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ComponentOutputError, match="non-finite"):
        report_from_probabilities(bad, split.labels, CLASSES)


def test_format_report_looks_like_sklearns_and_study():
    split, probs = _case(3)
    rep = evaluate_classification(FixedModel(probs), split, CLASSES)
    text = format_report(rep)
    lines = text.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
    d = rep.to_dict()
    covid = next(line for line in lines if line.strip().startswith("COVID"))
    p = d["per_class"]["COVID"]
    assert covid.split()[1:] == [f"{p['precision']:.2f}", f"{p['recall']:.2f}",
                                 f"{p['f1-score']:.2f}", str(p["support"])]
    assert any(line.strip().startswith("macro avg") for line in lines)
    assert any(line.strip().startswith("weighted avg") for line in lines)
    assert "confusion matrix" in text
    assert format_report(d) == text  # also from the saved JSON form


def test_save_writes_json_text_and_predictions(tmp_path):
    split, probs = _case(4)
    rep = evaluate_classification(FixedModel(probs), split, CLASSES)
    paths = rep.save(tmp_path / "run")
    assert read_json(paths["json"]) == json.loads(json.dumps(rep.to_dict()))
    assert paths["text"].read_text().startswith(format_report(rep).splitlines()[0])
    arrays = read_npz(paths["predictions"])
    np.testing.assert_array_equal(arrays["predictions"], rep.predictions)
    np.testing.assert_allclose(arrays["probabilities"], probs)
    np.testing.assert_array_equal(arrays["ids"], split.ids)


def test_with_a_real_keras_model():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, name="conv")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4, activation="softmax")(x)
    kmodel = keras.Model(inp, out)
    split, _ = _case(5, n=10)
    rep = evaluate_classification(kmodel, split, CLASSES, batch_size=4)
    assert isinstance(rep, ClassificationReport)
    assert rep.probabilities.shape == (10, 4)
    np.testing.assert_allclose(rep.probabilities.sum(1), 1.0, atol=1e-5)
