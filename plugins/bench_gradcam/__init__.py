"""Grad-CAM (Selvaraju et al., arXiv 1610.02391) over the model's feature layer."""

from bench import ExplainerSpec, hookimpl

__version__ = "0.1.0"


@hookimpl
def bench_register_explainers():
    return [
        ExplainerSpec(
            name="gradcam",
            factory="bench_gradcam.gradcam:GradCAM",
            description="Grad-CAM: ReLU(sum_k mean_ij(dy^c/dA^k_ij) A^k) over the feature layer",
        ),
    ]
