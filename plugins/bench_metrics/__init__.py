"""Built-in metrics over perturbation curves: AOPC (MoRF, the study's), LeRF AOPC, ABPC, deletion AUC."""

from bench import MetricInputs, MetricSpec, hookimpl

__version__ = "0.1.0"

_AOPC = "sum_k (f(x0) - f(xk)) / (L+1)"


@hookimpl
def bench_register_metrics():
    return [
        MetricSpec(
            name="aopc",
            factory="bench_metrics.curve_metrics:AOPC",
            description=f"Area over the MoRF perturbation curve, {_AOPC} (the reference study's measure)",
            label="AOPC",
            inputs=MetricInputs(curves=("morf",)),
            heatmap_transform="rank",
        ),
        MetricSpec(
            name="lerf-aopc",
            factory="bench_metrics.curve_metrics:LeRFAOPC",
            description=f"AOPC of the LeRF curve (least relevant regions first), {_AOPC}",
            label="LeRF AOPC",
            higher_is_better=False,
            inputs=MetricInputs(curves=("lerf",)),
            heatmap_transform="rank",
        ),
        MetricSpec(
            name="abpc",
            factory="bench_metrics.curve_metrics:ABPC",
            description="Area between the LeRF and MoRF curves, sum_k (f(x_LeRF^k) - f(x_MoRF^k)) / (L+1)",
            label="ABPC",
            inputs=MetricInputs(curves=("morf", "lerf")),
            heatmap_transform="rank",
        ),
        MetricSpec(
            name="deletion-auc",
            factory="bench_metrics.curve_metrics:DeletionAUC",
            description="Area under the MoRF curve, the mean of f(x^(k)) over k = 0..L",
            label="Deletion AUC",
            higher_is_better=False,
            inputs=MetricInputs(curves=("morf",)),
            heatmap_transform="rank",
        ),
    ]
