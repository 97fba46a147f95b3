"""Metrics over perturbation curves ``f(x^(k))``, k = 0..L (curves (N, L+1) of one order).

Each reads the curves its spec declares (``data.curve("morf")``) and returns its
per-image headline column (N,). A curve with a non-finite point gives a
non-finite value, which the harness leaves out of the statistics (and counts).

The metrics with a ``perturbation`` parameter (ROAD's, insertion) read curves under that
perturbation whatever the cell's (``""``: the cell's); their specs say so with
``perturbation_param="perturbation"``, and the run computes those curves once per cell,
shared with the cell whose perturbation it is. Their own ``compute`` runs no forward pass
(``forward_passes()`` is 0): what they cost is their curves'.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _curves(curves: Any, name: str) -> np.ndarray:
    c = np.asarray(curves, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] < 2:
        raise ValueError(f"{name}: curves must be (N, L+1) with L >= 1, got shape {c.shape}")
    return c


def aopc_per_image(curves: Any) -> np.ndarray:
    """``sum_{k=1..L} (f_0 - f_k) / (L+1)`` per image (N,), from curves (N, L+1)."""
    c = _curves(curves, "aopc")
    return (c[:, :1] - c[:, 1:]).sum(axis=1) / c.shape[1]


def abpc_per_image(morf_curves: Any, lerf_curves: Any) -> np.ndarray:
    """``sum_{k=1..L} (f_LeRF^(k) - f_MoRF^(k)) / (L+1)`` per image (N,): the area between the curves."""
    m, lr = _curves(morf_curves, "abpc"), _curves(lerf_curves, "abpc")
    if m.shape != lr.shape:
        raise ValueError(
            f"abpc needs MoRF and LeRF curves of the same shape (N, L+1), got {m.shape} and {lr.shape}"
        )
    return (lr[:, 1:] - m[:, 1:]).sum(axis=1) / m.shape[1]


def deletion_auc_per_image(curves: Any) -> np.ndarray:
    """The mean of ``f(x^(k))`` over k = 0..L per image (rectangle rule, width 1/(L+1))."""
    return _curves(curves, "deletion-auc").mean(axis=1)


def insertion_auc_per_image(curves: Any) -> np.ndarray:
    """The mean of ``f(x^(k))`` over k = 0..L of insertion curves (x^(0) fully perturbed, x^(L)
    the original), per image: the same rectangle rule as the deletion AUC."""
    return _curves(curves, "insertion-auc").mean(axis=1)


def check_perturbation_name(value: Any, what: str = "perturbation") -> None:
    """``value`` is ``""`` (the cell's) or a registered perturbation (else a ValueError with a did-you-mean)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be the name of a registered perturbation or \"\" (the cell's), got {value!r}")
    if value:
        import bench

        bench.registry().get("perturbation", value)  # an unknown name: "did you mean"


class _NoPasses:
    def forward_passes(self) -> float:
        """Its own compute runs no forward pass (its curves' cost is the curves stage's)."""
        return 0.0


class AOPC(_NoPasses):
    """Area over the MoRF perturbation curve (the reference study's measure).

    Higher = perturbing the heatmap's most relevant regions first hurts the
    prediction more: the heatmap is more faithful.
    """

    order = "morf"
    column = "aopc"

    def get_params(self) -> dict[str, Any]:
        return {}

    def compute(self, data: Any) -> dict[str, np.ndarray]:
        return {self.column: aopc_per_image(data.curve(self.order))}


class LeRFAOPC(AOPC):
    """AOPC of the LeRF curve (least relevant regions first). Lower = more faithful."""

    order = "lerf"
    column = "lerf-aopc"


class ABPC(_NoPasses):
    """Area between the LeRF and MoRF curves. Higher = more faithful."""

    column = "abpc"

    def get_params(self) -> dict[str, Any]:
        return {}

    def compute(self, data: Any) -> dict[str, np.ndarray]:
        return {self.column: abpc_per_image(data.curve("morf"), data.curve("lerf"))}


class _OnPerturbation:
    """A curve metric whose curves are under the perturbation its ``perturbation`` parameter names."""

    default_perturbation = ""

    def __init__(self, *, perturbation: str | None = None):
        self.perturbation = self.default_perturbation if perturbation is None else perturbation

    def get_params(self) -> dict[str, Any]:
        return {"perturbation": self.perturbation}

    def validate(self) -> None:
        check_perturbation_name(self.perturbation)


class RoadAOPC(_OnPerturbation, AOPC):
    """AOPC of the MoRF curve under ROAD's noisy linear imputation (Rong et al. 2022). Higher = more faithful.

    Parameters
    ----------
    perturbation:
        The perturbation of its curves (default ``"road"``; ``""``: the cell's).
    """

    default_perturbation = "road"
    column = "road-aopc"

    def __init__(self, *, perturbation: str = "road"):
        super().__init__(perturbation=perturbation)


class RoadLeRFAOPC(_OnPerturbation, LeRFAOPC):
    """AOPC of the LeRF curve under ROAD's imputation (least relevant first). Lower = more faithful.

    Parameters
    ----------
    perturbation:
        The perturbation of its curves (default ``"road"``; ``""``: the cell's).
    """

    default_perturbation = "road"
    column = "road-lerf-aopc"

    def __init__(self, *, perturbation: str = "road"):
        super().__init__(perturbation=perturbation)


class RoadABPC(_OnPerturbation, ABPC):
    """ROAD's combination: the area between its LeRF and MoRF curves (LeRF minus MoRF). Higher = more faithful.

    Parameters
    ----------
    perturbation:
        The perturbation of its curves (default ``"road"``; ``""``: the cell's).
    """

    default_perturbation = "road"
    column = "road-abpc"

    def __init__(self, *, perturbation: str = "road"):
        super().__init__(perturbation=perturbation)


class InsertionAUC(_OnPerturbation, _NoPasses):
    """Insertion (Petsiuk et al. 2018): the area under the curve of ``f`` as the regions are
    restored in MoRF order into the fully perturbed image. Higher = more faithful (the
    probability comes back fast when the most relevant regions come first).

    ``compute(data)`` -> ``insertion-auc`` (N,), the mean of ``f(x^(k))`` over k = 0..L (the
    rectangle rule of the deletion AUC), and ``baseline`` (N,), ``f`` of the fully perturbed
    image (x^(0)): near the original's, the perturbation leaves the signal in (additive noise
    does; the default blur, the paper's, removes it).

    Parameters
    ----------
    perturbation:
        The perturbation of its curves (default ``"blur"``, as in the paper; ``""``: the cell's).
    """

    default_perturbation = "blur"

    def __init__(self, *, perturbation: str = "blur"):
        super().__init__(perturbation=perturbation)

    def compute(self, data: Any) -> dict[str, np.ndarray]:
        curves = _curves(data.curve("insertion"), "insertion-auc")
        return {"insertion-auc": insertion_auc_per_image(curves), "baseline": curves[:, 0]}


class DeletionAUC(_NoPasses):
    """Area under the MoRF deletion curve, per image: the mean of ``f(x^(k))`` over k = 0..L.

    Lower = more faithful (the probability falls faster). The rectangle rule over
    the L+1 points, like AOPC, so that ``AOPC = f_0 - DeletionAUC`` exactly.
    """

    def get_params(self) -> dict[str, Any]:
        return {}

    def compute(self, data: Any) -> dict[str, np.ndarray]:
        return {"deletion-auc": deletion_auc_per_image(data.curve("morf"))}
