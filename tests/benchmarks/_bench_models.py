"""The models the benchmarks time: registered components, built before the clock starts."""

from __future__ import annotations

import bench


def build_model(name: str, size: int):
    model = bench.create("model", name, weights="none", input_shape=(size, size, 3), num_classes=4)
    model.keras  # noqa: B018 - build now: a bad size fails here, not in the timed code
    return model
