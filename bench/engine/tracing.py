"""One memo of traced functions per Keras model: ``traced(keras_model, key, build)``.

An engine or explainer that compiles a function of a model (a gradient, a score, a CAM)
wants it traced once per model and input signature, and reused by every call, every
explainer of a family and every fresh wrapper of the same ``keras.Model``. This module
is that memo, so no plugin keeps one of its own:

* **Weak in the model.** Traces are held per Keras model in a
  :class:`weakref.WeakKeyDictionary`: when the model goes, its traces go. A built
  function must therefore not hold the model strongly (the memo would then keep it
  alive for ever): close over layers, sub-models (``model.logits_keras``) or a weak
  reference, never the ``keras.Model`` itself nor a wrapper that holds it.
* **Never stale.** A trace is found by the model *object* (never its ``id``, which a
  new model may reuse), by the model's structure (the identity of its layers, in
  order: a ``Sequential`` that gained or lost a layer loses its old traces) and by the
  caller's ``key``, whose first item names the function (``"my_plugin.gradient"``)
  and whose other items are everything the function depends on (image shape, layer,
  parameters). Two different functions never share a key, so they never share a trace.
* **Thread-safe**: lookups and builds run under one lock (building a ``tf.function``
  object is cheap; tracing happens at its first call, outside the lock), so each key is
  built once.

The memo is a :class:`bench.engine.memo.ModelMemo` (unbounded, stamped with
:func:`structure`). A model that cannot be weakly referenced gets a fresh function every
time (correct, not memoised). :func:`traces` lists a model's traces (for tests and tools);
:func:`forget` drops them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from .memo import ModelMemo

T = TypeVar("T")


def structure(keras_model: Any) -> tuple[int, ...]:
    """The identity of the model's layers, in order (a changed ``Sequential`` changes it).

    The layers are held by the model, so their ids cannot be reused while it lives.
    """
    layers = getattr(keras_model, "layers", None) or ()
    return tuple(id(layer) for layer in layers)


def check_key(key: Any) -> tuple[Hashable, ...]:
    """``key`` as a hashable tuple whose first item (a non-empty str) names the function."""
    if not isinstance(key, tuple) or not key or not isinstance(key[0], str) or not key[0]:
        raise TypeError(
            f"a trace key is a tuple whose first item names the function, e.g. "
            f"('my_plugin.gradient', image_shape), got {key!r}"
        )
    try:
        hash(key)
    except TypeError as exc:
        raise TypeError(f"a trace key must be hashable, got {key!r} ({exc})") from None
    return key


#: Keras model (weakly) -> {key: function}, dropped when the model's structure changes
_MEMO: ModelMemo[Any] = ModelMemo(stamp=structure)


def traced(keras_model: Any, key: tuple[Hashable, ...], build: Callable[[], T]) -> T:
    """The function ``build()`` made for ``keras_model`` under ``key``, built at the first call.

    ``key``: a tuple, first the function's name, then everything it depends on beside the
    model (shapes, layer, parameters). ``build()`` must not hold ``keras_model`` strongly
    (see the module's docstring).
    """
    return _MEMO.get_or_build(keras_model, check_key(key), build)


def traces(keras_model: Any, name: str | None = None) -> dict[tuple[Hashable, ...], Any]:
    """A copy of the model's traces by key (only those whose key starts with ``name``, if given)."""
    return {k: fn for k, fn in _MEMO.entries(keras_model).items() if name is None or k[0] == name}


def forget(keras_model: Any) -> None:
    """Drop every trace of ``keras_model`` (the next call traces afresh)."""
    _MEMO.forget(keras_model)


class _OwnFunction:
    """``fn`` behind an object of its own (see :func:`graph_function`); no ``__wrapped__`` on purpose."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def graph_function(fn: Callable[..., Any], **tf_function_kwargs: Any) -> Any:
    """``tf.function(fn, **kwargs)``, its traces counted for this function alone.

    TensorFlow counts traces per *code object* (``fn.__code__``) to warn about frequent
    retracing, so closures built once per model (a gradient, a CAM, an engine graph) that
    are each traced once add up, over a few models, to a false "N out of the last N calls
    ... triggered tf.function retracing" warning. Wrapped in an object of its own (which has
    no ``__code__``), each function is counted on its own: a real retrace still warns.
    """
    import tensorflow as tf

    return tf.function(_OwnFunction(fn), **tf_function_kwargs)
