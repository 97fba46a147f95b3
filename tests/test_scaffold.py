"""`bench new-plugin` renders a package that installs, is discovered, and passes its own tests."""

from __future__ import annotations

import os
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.plugin.scaffold import render_plugin


@pytest.mark.parametrize("kind", ["explainer", "perturbation", "model", "dataset", "metric", "executor"])
def test_rendered_plugin_passes_its_conformance_checks(kind, tmp_path, monkeypatch):
    import importlib

    from bench.testing import checks_for

    root = render_plugin(f"demo-{kind}", kind=kind, directory=tmp_path)
    assert (root / "pyproject.toml").read_text().count("[project.entry-points.bench]") == 1
    monkeypatch.syspath_prepend(str(root))
    package = importlib.import_module(f"bench_demo_{kind}")
    hooks = [getattr(package, n) for n in dir(package) if n.startswith("bench_register_")]
    assert len(hooks) == 1
    (spec,) = hooks[0]()
    assert spec.name == f"demo-{kind}" and spec.kind == kind
    component = spec.load_factory()()
    names = []
    # a metric's checks follow the inputs its spec declares (this package is not installed here)
    for name, check in checks_for(component, spec=spec if kind == "metric" else None):
        check()
        names.append(name)
    assert "check_get_params" in names and len(names) >= 3


def test_new_plugin_cli_refuses_existing_folder_and_bad_names(tmp_path, capsys):
    assert main(["new-plugin", "edge", "--kind", "perturbation", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / "bench-edge" / "bench_edge" / "component.py").exists()
    assert main(["new-plugin", "edge", "--kind", "perturbation", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(BenchError, match="lower case"):
        render_plugin("Bad Name", kind="explainer", directory=tmp_path)


def nested_venv(env_dir):
    """A brand-new venv (no system site packages, no pip of its own) that sees this environment.

    A ``.pth`` file calls ``site.addsitedir`` on this interpreter's site-packages, so the
    outer environment's own ``.pth`` hooks (bench's editable install) run as well, and the
    nested venv uses the outer pip, setuptools, bench and TensorFlow: nothing is downloaded,
    and whatever the outer venv was built from (a fresh ``python -m venv`` included) works.
    """
    venv.create(env_dir, system_site_packages=False, with_pip=False)
    py = env_dir / "bin" / "python"
    inner = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    outer = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    lines = [f"import site; site.addsitedir({path!r})" for path in outer]
    (Path(inner) / "zz_outer_environment.pth").write_text("\n".join(lines) + "\n")
    return py


def test_rendered_plugin_installs_and_is_discovered(tmp_path):
    """pip-install the rendered package into a fresh venv that sees this environment; run its tests there."""
    root = render_plugin("center", kind="explainer", directory=tmp_path)
    py = nested_venv(tmp_path / "venv")
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "-e", str(root)],
        capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    listing = subprocess.run(
        [str(py), "-m", "bench", "plugins", "--json"], capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert listing.returncode == 0, listing.stderr
    assert '"distribution": "bench-center"' in listing.stdout
    tests = subprocess.run(
        [str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
        cwd=root, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "6 passed" in tests.stdout
