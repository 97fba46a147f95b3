"""Built-in perturbations."""

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
        ),
    ]
