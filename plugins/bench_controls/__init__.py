"""Controls by role: constant (null), edge and centre priors (other), oracle (positive) and
anti-oracle (negative). None calls the model: 0 forward passes per map.

The oracles read a dataset mask. The built-in ``oracle`` / ``anti-oracle`` read the
``lesion`` mask and their specs declare it (``masks=("lesion",)``), so the harness
passes it. For another mask, register a pair from your own plugin; the spec's
declaration then matches the factory's default::

    from bench import hookimpl
    from bench_controls import oracle_specs

    @hookimpl
    def bench_register_explainers():
        return oracle_specs("tumour")  # "oracle-tumour" and "anti-oracle-tumour"
"""

from __future__ import annotations

import functools

from bench import ExplainerSpec, hookimpl

__version__ = "0.1.0"

DEFAULT_MASK = "lesion"

_EMPTY = (
    "an image whose {mask!r} mask is empty (a Normal image has no lesion) gets a constant map "
    "{value}: undefined there, its order is the seeded tie-break (counted among the constant "
    "heatmaps); compare the oracles on the images with a non-empty mask, as aopc-{mask} and the "
    "localisation metrics do (NaN on the others, left out and counted)"
)


#: kind -> (class in bench_controls.controls, role, what the map is (``{mask}``: the mask's repr), its value on an empty mask)
_ORACLES: dict[str, tuple[str, str, str, str]] = {
    "oracle": ("OracleExplainer", "positive-control",
               "Oracle (positive control): the dataset's {mask} mask as the heatmap (1 inside, 0 outside)", "(all 0)"),
    "anti-oracle": ("AntiOracleExplainer", "negative-control",
                    "Anti-oracle (negative control): the inverse of the dataset's {mask} mask (0 inside, 1 outside)",
                    "(all 1)"),
}


def _oracle_spec(kind: str, mask: str, name: str | None) -> ExplainerSpec:
    """The ``kind`` (a key of :data:`_ORACLES`) spec for dataset mask ``mask``, named ``name`` or ``<kind>-<mask>``."""
    cls_name, role, what, value = _ORACLES[kind]
    if mask == DEFAULT_MASK:
        factory: object = f"bench_controls.controls:{cls_name}"
    else:
        from . import controls

        factory = functools.partial(getattr(controls, cls_name), mask=mask)
    return ExplainerSpec(
        name=name or f"{kind}-{mask}",
        factory=factory,  # type: ignore[arg-type]
        description=(
            what.format(mask=repr(mask)) + ", image resolution; " + _EMPTY.format(mask=mask, value=value)
            + "; never calls the model, 0 passes per map"
        ),
        parameters={"mask": mask},
        role=role,
        masks=(mask,),
    )


def oracle_specs(
    mask: str = DEFAULT_MASK, *, oracle_name: str | None = None, anti_name: str | None = None
) -> list[ExplainerSpec]:
    """The oracle (positive control) and anti-oracle (negative control) specs for dataset mask ``mask``.

    Names default to ``oracle-<mask>`` / ``anti-oracle-<mask>``. Each spec declares
    ``masks=(mask,)`` and its factory defaults to ``mask``, so the harness passes the
    mask the explainer reads. The metrics that compare them on the images with a non-empty
    mask are registered for another mask by ``bench_localisation.masked_aopc_spec(mask=mask)``
    and ``bench_localisation.localisation_specs(mask=mask, suffix=...)``.
    """
    return [_oracle_spec("oracle", mask, oracle_name), _oracle_spec("anti-oracle", mask, anti_name)]


@hookimpl
def bench_register_explainers():
    c = "bench_controls.controls"
    return [
        ExplainerSpec(
            name="constant",
            factory=f"{c}:ConstantExplainer",
            description=(
                "Constant map (null control): all zeros, 9x9 by default (size=None); every region "
                "ties, so its order is the seeded tie-break; 0 passes per map"
            ),
            parameters={"size": None},
            role="null-control",
        ),
        ExplainerSpec(
            name="edge",
            factory=f"{c}:EdgeExplainer",
            description=(
                "Sobel edge magnitude of the gray image (mean over channels), sqrt(Gx^2 + Gy^2), "
                "borders mirrored, image resolution (other control: a prior); 0 passes per map"
            ),
            role="other-control",
        ),
        ExplainerSpec(
            name="centre",
            factory=f"{c}:CentrePrior",
            description=(
                "Centre prior (other control): exp(-d^2 / (2 (sigma * min(H, W))^2)), d the distance "
                "from the image centre, sigma=0.25; the same map for every image; 0 passes per map"
            ),
            parameters={"sigma": 0.25},
            role="other-control",
        ),
        *oracle_specs(DEFAULT_MASK, oracle_name="oracle", anti_name="anti-oracle"),
    ]
