"""A memo of values per model object: :class:`ModelMemo`.

Several parts of a run derive something costly from a model and reuse it for every call on
that model: a traced function, a clone, a table of the model's outputs. Each such memo has
the same four needs, met here once:

* **Weak in the model.** Values are held per model object in a
  :class:`weakref.WeakKeyDictionary`: when the model is garbage-collected its values go
  with it, and the memo never keeps a model alive. A value must therefore not hold its
  model strongly (the memo would then keep both for ever). A model that cannot be held
  weakly (or hashed) is never memoised: :meth:`ModelMemo.get` misses, :meth:`ModelMemo.put`
  stores nothing and says so, :meth:`ModelMemo.get_or_build` builds afresh every time.
* **Keyed by everything the value depends on.** Beside the model object (found by its hash
  and equality: identity for a Keras model, never its ``id``, which a new model may reuse),
  the caller's hashable ``key`` holds every other input of the value: shapes, parameters,
  a digest of the model's current weights where the value depends on them. An optional
  ``stamp(model)`` is checked at every access: a model whose stamp changed (its layers, say)
  loses every value made under the old stamp. A ``valid(value)`` predicate given to
  :meth:`ModelMemo.get` turns a value that no longer fits its model into a miss.
* **Bounded, least recently used first.** ``per_model`` bounds the values kept per model,
  ``total`` those kept in all, over every model; a hit (:meth:`~ModelMemo.get`,
  :meth:`~ModelMemo.get_or_build`) makes a value the most recently used, and a store beyond
  a bound drops the least recently used. ``None``: unbounded.
* **Thread-safe.** Every lookup, store and eviction runs under the memo's own (re-entrant)
  lock. Two ways to fill it:

  - ``get`` then ``put``: the caller computes outside the lock (a long computation never
    blocks the memo); two threads that miss the same key at once both compute, and the
    later ``put`` replaces the earlier one (use it for values that are equal whoever
    computes them).
  - :meth:`~ModelMemo.get_or_build`: ``build()`` runs under the lock, so each key is built
    once, whatever the threads (use it for cheap builds; ``build`` may consult the memo).

:meth:`~ModelMemo.entries` lists a model's values (for tests and tools), :meth:`~ModelMemo.forget`
drops them, :meth:`~ModelMemo.clear` drops all.
"""

from __future__ import annotations

import numbers
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

V = TypeVar("V")

_MISSING = object()


class _Table(Generic[V]):
    """One model's values (least recently used first) and the stamp they were made under."""

    __slots__ = ("stamp", "values")

    def __init__(self, stamp: Hashable):
        self.stamp = stamp
        self.values: OrderedDict[Hashable, V] = OrderedDict()


def _check_bound(value: int | None, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1 or None, got {value!r}")
    return int(value)


class ModelMemo(Generic[V]):
    """Values memoised per model object: weak in the model, keyed, bounded (LRU), thread-safe.

    Parameters
    ----------
    per_model:
        The most values kept per model (default ``None``: no bound).
    total:
        The most values kept in all, over every model (default ``None``: no bound).
    stamp:
        ``stamp(model) -> hashable``, checked at every access: the values of a model whose
        stamp changed are dropped (default ``None``: no stamp).

    See the module's docstring for the contract.
    """

    def __init__(self, *, per_model: int | None = None, total: int | None = None,
                 stamp: Callable[[Any], Hashable] | None = None):
        self.per_model = _check_bound(per_model, "per_model")
        self.total = _check_bound(total, "total")
        self.stamp = stamp
        self._tables: weakref.WeakKeyDictionary[Any, _Table[V]] = weakref.WeakKeyDictionary()
        #: (weak reference to the model, key) of every value, least recently used first (kept for ``total``)
        self._order: OrderedDict[tuple[weakref.ref[Any], Hashable], None] = OrderedDict()
        self._lock = threading.RLock()

    # ---- internals (under the lock) ----------------------------------------------------------
    def _stamp_of(self, model: Any) -> Hashable:
        return None if self.stamp is None else self.stamp(model)

    def _table(self, model: Any, stamp: Hashable, create: bool) -> _Table[V] | None:
        """The model's table (made when ``create``), or None; raises TypeError for a model that
        cannot be held weakly (or hashed). A table made under another stamp is dropped."""
        table = self._tables.get(model)
        if table is not None and table.stamp != stamp:
            self._drop(model, table)
            table = None
        if table is None and create:
            table = self._tables[model] = _Table(stamp)
        return table

    def _drop(self, model: Any, table: _Table[V]) -> None:
        ref = weakref.ref(model)
        for key in table.values:
            self._order.pop((ref, key), None)
        self._tables.pop(model, None)

    def _touch(self, model: Any, table: _Table[V], key: Hashable) -> None:
        """``key`` of ``model`` becomes the most recently used."""
        table.values.move_to_end(key)
        if self.total is not None:  # the order over every model serves the total bound alone
            token = (weakref.ref(model), key)
            self._order[token] = None
            self._order.move_to_end(token)

    def _store(self, model: Any, table: _Table[V], key: Hashable, value: V) -> None:
        table.values[key] = value
        self._touch(model, table, key)
        if self.per_model is not None:
            while len(table.values) > self.per_model:
                old, _ = table.values.popitem(last=False)
                self._order.pop((weakref.ref(model), old), None)
        for dead in [t for t in self._order if t[0]() is None]:  # models collected since
            del self._order[dead]
        if self.total is not None:
            while len(self._order) > self.total:
                (ref, old), _ = self._order.popitem(last=False)
                owner = ref()
                owner_table = None if owner is None else self._tables.get(owner)
                if owner_table is not None:
                    owner_table.values.pop(old, None)
                    if not owner_table.values:
                        self._tables.pop(owner, None)

    # ---- the memo ---------------------------------------------------------------------------
    def get(self, model: Any, key: Hashable, default: Any = None, *,
            valid: Callable[[V], bool] | None = None) -> Any:
        """The value memoised for ``model`` under ``key`` (now the most recently used), else ``default``.

        ``valid(value)`` (called under the lock): False makes the value a miss (it stays
        until a ``put`` of the same key replaces it, or the bounds drop it).
        """
        stamp = self._stamp_of(model)
        with self._lock:
            try:
                table = self._table(model, stamp, create=False)
            except TypeError:  # cannot be held weakly: never memoised
                return default
            if table is None:
                return default
            value = table.values.get(key, _MISSING)
            if value is _MISSING or (valid is not None and not valid(value)):
                return default
            self._touch(model, table, key)
            return value

    def put(self, model: Any, key: Hashable, value: V) -> bool:
        """Memoise ``value`` for ``model`` under ``key`` (replacing any), dropping the least recently
        used beyond the bounds. False (nothing stored) where the model cannot be held weakly."""
        stamp = self._stamp_of(model)
        with self._lock:
            try:
                table = self._table(model, stamp, create=True)
            except TypeError:
                return False
            assert table is not None
            self._store(model, table, key, value)
            return True

    def get_or_build(self, model: Any, key: Hashable, build: Callable[[], V]) -> V:
        """The value memoised for ``model`` under ``key``, ``build()`` (under the lock: once per key)
        where there is none; a model that cannot be held weakly gets ``build()`` every time."""
        stamp = self._stamp_of(model)
        with self._lock:
            try:
                table = self._table(model, stamp, create=True)
            except TypeError:
                return build()
            assert table is not None
            value = table.values.get(key, _MISSING)
            if value is _MISSING:
                value = build()
                self._store(model, table, key, value)
            else:
                self._touch(model, table, key)
            return value  # type: ignore[return-value]

    def entries(self, model: Any) -> dict[Hashable, V]:
        """A copy of ``model``'s values by key, least recently used first (for tests and tools);
        changes no recency."""
        stamp = self._stamp_of(model)
        with self._lock:
            try:
                table = self._tables.get(model)
            except TypeError:
                return {}
            if table is None or table.stamp != stamp:
                return {}
            return dict(table.values)

    def forget(self, model: Any) -> None:
        """Drop every value of ``model``."""
        with self._lock:
            try:
                table = self._tables.get(model)
            except TypeError:
                return
            if table is not None:
                self._drop(model, table)

    def clear(self) -> None:
        """Drop every value of every model."""
        with self._lock:
            self._tables.clear()
            self._order.clear()

    def __len__(self) -> int:
        """The values kept, over every live model."""
        with self._lock:
            return sum(len(t.values) for t in list(self._tables.values()))
