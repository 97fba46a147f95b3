"""Built-in complexity metrics: how concentrated a heatmap is (no mask, no model).

``sparseness`` (Gini index, Chalasani et al. 2020) and ``entropy-complexity`` (Bhatt et
al. 2020), on the absolute heatmap resized to image resolution as the harness resizes
heatmaps (so maps of different native sizes are compared on the same pixels). They
measure simplicity, not correctness: a map on the wrong pixel is maximally sparse.
See :mod:`bench_complexity.measures`.
"""

from __future__ import annotations

from bench import MetricInputs, MetricSpec, hookimpl

__version__ = "0.1.0"

_RESOLUTION = (
    "heatmaps resized bilinearly to the image (as the harness resizes them for regions; the images "
    "are read for their size only)"
)


@hookimpl
def bench_register_metrics():
    inputs = MetricInputs(heatmaps=True, images=True)
    return [
        MetricSpec(
            name="sparseness",
            factory="bench_complexity.measures:Sparseness",
            family="complexity",
            higher_is_better=True,
            label="Sparseness (Gini)",
            description=(
                "Sparseness (Chalasani et al. 2020): the Gini index of |h|, 1 = all relevance on one pixel, "
                f"0 = uniform (an all-zero map counts as uniform: 0); {_RESOLUTION}"
            ),
            inputs=inputs,
            heatmap_transform="abs",
            zero_map_value=0.0,
        ),
        MetricSpec(
            name="entropy-complexity",
            factory="bench_complexity.measures:EntropyComplexity",
            family="complexity",
            higher_is_better=False,
            label="Entropy complexity",
            description=(
                "Complexity (Bhatt et al. 2020): the Shannon entropy of p = |h| / sum |h|, divided by its "
                "maximum log(H W) into [0, 1] ('nats' column: the entropy itself); an all-zero map counts "
                f"as uniform: 1; {_RESOLUTION}"
            ),
            inputs=inputs,
            heatmap_transform="abs-normalised",
            zero_map_value=1.0,
        ),
    ]
