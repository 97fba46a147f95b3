"""Control baselines every leaderboard needs."""

from bench import ExplainerSpec, hookimpl

__version__ = "0.1.0"


@hookimpl
def bench_register_explainers():
    return [
        ExplainerSpec(
            name="random",
            factory="bench_baselines.random_explainer:RandomExplainer",
            description="Seeded uniform random heatmap per image (same image id -> same map): the floor",
            role="null-control",
        ),
    ]
