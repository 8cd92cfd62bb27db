"""Config: typed loading, overrides checked against types, unknown keys rejected."""

import pytest

from medsynth.components.ingest import IngestConfig
from medsynth.config import load_stage, parse_overrides
from medsynth.errors import ConfigError
from medsynth.readers import Modality, SourceFormat


def test_params_yaml_loads_into_typed_config(params):
    cfg = load_stage(IngestConfig, "ingest", params)
    assert cfg.dataset == "ct"
    src = cfg.sources[0]
    assert src.format is SourceFormat.NPZ and src.modality is Modality.CT
    assert src.classes == ["AbdomenCT", "ChestCT", "HeadCT"]


def test_override_is_type_checked(params):
    cfg = load_stage(IngestConfig, "ingest", params, parse_overrides(["ingest.limit_per_class=5"]))
    assert cfg.limit_per_class == 5
    with pytest.raises(ConfigError, match="expected an integer"):
        load_stage(IngestConfig, "ingest", params, parse_overrides(["ingest.limit_per_class=abc"]))


def test_unknown_key_lists_valid_keys(params):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) bogus; valid: dataset, datasets, limit_per_class"):
        load_stage(IngestConfig, "ingest", params, parse_overrides(["ingest.bogus=1"]))


def test_unknown_dataset_and_enum_values_name_the_valid_ones(params):
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        load_stage(IngestConfig, "ingest", params, {"ingest.dataset": "nope"})
    bad = {**params, "ingest": {**params["ingest"], "datasets": {"x": [{"path": "a", "modality": "PET"}]}, "dataset": "x"}}
    with pytest.raises(ConfigError, match="unknown value .PET.; valid: XR, CR, DX, CT, MR, US, MG, PT"):
        load_stage(IngestConfig, "ingest", bad)


def test_malformed_override():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["train.epochs"])


def test_fixed_tuple_fields_are_checked_per_position():
    from dataclasses import dataclass

    from medsynth.config import build

    @dataclass(frozen=True)
    class W:
        window: tuple[float, float] = (40.0, 400.0)

    assert build(W, {"window": [50, 350]}, "w").window == (50.0, 350.0)
    with pytest.raises(ConfigError, match="expected 2 values"):
        build(W, {"window": [1, 2, 3]}, "w")
    with pytest.raises(ConfigError, match=r"w.window\[1\]: expected a number"):
        build(W, {"window": [1, "x"]}, "w")
    # YAML 1.1 reads 1e-3 (as in `--set train.lr_g=1e-3`) as text: still a number
    assert build(W, {"window": ["1e-3", 2]}, "w").window == (0.001, 2.0)


@pytest.mark.parametrize("command", [["ingest", "--no-track"], ["validate", "--no-track"], ["preprocess", "--no-track"],
                                     ["train", "--no-track"], ["features", "--no-track"], ["monitor", "history"]])
@pytest.mark.parametrize(("override", "message"), [
    ("trian.epochs=3", r"unknown section 'trian'; valid: app, evaluate, features, ingest, monitor, preprocess, "
                       r"project, promote, train, validate"),
    ("nosuch.key=1", r"unknown section 'nosuch'"),
    ("train.epoch=3", r"train: unknown key\(s\) epoch; valid: .*epochs"),
    ("train=3", r"expected SECTION.KEY=VALUE"),
])
def test_every_command_refuses_a_misspelt_override(project_home, capsys, command, override, message):
    """A misspelt section or key is an error on every command path, not only in the section it names."""
    import re

    from medsynth.cli import main

    assert main([*command, "--set", override]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (project_home / "artifacts").exists()  # refused before any work


def test_a_valid_override_of_another_section_is_accepted(params):
    from medsynth.config import check_all_overrides

    check_all_overrides(params, {"train.epochs": "3", "monitor.drift.p_threshold": "0.05"})
    with pytest.raises(ConfigError, match="expected an integer"):
        check_all_overrides(params, {"train.epochs": "three"})


def default_differences(params: dict) -> list[str]:
    """``section.key: code default vs params.yaml`` for every key whose dataclass default is not params.yaml's."""
    import importlib

    from medsynth.config import PARAMS_SECTIONS, flatten, to_dict

    out = []
    for section, (module, name) in PARAMS_SECTIONS.items():
        cls = getattr(importlib.import_module(module), name)
        code, yaml_ = flatten(to_dict(cls())), flatten(to_dict(load_stage(cls, section, params)))
        out += [f"{section}.{k}: code {code.get(k)!r} vs params.yaml {yaml_.get(k)!r}"
                for k in sorted(set(code) | set(yaml_)) if code.get(k) != yaml_.get(k)]
    return out


def test_every_settings_default_is_params_yaml(params):
    assert default_differences(params) == []


def test_the_defaults_check_sees_a_difference(params):
    import copy

    changed = copy.deepcopy(params)
    changed["train"]["lr_g"] = 0.1
    changed["monitor"]["drift"]["p_threshold"] = 0.5
    assert default_differences(changed) == ["train.lr_g: code 0.0002 vs params.yaml 0.1",
                                            "monitor.drift.p_threshold: code 0.01 vs params.yaml 0.5"]


def test_a_default_written_in_code_or_missing_from_params_yaml_is_refused():
    from dataclasses import dataclass

    from medsynth.config import params_defaults

    @dataclass(frozen=True)
    @params_defaults("train")
    class Fine:
        lr_g: float
        model: str

    assert Fine() == Fine(lr_g=0.0002, model="cgan")
    with pytest.raises(ConfigError, match=r"Twice.lr_g: a default written in code; params.yaml train.lr_g"):
        @params_defaults("train")
        class Twice:
            lr_g: float = 0.001
    with pytest.raises(ConfigError, match=r"Unknown.warp: no default in params.yaml \(train.warp\)"):
        @params_defaults("train")
        class Unknown:
            warp: int
    with pytest.raises(ConfigError, match="no section 'nowhere'"):
        @params_defaults("nowhere")
        class Lost:
            x: int


def test_the_shipped_defaults_are_the_checkout_params_yaml():
    from pathlib import Path

    from medsynth.config import DEFAULTS_FILE

    root = Path(__file__).resolve().parents[2]
    assert DEFAULTS_FILE.is_symlink() and DEFAULTS_FILE.resolve() == (root / "params.yaml").resolve()
