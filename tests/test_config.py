"""Config: presets, layering, did-you-mean errors with TOML paths, CLI overrides."""

from __future__ import annotations

import pytest

from bench.cli import build_parser, run_overrides
from bench.config.loading import defaults, grid_shape, load_config, preset_names
from bench.errors import ConfigError


def test_demo_preset_is_the_default():
    cfg = load_config()
    assert cfg["preset"] == "demo"
    assert cfg["dataset"]["name"] == "synthetic-cxr"
    assert cfg["models"]["weights"] == "scratch"  # offline: trained here, never mistakable for imagenet
    # every default resolved: every schema key present
    for section, keys in defaults().items():
        assert set(keys) <= set(cfg[section]), section


def test_reference_preset_matches_the_study():
    cfg = load_config(preset="covid-radiography")
    assert cfg["dataset"]["name"] == "covid-radiography"
    assert cfg["dataset"]["params"]["per_class"] == 1345
    assert cfg["dataset"]["params"]["split"] == [0.8, 0.1, 0.1]
    assert cfg["models"]["names"] == ["vgg16", "densenet201"]
    assert cfg["models"]["weights"] == "imagenet"
    assert cfg["training"]["epochs"] == 20
    assert cfg["training"]["selection"] == "disease_recall"
    assert cfg["aopc"]["grid"] == 9 and grid_shape(cfg["aopc"]["grid"]) == (9, 9)
    assert cfg["perturbations"]["params"]["gaussian-noise"]["sigma"] == 0.1
    assert set(preset_names()) >= {"demo", "covid-radiography"}


def test_unknown_key_names_toml_path_and_suggests(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('preset = "demo"\n[aopc]\ngird = 3\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "aopc.gird" in msg and "did you mean 'aopc.grid'" in msg and str(path) in msg


def test_key_in_wrong_section_is_suggested():
    with pytest.raises(ConfigError, match="did you mean 'training.epochs'"):
        load_config({"preset": "demo", "aopc": {"epochs": 3}})


def test_unknown_section():
    with pytest.raises(ConfigError, match=r"unknown section \[trainng\].*did you mean 'training'"):
        load_config({"trainng": {"epochs": 1}})


@pytest.mark.parametrize(
    "layer, fragment",
    [
        ({"training": {"epochs": "20"}}, "training.epochs must be integer"),
        ({"aopc": {"orders": ["morf"]}}, r"aopc.orders was removed.*\[metrics\] names"),
        ({"metrics": {"names": "aopc"}}, "metrics.names must be array"),
        ({"leaderboard": {"primary": 3}}, "leaderboard.primary must be string"),
        ({"aopc": {"grid": [3, 0]}}, "aopc.grid"),
        ({"aopc": {"strategy": "fast"}}, "aopc.strategy"),
        ({"run": {"executor": ""}}, "run.executor is empty"),  # a name is checked by the plan (registry)
        ({"training": {"batch_size": 0}}, "training.batch_size must be >= 1"),
        ({"models": {"names": [3]}}, r"models.names\[0\] must be a string"),
        ({"run": {"fail_fast": 1}}, "run.fail_fast must be boolean"),
    ],
)
def test_bad_values_name_their_key(layer, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config({"preset": "demo", **layer})


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[aopc\ngrid = 3")
    with pytest.raises(ConfigError, match="broken.toml.*not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_config_without_dataset_is_an_error():
    with pytest.raises(ConfigError, match="dataset.name is not set"):
        load_config({"aopc": {"grid": 3}})


def test_unknown_preset_suggests():
    with pytest.raises(ConfigError, match="did you mean 'demo'"):
        load_config(preset="dmeo")


def test_layering_file_on_preset_then_cli_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('preset = "covid-radiography"\n[aopc]\ngrid = 7\nmax_images = 5\n')
    args = build_parser().parse_args(
        ["run", "--config", str(path), "--model", "vgg16", "--weights", "none",
         "--set", "aopc.grid=[3, 4]", "--data", "/data/cxr", "--seed", "7"]
    )
    cfg = load_config(args.config, preset=args.preset, overrides=run_overrides(args))
    assert cfg["preset"] == "covid-radiography"
    assert cfg["aopc"]["grid"] == [3, 4]  # CLI beats file
    assert cfg["aopc"]["max_images"] == 5  # file beats preset
    assert cfg["training"]["epochs"] == 20  # preset kept
    assert cfg["models"]["names"] == ["vgg16"]
    assert cfg["models"]["weights"] == "none"
    assert cfg["dataset"]["data"] == "/data/cxr"
    assert cfg["run"]["seed"] == 7


def test_all_flag_selects_everything():
    args = build_parser().parse_args(["run", "--all"])
    o = run_overrides(args)
    assert o["models"]["names"] == o["explainers"]["names"] == ["all"]
    assert "perturbations" not in o  # a perturbation is a setting, not a competitor: the config's stay
    o = run_overrides(build_parser().parse_args(["run", "--all", "--perturbation", "all"]))
    assert o["perturbations"]["names"] == ["all"]


def test_resolved_config_round_trips():
    cfg = load_config()
    assert load_config(cfg) == cfg


def test_unknown_plugin_name_in_config_suggests():
    from bench.pipeline import make_plan

    with pytest.raises(ConfigError) as err:
        make_plan(load_config({"preset": "demo", "explainers": {"names": ["gradcam", "radnom"]}}))
    assert "explainers.names[1]" in str(err.value) and "did you mean 'random'" in str(err.value)
    with pytest.raises(ConfigError, match="did you mean 'synthetic-cxr'"):
        make_plan(load_config({"preset": "demo", "dataset": {"name": "synthetic-cx"}}))


def test_unknown_plugin_parameter_in_config_names_the_key():
    from bench.pipeline import make_plan

    cfg = load_config({"preset": "demo", "perturbations": {"params": {"gaussian-noise": {"sgima": 0.2}}}})
    with pytest.raises(ConfigError) as err:
        make_plan(cfg)
    assert "perturbations.params.gaussian-noise" in str(err.value) and "did you mean 'sigma'" in str(err.value)
