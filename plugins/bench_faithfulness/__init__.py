"""Faithfulness correlation (Bhatt et al. 2020) on the region grid."""

from bench import MetricInputs, MetricSpec, hookimpl

__version__ = "0.1.0"


@hookimpl
def bench_register_metrics():
    return [
        MetricSpec(
            name="faithfulness-correlation",
            factory="bench_faithfulness.correlation:FaithfulnessCorrelation",
            family="faithfulness",
            higher_is_better=True,
            label="Faithfulness corr.",
            description=(
                "Faithfulness correlation (Bhatt et al. 2020): Pearson correlation, over n_subsets=32 random "
                "subsets of 25% of the grid's regions (seeded by image id), between the heatmap's relevance "
                "summed over the subset (signed, resized to the image) and the drop of the explained class's "
                "probability when the subset is perturbed (perturbation 'mean' by default, a parameter). "
                "Cost: n_subsets+1 forward passes per image, batched"
            ),
            parameters={"n_subsets": 32, "subset_fraction": 0.25, "perturbation": "mean",
                        "perturbation_params": None, "seed": 0, "batch_size": 64},
            inputs=MetricInputs(model=True, images=True, targets=True, heatmaps=True),
            heatmap_transform="none",
        ),
    ]
