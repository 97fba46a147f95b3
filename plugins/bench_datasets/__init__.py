"""Built-in datasets: the embedded synthetic chest X-ray set and the COVID-19 Radiography Database."""

from bench import DatasetSpec, hookimpl

__version__ = "0.1.0"


@hookimpl
def bench_register_datasets():
    return [
        DatasetSpec(
            name="synthetic-cxr",
            factory="bench_datasets.synthetic:SyntheticCXR",
            description="Seeded procedural chest-X-ray-like images, 4 classes, lung and lesion (ground-truth) masks, optional class-specific shortcut marker (offline default)",
        ),
        DatasetSpec(
            name="covid-radiography",
            factory="bench_datasets.covid_radiography:CovidRadiography",
            description="COVID-19 Radiography Database (Kaggle) from a local folder, sampled and split as the reference study",
        ),
    ]
