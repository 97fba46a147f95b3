"""Built-in perturbations: Gaussian noise (the study's), blur, mean, black, ROAD's noisy linear imputation.

All are mask-local (only masked pixels change); all but ROAD are step-local (a pixel once
perturbed keeps its value, so step k changes only region r_k).
"""

from bench import PerturbationSpec, hookimpl

__version__ = "0.1.0"


@hookimpl
def bench_register_perturbations():
    return [
        PerturbationSpec(
            name="gaussian-noise",
            factory="bench_perturbations.noise:GaussianNoise",
            description="Add N(0, sigma) noise inside the perturbed regions (the study: sigma 0.1)",
            mask_local=True,
            step_local=True,
        ),
        PerturbationSpec(
            name="blur",
            factory="bench_perturbations.fill:Blur",
            description="Masked pixels take the Gaussian-blurred original's values (sigma pixels, default 5; "
                        "Petsiuk et al. 2018's insertion baseline); only masked pixels change",
            parameters={"sigma": 5.0},
            mask_local=True,
            step_local=True,
        ),
        PerturbationSpec(
            name="mean",
            factory="bench_perturbations.fill:MeanFill",
            description="Masked pixels set to the original image's mean, per channel",
            mask_local=True,
            step_local=True,
        ),
        PerturbationSpec(
            name="black",
            factory="bench_perturbations.fill:BlackFill",
            description="Masked pixels set to 0 (black)",
            mask_local=True,
            step_local=True,
        ),
        PerturbationSpec(
            name="road",
            factory="bench_perturbations.road:NoisyLinearImputation",
            description="ROAD's noisy linear imputation (Rong et al. 2022): each masked pixel the weighted "
                        "mean of its 8 neighbours (a sparse linear solve per image and mask, ~0.1 s at "
                        "299 px on 2 CPU cores) plus seeded N(0, noise) noise, default noise 0.01; not "
                        "step-local (each step re-imputes every masked pixel)",
            parameters={"noise": 0.01},
            mask_local=True,
            step_local=False,
        ),
    ]
