"""pytest fixtures for plugin authors: ``pytest_plugins = ["bench.testing.fixtures"]``."""

from __future__ import annotations

import pytest

from bench.testing.tiny import tiny_images as _tiny_images
from bench.testing.tiny import tiny_model as _tiny_model


@pytest.fixture(scope="session")
def tiny_model():
    return _tiny_model()


@pytest.fixture
def tiny_images():
    return _tiny_images()
