"""The built-in executors, registered through the ``bench_register_executors`` hook like a third party's.

* ``local``: the cells one after another in this process (:mod:`bench_executors.local`);
* ``ray``: the stage graph's jobs as Ray tasks on a local instance or a cluster, the
  curves sharded by image (:mod:`bench_executors.ray_executor`; needs ``ray``).

Both use only bench's public run API (:mod:`bench.pipeline`: the stage graph, the
:class:`bench.pipeline.RunContext` an executor gets). The factories are lazy strings, so
listing plugins imports neither Ray nor TensorFlow.
"""

from __future__ import annotations

from bench import ExecutorSpec, hookimpl

__version__ = "0.1.0"


@hookimpl
def bench_register_executors() -> list[ExecutorSpec]:
    return [
        ExecutorSpec(
            name="local",
            factory="bench_executors.local:LocalExecutor",
            description="the cells one after another in this process (the default)",
        ),
        ExecutorSpec(
            name="ray",
            factory="bench_executors.ray_executor:RayExecutor",
            description=(
                "the stage graph's jobs as Ray tasks (a local Ray instance, or a cluster with "
                "run.ray_address / --ray-address); curves sharded by image and merged per cell"
            ),
            parameters={"address": None, "num_cpus": 1.0, "num_gpus": None, "shard_images": None,
                        "min_shard_images": 8, "max_retries": 3, "local_cpus": None, "threads": None},
            requires=("ray",),
            install="pip install 'saliency-bench[ray]' (or pip install 'ray[default]')",
        ),
    ]
