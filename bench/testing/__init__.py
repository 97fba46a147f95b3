"""Opt-in test kit for plugin authors: tiny models and images, and conformance checks.

In your plugin's tests::

    from bench.testing import parametrize_with_checks
    from my_plugin import MyExplainer

    @parametrize_with_checks(MyExplainer())
    def test_conformance(check):
        check()

or call ``check_explainer(MyExplainer())`` directly. A metric is checked on synthetic
inputs of exactly what its registered ``MetricSpec`` declares (or pass ``spec=``). Fixtures (``tiny_model``,
``tiny_images``) are available with ``pytest_plugins = ["bench.testing.fixtures"]``.
"""

from bench.testing.checks import (
    check_component,
    check_dataset,
    check_executor,
    check_explainer,
    check_metric,
    check_model,
    check_perturbation,
    checks_for,
    metric_inputs,
    parametrize_with_checks,
)
from bench.testing.tiny import tiny_images, tiny_model

__all__ = [
    "check_component",
    "check_dataset",
    "check_executor",
    "check_explainer",
    "check_metric",
    "check_model",
    "check_perturbation",
    "checks_for",
    "metric_inputs",
    "parametrize_with_checks",
    "tiny_images",
    "tiny_model",
]
