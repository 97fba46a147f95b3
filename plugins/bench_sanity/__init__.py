"""Sanity checks as metrics (family randomisation): cascading model randomisation, random logit."""

from bench import MetricInputs, MetricSpec, hookimpl

__version__ = "0.1.0"


@hookimpl
def bench_register_metrics():
    return [
        MetricSpec(
            name="model-randomisation",
            factory="bench_sanity.randomisation:ModelRandomisation",
            family="randomisation",
            higher_is_better=False,
            label="Model randomisation ρ",
            description=(
                "Cascading model-parameter randomisation (Adebayo et al. 2018), from the top block of "
                "weighted layers down (blocks = Keras stage names such as block3 or conv4, else one per "
                "layer, at most max_blocks=12: VGG16 7 steps, DenseNet201 11): per step the Spearman rank "
                "correlation (and SSIM) of |heatmap| on the trained model and on a randomised copy; the "
                "headline is the mean over the steps (1 = the explanation ignores the model; constant maps "
                "count as unchanged). Cost: K+1 heatmaps per image (K steps)"
            ),
            parameters={"seed": 0, "max_blocks": 12, "batch_size": 32},
            inputs=MetricInputs(model=True, explainer=True, images=True, targets=True),
            heatmap_transform="abs",
        ),
        MetricSpec(
            name="random-logit",
            factory="bench_sanity.randomisation:RandomLogit",
            family="randomisation",
            higher_is_better=False,
            label="Random-logit SSIM",
            description=(
                "Random-logit test (Sixt et al. 2020): SSIM of |h|/max|h| between the explanation of the "
                "explained class and of a random other class (seeded by image id); 1 = the explanation "
                "ignores the class. Cost: 2 heatmaps per image"
            ),
            parameters={"seed": 0, "batch_size": 32},
            inputs=MetricInputs(model=True, explainer=True, images=True, targets=True),
            heatmap_transform="abs",
        ),
    ]
