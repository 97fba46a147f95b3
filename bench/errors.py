"""Exceptions of bench. Every message names the culprit: a file, a key, a plugin."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchError(Exception):
    """Base class: an error with a message meant for the user."""


class ConfigError(BenchError):
    """A config key, type or value is wrong."""


class PluginError(BenchError):
    """A plugin failed to load or register, or registered something wrong."""


class PluginConflictError(PluginError):
    """Two plugins registered the same component name: the name is unavailable until one goes."""


class InvalidNameError(BenchError, ValueError):
    """A component name that could become a path or markup (see :mod:`bench.plugin.names`)."""


class UnsafePathError(BenchError, ValueError):
    """A file name built from component names would leave its folder."""


class UnknownComponentError(BenchError, KeyError):
    """``create``/config asked for a component name nobody registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DataError(BenchError):
    """A dataset folder or file is missing, malformed or corrupt."""


class WeightsError(BenchError):
    """Model weights are missing, corrupt or cannot be fetched."""


class ComponentOutputError(BenchError):
    """A component returned a wrong shape, dtype or non-finite values."""


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``word``, or None if nothing is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or an empty string."""
    match = closest(word, candidates)
    return f" (did you mean {match!r}?)" if match else ""
