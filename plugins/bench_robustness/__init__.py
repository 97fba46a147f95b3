"""Robustness metrics: max-sensitivity (Yeh et al. 2019) under small seeded input noise."""

from bench import MetricInputs, MetricSpec, hookimpl

__version__ = "0.1.0"


@hookimpl
def bench_register_metrics():
    return [
        MetricSpec(
            name="max-sensitivity",
            factory="bench_robustness.sensitivity:MaxSensitivity",
            family="robustness",
            higher_is_better=False,
            label="Max-sensitivity",
            description=(
                "Max-sensitivity (Yeh et al. 2019): max over n_samples=10 seeded uniform perturbations "
                "U(-r, r), r=0.02, of ||E(x+d) - E(x)|| / ||E(x)|| (Frobenius; scale-free, no "
                "normalisation), the explained class fixed. Cost: n_samples+1 heatmaps per image"
            ),
            parameters={"radius": 0.02, "n_samples": 10, "seed": 0, "clip": False, "batch_size": 32},
            inputs=MetricInputs(model=True, explainer=True, images=True, targets=True),
            heatmap_transform="none",
        ),
    ]
