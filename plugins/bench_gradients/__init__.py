"""The gradient family: Saliency, Gradient x Input, Integrated Gradients, SmoothGrad,
SmoothGrad^2, VarGrad (gradients of the pre-softmax class score w.r.t. the [0, 1] input).

Costs are in forward+backward passes of the model per map (one such pass is about
2-3 forward passes on a CNN; ``tests/benchmarks/test_bench_gradients.py`` measures it).
"""

from bench import ExplainerSpec, hookimpl

__version__ = "0.1.0"

_NOISE = (
    "noisy copies x + N(0, (sigma * range)^2), sigma 0.15, range = the image's max - min "
    "(noise_range='image', default) or 1 (noise_range='input'), seeded by image id, not clipped"
)


@hookimpl
def bench_register_explainers():
    m = "bench_gradients.methods"
    return [
        ExplainerSpec(
            name="saliency",
            factory=f"{m}:Saliency",
            description=(
                "Saliency (Simonyan et al. 2014): max over channels of |dy^c/dx| (reduce='max-abs'); "
                "cost 1 forward+backward pass per map"
            ),
            parameters={"reduce": "max-abs", "batch_size": 16},
        ),
        ExplainerSpec(
            name="gradient-x-input",
            factory=f"{m}:GradientInput",
            description=(
                "Gradient x Input: x * dy^c/dx, signed sum over channels (reduce='sum'; "
                "'abs-sum' | 'max-abs'); cost 1 forward+backward pass per map"
            ),
            parameters={"reduce": "sum", "batch_size": 16},
        ),
        ExplainerSpec(
            name="integrated-gradients",
            factory=f"{m}:IntegratedGradients",
            description=(
                "Integrated Gradients (Sundararajan et al. 2017): (x - x') * mean_k dy^c/dx(x' + "
                "alpha_k (x - x')), black baseline, right Riemann sum, signed sum over channels "
                "(reduce='sum'); cost `steps` (32) forward+backward passes per map (trapezoid: steps + 1)"
            ),
            parameters={
                "steps": 32, "baseline": "black", "method": "riemann_right", "reduce": "sum",
                "batch_size": 16,
            },
        ),
        ExplainerSpec(
            name="smoothgrad",
            factory=f"{m}:SmoothGrad",
            description=(
                f"SmoothGrad (Smilkov et al. 2017): mean gradient over n = 50 {_NOISE}, "
                "then max over channels of |.| (reduce='max-abs'); cost n forward+backward passes per map"
            ),
            parameters={
                "n": 50, "sigma": 0.15, "noise_range": "image", "seed": 0, "reduce": "max-abs",
                "batch_size": 16,
            },
        ),
        ExplainerSpec(
            name="smoothgrad-squared",
            factory=f"{m}:SmoothGradSquared",
            description=(
                f"SmoothGrad^2 (Hooker et al. 2019): mean squared gradient over n = 50 {_NOISE}, "
                "summed over channels (reduce='sum'); cost n forward+backward passes per map"
            ),
            parameters={
                "n": 50, "sigma": 0.15, "noise_range": "image", "seed": 0, "reduce": "sum",
                "batch_size": 16,
            },
        ),
        ExplainerSpec(
            name="vargrad",
            factory=f"{m}:VarGrad",
            description=(
                f"VarGrad (Adebayo et al. 2018): variance of the gradient over n = 50 {_NOISE}, "
                "summed over channels (reduce='sum'); cost n forward+backward passes per map"
            ),
            parameters={
                "n": 50, "sigma": 0.15, "noise_range": "image", "seed": 0, "reduce": "sum",
                "batch_size": 16,
            },
        ),
    ]
