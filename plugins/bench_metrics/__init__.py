"""Built-in curve metrics."""

from bench import MetricSpec, hookimpl

__version__ = "0.1.0"


@hookimpl
def bench_register_metrics():
    return [
        MetricSpec(
            name="aopc",
            factory="bench_metrics.curve_metrics:AOPC",
            description="Area over the perturbation curve: sum_k (f(x0) - f(xk)) / (L+1)",
        ),
        MetricSpec(
            name="deletion-auc",
            factory="bench_metrics.curve_metrics:DeletionAUC",
            description="Mean of the perturbation curve f(x^(k)), k = 0..L (lower = more faithful)",
        ),
    ]
