"""bench.engine.memo.ModelMemo on its own (plain objects stand in for models): weak in the model,
keyed by everything a value depends on, bounded least-recently-used first, thread-safe."""

from __future__ import annotations

import gc
import hashlib
import threading
import time
import weakref

import numpy as np
import pytest

from bench.engine.memo import ModelMemo


class Model:
    """A stand-in for a model: weakly referenceable, hashed by identity, with weights."""

    def __init__(self, weights=None):
        self.weights = np.zeros(3) if weights is None else weights


class NoWeakRef:
    __slots__ = ()


def weights_version(model: Model) -> str:
    return hashlib.blake2b(np.ascontiguousarray(model.weights).tobytes(), digest_size=8).hexdigest()


def test_a_value_is_found_by_its_model_object_and_key():
    memo: ModelMemo[str] = ModelMemo()
    a, b = Model(), Model()
    assert memo.get(a, "k") is None and memo.get(a, "k", "none") == "none"
    assert memo.put(a, "k", "a-k") is True
    memo.put(a, ("k", 2), "a-k2")
    memo.put(b, "k", "b-k")
    assert memo.get(a, "k") == "a-k" and memo.get(a, ("k", 2)) == "a-k2" and memo.get(b, "k") == "b-k"
    memo.put(a, "k", "a-k again")  # a put replaces
    assert memo.get(a, "k") == "a-k again"
    assert memo.entries(a) == {"k": "a-k again", ("k", 2): "a-k2"} and memo.entries(Model()) == {}
    assert len(memo) == 3


def test_a_key_that_holds_the_weights_version_never_serves_a_stale_value():
    memo: ModelMemo[float] = ModelMemo(per_model=4)
    model = Model(np.array([1.0, 2.0]))
    memo.put(model, ("sum", weights_version(model)), float(model.weights.sum()))
    model.weights = model.weights * 3  # trained further: another version, another key
    assert memo.get(model, ("sum", weights_version(model))) is None
    memo.put(model, ("sum", weights_version(model)), float(model.weights.sum()))
    assert memo.get(model, ("sum", weights_version(model))) == 9.0
    assert len(memo.entries(model)) == 2


def test_entries_vanish_when_the_model_is_collected_and_the_memo_keeps_no_model_alive():
    memo: ModelMemo[object] = ModelMemo(per_model=2, total=3)
    model, other = Model(), Model()
    value = object()
    memo.put(model, "k", value)
    memo.put(other, "k", "other")
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None  # the memo held it weakly
    assert len(memo) == 1 and memo.entries(other) == {"k": "other"}
    # a collected model's values no longer count against the total bound
    more = [Model() for _ in range(2)]
    for m in more:
        memo.put(m, "k", "more")
    assert memo.get(other, "k") == "other" and len(memo) == 3


def test_a_value_that_holds_its_model_would_keep_it_alive():
    """The documented caveat: a value must not hold its model strongly."""
    memo: ModelMemo[object] = ModelMemo()
    model = Model()
    memo.put(model, "k", weakref.ref(model))  # the right way: a weak reference
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_the_per_model_bound_drops_the_least_recently_used_of_that_model():
    memo: ModelMemo[int] = ModelMemo(per_model=2)
    model, other = Model(), Model()
    memo.put(model, "a", 1)
    memo.put(model, "b", 2)
    memo.put(other, "x", 9)
    assert memo.get(model, "a") == 1  # "a" is now more recent than "b"
    memo.put(model, "c", 3)
    assert list(memo.entries(model)) == ["a", "c"]  # "b" went; least recently used first
    assert memo.entries(other) == {"x": 9}  # another model's values are not counted
    memo.put(model, "d", 4)
    assert list(memo.entries(model)) == ["c", "d"]


def test_the_total_bound_drops_the_least_recently_used_over_every_model():
    memo: ModelMemo[int] = ModelMemo(total=2)
    models = [Model() for _ in range(3)]
    memo.put(models[0], "k", 0)
    memo.put(models[1], "k", 1)
    assert memo.get(models[0], "k") == 0  # models[1] is now the least recently used
    memo.put(models[2], "k", 2)
    assert memo.entries(models[1]) == {}
    assert memo.get(models[0], "k") == 0 and memo.get(models[2], "k") == 2 and len(memo) == 2
    memo.put(models[2], "j", 3)  # two keys of one model count twice
    assert memo.entries(models[0]) == {} and list(memo.entries(models[2])) == ["k", "j"]


def test_entries_changes_no_recency():
    memo: ModelMemo[int] = ModelMemo(total=2)
    a, b = Model(), Model()
    memo.put(a, "k", 1)
    memo.put(b, "k", 2)
    memo.entries(a)  # a stays the least recently used
    keep = Model()
    memo.put(keep, "k", 3)
    assert memo.entries(a) == {} and memo.entries(b) == {"k": 2}


def test_an_invalid_value_is_a_miss_until_replaced():
    memo: ModelMemo[int] = ModelMemo(total=2)
    a, b = Model(), Model()
    memo.put(a, "k", 1)
    memo.put(b, "k", 2)
    assert memo.get(a, "k", valid=lambda v: v > 5) is None  # a miss, and no refresh of its recency
    assert memo.get(a, "k", valid=lambda v: v == 1) == 1
    memo.get(b, "k", valid=lambda v: False)
    memo.put(Model(), "k", 3)
    assert memo.entries(a) == {"k": 1} and memo.entries(b) == {}  # b was the least recently used


def test_a_changed_stamp_drops_the_values_of_the_old_one():
    memo: ModelMemo[str] = ModelMemo(stamp=lambda m: len(m.weights))
    model = Model(np.zeros(3))
    memo.put(model, "k", "three")
    assert memo.get(model, "k") == "three"
    model.weights = np.zeros(4)
    assert memo.entries(model) == {} and memo.get(model, "k") is None
    assert memo.get_or_build(model, "k", lambda: "four") == "four"
    assert memo.entries(model) == {"k": "four"}


def test_a_model_that_cannot_be_held_weakly_is_never_memoised():
    memo: ModelMemo[object] = ModelMemo(per_model=2, total=2)
    odd = NoWeakRef()
    assert memo.put(odd, "k", 1) is False
    assert memo.get(odd, "k", "missing") == "missing" and memo.entries(odd) == {}
    assert memo.get_or_build(odd, "k", object) is not memo.get_or_build(odd, "k", object)
    memo.forget(odd)
    assert len(memo) == 0


def test_forget_and_clear():
    memo: ModelMemo[int] = ModelMemo(total=4)
    a, b = Model(), Model()
    memo.put(a, "k", 1)
    memo.put(b, "k", 2)
    memo.forget(a)
    assert memo.entries(a) == {} and memo.entries(b) == {"k": 2}
    for i in range(3):  # the forgotten value no longer counts against the bound
        memo.put(Model() if i else b, f"n{i}", i)
    assert memo.get(b, "k") == 2
    memo.clear()
    assert len(memo) == 0 and memo.entries(b) == {}


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_a_bound_is_a_positive_integer_or_none(bad):
    with pytest.raises(ValueError, match="per_model"):
        ModelMemo(per_model=bad)
    with pytest.raises(ValueError, match="total"):
        ModelMemo(total=bad)


def test_get_or_build_builds_each_key_once_whatever_the_threads():
    memo: ModelMemo[object] = ModelMemo(per_model=8)
    models = [Model(), Model()]
    built: list[tuple[int, str]] = []
    start = threading.Barrier(12)
    results: list[tuple[int, str, object]] = []

    def build(i, key):
        def make():
            built.append((i, key))
            time.sleep(0.01)  # a slow build: the others arrive meanwhile
            return object()
        return make

    def worker(t):
        start.wait()
        for i, model in enumerate(models):
            for key in ("a", "b"):
                results.append((i, key, memo.get_or_build(model, key, build(i, key))))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(built) == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]
    for i, key, value in results:
        assert value is memo.entries(models[i])[key]


def test_get_or_build_may_consult_the_memo_while_building():
    memo: ModelMemo[int] = ModelMemo()
    model = Model()
    outer = memo.get_or_build(model, "outer", lambda: memo.get_or_build(model, "inner", lambda: 1) + 1)
    assert outer == 2 and memo.entries(model) == {"inner": 1, "outer": 2}


def test_get_and_put_from_many_threads_keep_the_bounds_and_last_put_wins():
    """The compute-outside-the-lock pattern: racing threads may both compute a key; every store is
    whole, the bounds hold, and the value kept is one that was put."""
    memo: ModelMemo[tuple[int, int]] = ModelMemo(per_model=3, total=5)
    models = [Model() for _ in range(3)]
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker(t):
        try:
            start.wait()
            for step in range(300):
                model = models[(t + step) % len(models)]
                key = step % 4
                if memo.get(model, key) is None:
                    memo.put(model, key, (t, step))
                assert len(memo) <= 5
                assert all(len(memo.entries(m)) <= 3 for m in models)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert 1 <= len(memo) <= 5
    for m in models:
        for key, (t, step) in memo.entries(m).items():
            assert step % 4 == key and models[(t + step) % len(models)] is m
