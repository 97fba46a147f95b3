"""Built-in models: VGG16 and DenseNet201 transfer models as the reference study, and a small CNN."""

from bench import ModelSpec, hookimpl

__version__ = "0.1.0"


@hookimpl
def bench_register_models():
    return [
        ModelSpec(
            name="vgg16",
            factory="bench_keras_models.transfer:VGG16Transfer",
            description="Frozen VGG16 backbone + MaxPool(4) -> Flatten -> Dense(64) -> Dense(classes) (the study)",
        ),
        ModelSpec(
            name="densenet201",
            factory="bench_keras_models.transfer:DenseNet201Transfer",
            description="Frozen DenseNet201 backbone + MaxPool(4) -> Flatten -> Dense(64) -> Dense(classes) (the study)",
        ),
        ModelSpec(
            name="simple-cnn",
            factory="bench_keras_models.simple_cnn:SimpleCNN",
            description="A small CNN trained end to end, for fast demos and tests",
        ),
    ]
