"""Control explainers: reference lines beside the ranking, never competitors in it.

None of them calls the model. ``constant`` (null control) ignores the image too;
``edge`` and ``centre`` (other controls) are priors any metric should beat to be
worth reading; ``oracle`` (positive control) and ``anti-oracle`` (negative control)
are the dataset's ground-truth mask and its inverse: a metric that cannot rank
oracle > random > anti-oracle cannot rank methods either.

The oracles need the image's mask: ``explain(..., masks={name: bool (N, H, W)})``.
In a run the harness passes the masks the explainer's spec declares
(``ExplainerSpec(masks=(...))``); register an oracle for another mask name with
:func:`bench_controls.oracle_specs`. Only NumPy and SciPy: TensorFlow is never imported.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from bench.engine.regions import check_ids
from bench.plugin.names import name_problem

#: the map size of ``constant`` by default: the default 9x9 region grid (81 floats a map)
DEFAULT_SIZE: tuple[int, int] = (9, 9)


class ControlError(ValueError):
    """A bad control parameter or input; ``param`` names the parameter when there is one."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def _images(images: Any, who: str) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim not in (3, 4):
        raise ControlError(f"{who} expects images (N, H, W) or (N, H, W, C), got shape {x.shape}")
    return x


def gray(images: np.ndarray) -> np.ndarray:
    """float64 (N, H, W): the mean over channels of (N, H, W, C) images ((N, H, W) as they are)."""
    x = np.asarray(images, dtype=np.float64)
    return x.mean(axis=-1) if x.ndim == 4 else x


class _Control:
    """Shared parts: stored keyword parameters, ``get_params``, ``repr``."""

    param_names: ClassVar[tuple[str, ...]] = ()

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()) + ")"

    def validate(self) -> None:
        """Check the stored parameters (cheap; the plan calls this)."""

    def passes_per_map(self) -> int:
        """Forward passes of the model per map: none (a control never calls the model)."""
        return 0


class ConstantExplainer(_Control):
    """The same value (0) everywhere: a null control that carries no information at all.

    Every region ties, so any order read from it is the harness's seeded tie-break
    (the ``random`` order); the harness counts its maps as constant heatmaps.

    Parameters
    ----------
    size:
        ``None`` (default): 9x9, the default region grid's shape; an int, ``(h, w)``, or
        ``"image"`` for the image's size.
    """

    param_names = ("size",)

    def __init__(self, *, size: int | tuple[int, int] | str | None = None):
        self.size = size

    def map_size(self, image_shape: tuple[int, ...]) -> tuple[int, int]:
        s = self.size
        if s is None:
            return DEFAULT_SIZE
        if isinstance(s, str):
            if s != "image":
                raise ControlError(f"size must be (h, w), an int or 'image', got {s!r}", "size")
            return int(image_shape[0]), int(image_shape[1])
        if isinstance(s, numbers.Integral) and not isinstance(s, bool):
            s = (s, s)
        try:
            h, w = (int(v) for v in s)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ControlError(f"size must be (h, w), an int or 'image', got {s!r}", "size") from None
        if h < 1 or w < 1:
            raise ControlError(f"size must be positive, got {s!r}", "size")
        return h, w

    def validate(self) -> None:
        self.map_size((1, 1))

    def explain(self, model: Any, images: Any, targets: Any, *, ids: Any = None) -> np.ndarray:
        """float32 zeros (N, h, w)."""
        x = _images(images, "constant")
        check_ids(ids, len(x))
        return np.zeros((len(x), *self.map_size(x.shape[1:3])), dtype=np.float32)


class EdgeExplainer(_Control):
    """Sobel edge magnitude of the gray image: ``sqrt(Gx^2 + Gy^2)``, a pixel map (N, H, W).

    Gray = the mean over channels; ``Gx`` = [-1, 0, 1] across columns smoothed by
    [1, 2, 1] down rows (``Gy`` transposed), borders mirrored (SciPy's ``reflect``:
    ``d c b a | a b c d``). A prior, not a method: it sees the image, never the model.
    """

    def explain(self, model: Any, images: Any, targets: Any, *, ids: Any = None) -> np.ndarray:
        from scipy.ndimage import correlate1d

        x = _images(images, "edge")
        check_ids(ids, len(x))
        g = gray(x)
        if len(g) == 0:
            return np.zeros(g.shape, np.float32)
        diff, smooth = np.array([-1.0, 0.0, 1.0]), np.array([1.0, 2.0, 1.0])
        gx = correlate1d(correlate1d(g, diff, axis=2, mode="reflect"), smooth, axis=1, mode="reflect")
        gy = correlate1d(correlate1d(g, diff, axis=1, mode="reflect"), smooth, axis=2, mode="reflect")
        return np.hypot(gx, gy).astype(np.float32)


class CentrePrior(_Control):
    """A centre prior: ``exp(-d^2 / (2 (sigma * min(H, W))^2))``, d = a pixel centre's
    distance (pixels) from the image centre; the same (N, H, W) map for every image.

    Parameters
    ----------
    sigma:
        The Gaussian's standard deviation as a fraction of the image's shorter side
        (default 0.25).
    """

    param_names = ("sigma",)

    def __init__(self, *, sigma: float = 0.25):
        self.sigma = sigma

    def validate(self) -> None:
        s = self.sigma
        if isinstance(s, bool) or not isinstance(s, numbers.Real) or not np.isfinite(s) or s <= 0:
            raise ControlError(f"sigma must be a positive number, got {s!r}", "sigma")

    def prior(self, height: int, width: int) -> np.ndarray:
        """float64 (H, W): the prior of an image of that size (maximum 1 at the centre)."""
        self.validate()
        y = np.arange(height) + 0.5 - height / 2
        x = np.arange(width) + 0.5 - width / 2
        s = float(self.sigma) * min(height, width)
        return np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * s * s))

    def explain(self, model: Any, images: Any, targets: Any, *, ids: Any = None) -> np.ndarray:
        x = _images(images, "centre")
        check_ids(ids, len(x))
        m = self.prior(int(x.shape[1]), int(x.shape[2])).astype(np.float32)
        return np.broadcast_to(m, (len(x), *m.shape)).copy()


class OracleExplainer(_Control):
    """The dataset's ground-truth mask as the heatmap (1 inside, 0 outside): a positive control.

    On an image whose mask is empty (a Normal image has no lesion) the oracle is
    undefined: its map is then constant (all 0), which the harness counts as a constant
    heatmap; its order is the seeded tie-break, the same as the anti-oracle's, so there the
    two controls tie and carry no information. Comparisons involving the oracles use the
    images with a non-empty mask: the localisation metrics and ``aopc-<mask>``
    (:func:`bench_localisation.masked_aopc_spec`, the MoRF AOPC there) give NaN on the
    others, which the harness leaves out and counts (``n_excluded``).

    Parameters
    ----------
    mask:
        The name of the dataset mask (default ``"lesion"``). The spec must declare the
        same name (``ExplainerSpec(masks=(mask,))``) for the harness to pass it:
        register an oracle for another mask with :func:`bench_controls.oracle_specs`.
    """

    param_names = ("mask",)
    label: ClassVar[str] = "oracle"
    inverse: ClassVar[bool] = False

    def __init__(self, *, mask: str = "lesion"):
        self.mask = mask

    def validate(self) -> None:
        problem = name_problem(self.mask) if isinstance(self.mask, str) else "it is not a string"
        if problem is not None:
            raise ControlError(f"mask {self.mask!r} is not a mask name: {problem}", "mask")

    def the_mask(self, masks: Mapping[str, Any] | None, n: int, hw: tuple[int, int]) -> np.ndarray:
        """bool (N, H, W): ``masks[self.mask]``, checked, or a clear error."""
        self.validate()
        hint = (
            f"the {self.label} reads the dataset's {self.mask!r} mask: call explain(..., "
            f"masks={{{self.mask!r}: bool (N, H, W)}}); in a run the harness passes the masks the "
            f"explainer's spec declares (register one for another mask with "
            f"bench_controls.oracle_specs(mask))"
        )
        if masks is None:
            raise ControlError(f"{self.label}(mask={self.mask!r}) got no masks: {hint}")
        if not isinstance(masks, Mapping):
            raise ControlError(f"{self.label}: masks must be a dict name -> bool (N, H, W), got {type(masks).__name__}")
        if self.mask not in masks:
            have = ", ".join(map(repr, masks)) or "none"
            raise ControlError(f"{self.label}(mask={self.mask!r}): no {self.mask!r} among the masks passed ({have}): {hint}")
        m = np.asarray(masks[self.mask])
        if m.shape != (n, *hw):
            raise ControlError(
                f"{self.label}: masks[{self.mask!r}] must be (N, H, W) = {(n, *hw)} like the images, got {m.shape}"
            )
        if m.dtype != np.bool_:
            if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)) or not np.isin(m, (0, 1)).all():
                raise ControlError(f"{self.label}: masks[{self.mask!r}] must be bool (or 0/1), got dtype {m.dtype}")
            m = m != 0
        return m

    def explain(
        self, model: Any, images: Any, targets: Any, *, ids: Any = None, masks: Mapping[str, Any] | None = None
    ) -> np.ndarray:
        """float32 (N, H, W): the mask (1/0), or its inverse for the anti-oracle."""
        x = _images(images, self.label)
        check_ids(ids, len(x))
        m = self.the_mask(masks, len(x), (int(x.shape[1]), int(x.shape[2])))
        return (~m if self.inverse else m).astype(np.float32)


class AntiOracleExplainer(OracleExplainer):
    """The inverse of the ground-truth mask (0 inside, 1 outside): a negative control.

    On an image whose mask is empty the map is constant (all 1), counted as a constant
    heatmap, as for the oracle. Parameters as :class:`OracleExplainer`.
    """

    label = "anti-oracle"
    inverse = True
