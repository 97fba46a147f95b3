"""The figure memo: a figure is drawn once per content, copied afterwards, never stale."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _fake_runs import FakeCell, write_run

from bench.publish import figure_cache as fc
from bench.publish import figures as fg


def _digest(obj) -> str:
    h = hashlib.sha256()
    fc._feed(h, obj)
    return h.hexdigest()


def _matrix(v: float = 0.5) -> pd.DataFrame:
    return pd.DataFrame([[1.0, v], [v, 1.0]], index=["aopc", "abpc"], columns=["aopc", "abpc"])


@pytest.fixture()
def drawn(monkeypatch):
    """Counts the agreement figures actually drawn."""
    calls = []
    real = fg.agreement_figure

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fg, "agreement_figure", counting)
    return calls


def test_a_figure_is_drawn_once_per_content_and_copied_after(tmp_path, drawn):
    memo = tmp_path / "memo"
    with fc.figure_cache(memo):
        a = fg.plot_agreement(_matrix(), tmp_path / "a.png", title="t")
        b = fg.plot_agreement(_matrix(), tmp_path / "out" / "b.png", title="t")
        assert len(drawn) == 1 and a.read_bytes() == b.read_bytes() and b == tmp_path / "out" / "b.png"
        fg.plot_agreement(_matrix(0.25), tmp_path / "c.png", title="t")  # other numbers
        fg.plot_agreement(_matrix(), tmp_path / "d.png", title="another title")  # another option
        fg.plot_agreement(_matrix(), tmp_path / "e.webp", title="t")  # another format
        assert len(drawn) == 4
    assert len(list(memo.iterdir())) == 4
    fg.plot_agreement(_matrix(), tmp_path / "f.png", title="t")  # outside: no memo, drawn
    assert len(drawn) == 5
    with fc.figure_cache(None):
        fg.plot_agreement(_matrix(), tmp_path / "g.png", title="t")
    assert len(drawn) == 6


def test_an_empty_or_lost_memo_entry_is_drawn_again(tmp_path, drawn):
    memo = tmp_path / "memo"
    with fc.figure_cache(memo):
        fg.plot_agreement(_matrix(), tmp_path / "a.png", title="t")
        (entry,) = memo.iterdir()
        entry.write_bytes(b"")
        fg.plot_agreement(_matrix(), tmp_path / "b.png", title="t")
        entry.unlink()
        fg.plot_agreement(_matrix(), tmp_path / "c.png", title="t")
    assert len(drawn) == 3
    assert (tmp_path / "c.png").read_bytes() == (tmp_path / "a.png").read_bytes()


def test_the_fingerprint_sees_values_types_and_order():
    assert _digest([1, 2]) != _digest([2, 1])
    assert _digest([1]) != _digest(["1"]) != _digest([1.0])
    assert _digest({"a": 1, "b": 2}) != _digest({"b": 2, "a": 1})  # mapping order is panel order
    assert _digest(np.zeros(3, np.float32)) != _digest(np.zeros(3, np.float64))
    assert _digest(np.zeros((2, 3))) != _digest(np.zeros((3, 2)))
    assert _digest(float("nan")) == _digest(float("nan"))
    df = pd.DataFrame({"x": [1.0, 2.0]})
    assert _digest(df) != _digest(df.rename(columns={"x": "y"})) != _digest(pd.DataFrame({"x": [1.0, 2.5]}))
    assert _digest(("a", None)) != _digest(["a", None])
    with pytest.raises(fc.Unhashable):
        _digest(object())
    with pytest.raises(fc.Unhashable):
        _digest(Path("x.npz"))


def test_an_argument_it_cannot_fingerprint_turns_the_memo_off(tmp_path):
    calls = []

    @fc.memoised_figure()
    def plot(data, path):
        calls.append(1)
        Path(path).write_bytes(b"png")
        return Path(path)

    with fc.figure_cache(tmp_path / "memo"):
        plot(object(), tmp_path / "a.png")
        plot(object(), tmp_path / "b.png")
        plot([1], tmp_path / "c.png")
        plot([1], tmp_path / "d.png")
    assert len(calls) == 3  # both unfingerprintable calls drawn, the second [1] copied
    assert len(list((tmp_path / "memo").iterdir())) == 1


def test_a_republish_draws_nothing_and_gives_the_same_figures(tmp_path, monkeypatch):
    from bench.publish.leaderboard import build

    write_run(tmp_path, "run-1", [
        FakeCell("covid", "vgg16", "gradcam", per_image=[0.3, 0.4, 0.2, 0.5, 0.35, 0.3, 0.45, 0.25]),
        FakeCell("covid", "vgg16", "random", per_image=[0.2, 0.25, 0.1, 0.3, 0.15, 0.22, 0.18, 0.2]),
    ])
    build(tmp_path, formats=("md",))
    first = {p.name: p.read_bytes() for p in (tmp_path / "figures").iterdir()}
    assert any(n.startswith("curves__") for n in first)
    encoded = []
    real = fg.encode_figure
    monkeypatch.setattr(fg, "encode_figure", lambda *a, **k: encoded.append(1) or real(*a, **k))
    build(tmp_path, formats=("md",))
    assert encoded == []  # every figure came from the memo
    assert {p.name: p.read_bytes() for p in (tmp_path / "figures").iterdir()} == first
    assert (tmp_path / "cache" / "figures").is_dir()
