"""Built-in localisation metrics: how well a heatmap points at a ground-truth mask.

Pointing game, relevance mass and rank accuracy, energy-based pointing game, pixel ROC
AUC and top-k IoU against the dataset's ``lesion`` mask, and ``lung-relevance``, the
share of positive relevance inside the ``lung`` mask on images of every class (the
shortcut detector). Heatmaps are compared at image resolution: resized bilinearly as the
harness resizes them (:func:`bench.engine.regions.resize_bilinear`), except that the pointing game
finds the maximum on the heatmap's own grid and spreads each maximal cell over the pixels it
covers (a bilinear resize moves a coarse map's maximum towards the border). Images whose mask is empty
get NaN, which the harness leaves out and counts. See :mod:`bench_localisation.measures`.

``aopc-lesion`` is the study's MoRF AOPC on the images whose lesion mask is non-empty (NaN
on the others): the AOPC on which the oracle controls are defined, so the metric-power
comparisons (oracle > random > anti-oracle) can be read without the Normal images' ties.

Every metric here that reads a mask names it by its ``mask`` parameter, and its spec says so
(``mask_params=("mask",)``): a run hands the metric the mask the parameter names, so
``[metrics.params.pointing-game] mask = "lung"`` measures against the dataset's ``lung`` mask
(the spec's ``inputs.masks`` list what the defaults read). To have the measures under their
own names for another mask beside the built-ins, register them for it from a plugin::

    from bench import hookimpl
    from bench_localisation import localisation_specs

    @hookimpl
    def bench_register_metrics():
        return localisation_specs(mask="lung", suffix="-lung")   # pointing-game-lung, ...
"""

from __future__ import annotations

from bench import MetricInputs, MetricSpec, hookimpl

__version__ = "0.1.0"

_RESOLUTION = "heatmaps resized bilinearly to the image (as the harness resizes them for regions)"
#: a bilinear resize moves a coarse map's maximum towards the border (clamped edges): the pointing
#: game finds it on the heatmap's own grid (see bench_localisation.measures.maxima_at_image_resolution)
_POINTING_RESOLUTION = (
    "the maximum is found on the heatmap's own grid and each maximal cell covers the image pixels "
    "whose centre falls in it (a bilinear resize would move a coarse map's maximum towards the border)"
)

#: name -> (class, label, heatmap transform, value on an all-zero map, description); all higher = better
_TABLE: dict[str, tuple[str, str, str, float | None, str]] = {
    "pointing-game": (
        "PointingGame", "Pointing game", "none", None,
        "Pointing game (Zhang et al. 2018): 1 when the heatmap's maximum lies within 15/224 of the "
        "image size (15 px at 224) of the {mask} mask, with tied maxima the fraction of them that do; "
        "signed heatmap; a constant (all-zero) map scores the chance level, the share of pixels within "
        "the tolerance ('chance' column)",
    ),
    "relevance-mass": (
        "RelevanceMass", "Relevance mass", "positive-normalised", float("nan"),
        "Relevance mass accuracy (Arras et al. 2022): the share of the positive relevance "
        "(max(h, 0) / its total) inside the {mask} mask; NaN on a map without positive relevance "
        "(an all-zero map)",
    ),
    "relevance-rank": (
        "RelevanceRank", "Relevance rank", "none", None,
        "Relevance rank accuracy (Arras et al. 2022): of the K = |{mask} mask| highest pixels "
        "(signed), the fraction inside the mask, pixels tied at the K-th value shared out; a constant "
        "(all-zero) map scores the mask's area share ('chance' column)",
    ),
    "energy-pointing-game": (
        "EnergyPointingGame", "Energy pointing game", "positive-normalised", float("nan"),
        "Energy-based pointing game (Wang et al. 2020, Score-CAM): the share of the positive "
        "relevance inside the bounding box of the {mask} mask; NaN on a map without positive relevance",
    ),
    "pixel-auc": (
        "PixelAUC", "Pixel ROC AUC", "none", 0.5,
        "ROC AUC of the heatmap (signed; only its order matters) as a per-pixel classifier of the "
        "{mask} mask, ties counting one half as in sklearn's roc_auc_score; 0.5 = chance (a constant map)",
    ),
    "topk-iou": (
        "TopKIoU", "Top-k IoU", "none", None,
        "IoU of the k highest pixels (signed) with the {mask} mask, k = the mask's size (parameter "
        "'fraction': k = fraction x image size), pixels tied at the k-th value shared out; a constant "
        "(all-zero) map scores the chance level ('chance' column)",
    ),
}

#: the documented parameters beside ``mask``, with their defaults
_EXTRA_PARAMETERS: dict[str, dict[str, object]] = {"PointingGame": {"tolerance": 15 / 224}, "TopKIoU": {"fraction": None}}

_EMPTY = "images whose {mask} mask is empty get NaN, left out of the statistics and counted"
#: the parameter that names the dataset mask a metric reads (a run hands it that mask)
_MASK_PARAMS = ("mask",)


def _spec(name: str, measure: str, cls_name: str, label: str, transform: str, zero: float | None,
          text: str, mask: str, factory: object) -> MetricSpec:
    return MetricSpec(
        name=name,
        headline=measure,  # the column the component returns (the measure's name, whatever the suffix)
        factory=factory,  # type: ignore[arg-type]
        family="localisation",
        higher_is_better=True,
        label=label,
        description=f"{text.format(mask=mask)}; {_POINTING_RESOLUTION if cls_name == 'PointingGame' else _RESOLUTION}; "
                    f"{_EMPTY.format(mask=mask)}",
        inputs=MetricInputs(heatmaps=True, masks=(mask,)),
        mask_params=_MASK_PARAMS,
        heatmap_transform=transform,
        zero_map_value=zero,
        parameters={"mask": mask, **_EXTRA_PARAMETERS.get(cls_name, {})},
    )


def localisation_specs(*, mask: str = "lesion", suffix: str = "") -> list[MetricSpec]:
    """The six mask measures as :class:`bench.MetricSpec` for the dataset mask ``mask``, named ``<measure><suffix>``.

    For ``mask="lesion"`` (the built-ins) the factories are lazy ``module:attr`` strings; for
    another mask they are subclasses whose ``mask`` defaults to ``mask``. Each spec declares
    ``mask_params=("mask",)``: the parameter may still name another mask in a run.
    """
    specs = []
    for name, (cls_name, label, transform, zero, text) in _TABLE.items():
        if mask == "lesion":
            factory: object = f"bench_localisation.measures:{cls_name}"
        else:
            from . import measures

            factory = measures.for_mask(getattr(measures, cls_name), mask)
        specs.append(_spec(f"{name}{suffix}", name, cls_name, label if mask == "lesion" else f"{label} ({mask})",
                           transform, zero, text, mask, factory))
    return specs


def lung_relevance_spec() -> MetricSpec:
    """``lung-relevance``: the share of positive relevance inside the ``lung`` mask (the shortcut detector)."""
    return MetricSpec(
        name="lung-relevance",
        factory="bench_localisation.measures:LungRelevance",
        family="localisation",
        higher_is_better=True,
        label="Lung relevance",
        description=(
            "The share of the positive relevance (max(h, 0) / its total) inside the lung mask, on images "
            "of every class: the shortcut detector (DeGrave et al. 2021), a model reading a marker outside "
            "the body scores near 0, below the chance level (the lungs' area share, 'chance' column); NaN "
            f"on a map without positive relevance (an all-zero map); {_RESOLUTION}; {_EMPTY.format(mask='lung')}"
        ),
        inputs=MetricInputs(heatmaps=True, masks=("lung",)),
        mask_params=_MASK_PARAMS,
        heatmap_transform="positive-normalised",
        zero_map_value=float("nan"),
        parameters={"mask": "lung"},
    )


def masked_aopc_spec(*, mask: str = "lesion", name: str | None = None) -> MetricSpec:
    """``aopc-<mask>``: the MoRF AOPC on the images whose ``mask`` is non-empty (NaN elsewhere).

    The AOPC on which the oracle controls are defined (an image without a region gives them a
    constant map): compare them there. For ``mask="lesion"`` the factory is a lazy string.
    """
    if mask == "lesion":
        factory: object = "bench_localisation.measures:MaskedAOPC"
    else:
        from . import measures

        factory = measures.for_mask(measures.MaskedAOPC, mask)
    return MetricSpec(
        name=name or f"aopc-{mask}",
        headline="masked-aopc",
        factory=factory,  # type: ignore[arg-type]
        family="faithfulness",
        higher_is_better=True,
        label=f"AOPC ({mask} images)",
        description=(
            f"AOPC of the MoRF curve, sum_k (f(x0) - f(xk)) / (L+1) (the study's measure), on the images "
            f"whose {mask} mask is non-empty: the images on which the oracle and anti-oracle controls are "
            f"defined (an image without a {mask} region gives them a constant map, ordered by the seeded "
            f"tie-break); {_EMPTY.format(mask=mask)}; reads the MoRF curves, no extra forward pass"
        ),
        inputs=MetricInputs(curves=("morf",), masks=(mask,)),
        mask_params=_MASK_PARAMS,
        heatmap_transform="rank",
        parameters={"mask": mask},
    )


@hookimpl
def bench_register_metrics():
    return [*localisation_specs(), lung_relevance_spec(), masked_aopc_spec()]
