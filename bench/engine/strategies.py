"""The forward strategies by name: ``full`` (:mod:`bench.engine.forward`), ``incremental`` and
``auto`` (:mod:`bench.engine.incremental`). The one module that knows both, so neither imports the other's
caller (no import cycle)."""

from __future__ import annotations

from typing import Any

from bench.engine.forward import ForwardStrategy, FullForward
from bench.engine.incremental import IncrementalForward
from bench.errors import ConfigError, did_you_mean


def _incremental(mode: str) -> Any:
    def make() -> Any:
        return IncrementalForward(mode=mode)

    return make


STRATEGIES: dict[str, Any] = {
    "full": FullForward,
    "incremental": _incremental("incremental"),
    "auto": _incremental("auto"),
}


def get_strategy(strategy: str | ForwardStrategy) -> ForwardStrategy:
    """A strategy instance from a name (``"full"``, ``"incremental"``, ``"auto"``) or an object.

    ``"incremental"`` reuses the previous step's activations, all rows of a batch updated in
    lockstep (:mod:`bench.engine.incremental`); ``"auto"`` starts with it where the model and
    perturbation allow a real predicted gain and with full passes otherwise, then checks the
    choice against measured throughput after the first batches and switches if it was wrong;
    a Keras graph it cannot walk, an unsupported layer or a failure at run time mean full
    passes. The choice, the reason and the measured numbers are in the strategy's ``info``
    (``AOPCResult.strategy_info``).
    """
    if isinstance(strategy, str):
        key = strategy.lower()
        if key not in STRATEGIES:
            raise ConfigError(
                f"unknown forward strategy {strategy!r}{did_you_mean(key, STRATEGIES)}; "
                f"strategies: {', '.join(sorted(STRATEGIES))}"
            )
        return STRATEGIES[key]()
    if not (hasattr(strategy, "forward") and hasattr(strategy, "prepare")):
        raise ConfigError(
            f"strategy must be a name ({', '.join(sorted(STRATEGIES))}) or an object with "
            f"prepare() and forward(), got {type(strategy).__name__}"
        )
    return strategy


def strategy_name(strategy: Any) -> str:
    return str(getattr(strategy, "name", type(strategy).__name__))
