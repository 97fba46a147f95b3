"""The perturbation family: Occlusion and RISE (explain by changing the input and re-running
the model), batched through one traced forward pass per model and image shape.

Costs are per map, in forward passes of the model (:mod:`bench_occlusion.engine`).
"""

from bench import ExplainerSpec, hookimpl

__version__ = "0.1.0"


@hookimpl
def bench_register_explainers():
    return [
        ExplainerSpec(
            name="occlusion",
            factory="bench_occlusion.occlusion:Occlusion",
            description=(
                "Occlusion (Zeiler & Fergus 2014): each region of the 9x9 grid (grid=9) set to "
                "fill=0.0 (black; 'mean' = the image's mean), relevance = the drop of the target's "
                "probability (score='probability'; 'logit'), a map at grid resolution; with "
                "patch/stride (pixels): sliding windows, a pixel map averaging overlapping windows; "
                "L+1 model evaluations per map, batch_size rows per call: with strategy='full' "
                "cost L+1 forward passes per map (82 on the 9x9 grid); strategy='auto' (default: "
                "incremental where the engine can walk the model and predicts a gain, else full) "
                "or 'incremental' run one full pass per image and recompute, per window, only the "
                "activations it reaches (exact), cost 1 + L/predicted_gain passes per map (the "
                "engine's box-count estimate, reported by passes_per_map after a call)"
            ),
            parameters={
                "grid": 9, "patch": None, "stride": None, "fill": 0.0, "score": "probability",
                "batch_size": 32, "strategy": "auto",
            },
        ),
        ExplainerSpec(
            name="rise",
            factory="bench_occlusion.rise:RISE",
            description=(
                "RISE (Petsiuk et al. 2018): sum_i P(c | x * M_i) M_i / (n_masks * p) over "
                "n_masks = 1000 random masks (cell=7 binary grids kept with p=0.5, bilinearly "
                "upsampled, randomly shifted; seeded by image id), a map at image resolution; "
                "cost n_masks forward passes per map, streamed batch_size masks at a time"
            ),
            parameters={"n_masks": 1000, "cell": 7, "p": 0.5, "seed": 0, "batch_size": 32},
        ),
    ]
