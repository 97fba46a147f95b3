"""Built-in metrics over perturbation curves: AOPC (MoRF, the study's), LeRF AOPC, ABPC, deletion AUC,
insertion AUC (blur, as Petsiuk et al.), and ROAD's MoRF, LeRF and their combination (Rong et al. 2022).

The ROAD and insertion metrics read curves under the perturbation their ``perturbation``
parameter names (``road``, ``blur``), whatever the cell's: every cell gets them, computed once
per (heatmaps, order, perturbation) and shared with the cell whose perturbation it is.
"""

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
        MetricSpec(
            name="insertion-auc",
            factory="bench_metrics.curve_metrics:InsertionAUC",
            description=(
                "Insertion (Petsiuk et al. 2018): from the fully perturbed image (perturbation 'blur' by "
                "default, the paper's; parameter 'perturbation', \"\" = the cell's), the regions restored in "
                "MoRF order; the area under f(x^(k)), the mean over k = 0..L ('baseline' column: f of the "
                "fully perturbed image). Cost: one curve, L+1 forward passes per image"
            ),
            label="Insertion AUC",
            inputs=MetricInputs(curves=("insertion",)),
            heatmap_transform="rank",
            perturbation_param="perturbation",
            parameters={"perturbation": "blur"},
        ),
        MetricSpec(
            name="road-aopc",
            factory="bench_metrics.curve_metrics:RoadAOPC",
            description=(
                f"ROAD MoRF (Rong et al. 2022): AOPC of the MoRF curve under ROAD's noisy linear imputation "
                f"(perturbation 'road', parameter 'perturbation'), {_AOPC}. Cost: one ROAD curve, L+1 forward "
                "passes and L sparse solves per image"
            ),
            label="ROAD AOPC",
            inputs=MetricInputs(curves=("morf",)),
            heatmap_transform="rank",
            perturbation_param="perturbation",
            parameters={"perturbation": "road"},
        ),
        MetricSpec(
            name="road-lerf-aopc",
            factory="bench_metrics.curve_metrics:RoadLeRFAOPC",
            description=(
                f"ROAD LeRF (Rong et al. 2022): AOPC of the LeRF curve under ROAD's noisy linear imputation "
                f"(perturbation 'road', parameter 'perturbation'), {_AOPC}. Cost: one ROAD curve"
            ),
            label="ROAD LeRF AOPC",
            higher_is_better=False,
            inputs=MetricInputs(curves=("lerf",)),
            heatmap_transform="rank",
            perturbation_param="perturbation",
            parameters={"perturbation": "road"},
        ),
        MetricSpec(
            name="road-abpc",
            factory="bench_metrics.curve_metrics:RoadABPC",
            description=(
                "ROAD's combination (Rong et al. 2022): the area between the LeRF and MoRF curves under ROAD's "
                "imputation, sum_k (f(x_LeRF^k) - f(x_MoRF^k)) / (L+1) (perturbation 'road', parameter "
                "'perturbation'). Cost: the two ROAD curves (shared with road-aopc and road-lerf-aopc)"
            ),
            label="ROAD ABPC",
            inputs=MetricInputs(curves=("morf", "lerf")),
            heatmap_transform="rank",
            perturbation_param="perturbation",
            parameters={"perturbation": "road"},
        ),
    ]
