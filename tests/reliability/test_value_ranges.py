"""Every numeric config field and CLI option states the values it accepts, and parsing refuses any
other with the field's path, the range and the value: a latent-free "VAE" (latent_dim: 0), a zero
sample count that divides by zero, a NaN temperature that writes a grid of NaN images, negative
intervals. NaN and infinity are never valid numbers in a config."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Annotated, Any, Literal, Union

import pytest
import yaml

from cvae_bridge.cli import main
from cvae_bridge.config import (
    EvalConfig,
    KLConfig,
    LoRAConfig,
    ModelConfig,
    Range,
    RunConfig,
    SharpenConfig,
    TargetConfig,
    TrainConfig,
    load_run_config,
    range_of,
    to_dict,
)
from cvae_bridge.defaults import default_run_config
from cvae_bridge.envs.demos import DemosConfig
from cvae_bridge.errors import ConfigError
from cvae_bridge.evaluation.replay import ReplayConfig
from cvae_bridge.evaluation.rollout import RolloutConfig
from cvae_bridge.pipelines.text_to_image import GenerateConfig
from cvae_bridge.registry import REGISTRIES

RUN_LEVEL = [
    RunConfig,
    ModelConfig,
    TargetConfig,
    KLConfig,
    TrainConfig,
    SharpenConfig,
    LoRAConfig,
    EvalConfig,
]
COMMANDS = [GenerateConfig, ReplayConfig, DemosConfig, RolloutConfig]


def _plugin_template_configs() -> set[type]:
    """The config classes of examples/plugin_template, which plugin authors copy; imported without
    leaving its parts in the registries."""
    import importlib.util
    import sys
    from pathlib import Path

    # Under a name of its own, so that test_contracts' `import cvae_bridge_waveform` still registers.
    name = "_waveform_plugin_for_value_ranges"
    path = Path(__file__).parents[2] / "examples" / "plugin_template" / "cvae_bridge_waveform" / "__init__.py"
    before = {kind: dict(r._items) for kind, r in REGISTRIES.items()}
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # get_type_hints resolves the annotations in it
    spec.loader.exec_module(module)  # registers its parts
    added = {c.Config for kind, r in REGISTRIES.items() for n, c in r._items.items() if n not in before[kind]}
    for kind, r in REGISTRIES.items():
        r._items = before[kind]
    return added


COMPONENTS = sorted(
    {registry.get(name).Config for registry in REGISTRIES.values() for name in registry.names()}
    | _plugin_template_configs(),
    key=lambda cls: f"{cls.__module__}.{cls.__qualname__}",
)


def _unranged(tp: Any, where: str) -> list[str]:
    """The places in type `tp` where an int or a float carries no Range."""
    if tp in (int, float):
        return [where]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return [] if range_of(tp) is not None else _unranged(args[0], where)
    if origin is Literal or dataclasses.is_dataclass(tp):  # fixed choices; nested configs are listed
        return []
    if origin in (Union, types.UnionType, list, tuple, dict):
        return [problem for i, arg in enumerate(args) for problem in _unranged(arg, f"{where}[{i}]")]
    return []


@pytest.mark.parametrize(
    "cls", RUN_LEVEL + COMMANDS + COMPONENTS, ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}"
)
def test_every_numeric_field_states_its_range(cls):
    hints = typing.get_type_hints(cls, include_extras=True)
    missing = [p for f in dataclasses.fields(cls) if f.init for p in _unranged(hints[f.name], f.name)]
    assert not missing, f"{cls.__qualname__}: annotate {missing} with a Range (PositiveInt, Fraction, ...)"
    # The defaults themselves lie in their ranges.
    for f in dataclasses.fields(cls):
        numeric = range_of(hints[f.name])
        if numeric is not None and f.default is not dataclasses.MISSING:
            numeric[1].check(numeric[0], f.default, f"{cls.__qualname__}.{f.name}")


def test_nested_config_dataclasses_are_all_listed():
    listed, seen = set(RUN_LEVEL + COMMANDS + COMPONENTS), set()

    def walk(tp: Any) -> None:
        if dataclasses.is_dataclass(tp) and tp not in seen:
            seen.add(tp)
            for hint in typing.get_type_hints(tp).values():
                walk(hint)
        for arg in typing.get_args(tp):
            walk(arg)

    for cls in listed:
        walk(cls)
    # Component bases (EncoderConfig, ...) are looked up by `type`: their registered classes are listed.
    bases = {registry.contract.config for registry in REGISTRIES.values()}
    assert seen - listed <= bases


def test_range_descriptions():
    assert Range(1).describe(int) == "an integer >= 1"
    assert Range(0, 1, high_open=True).describe(float) == "a number in [0, 1)"
    assert Range(0, low_open=True).describe(float) == "a finite number > 0"
    assert Range().describe(float) == "a finite number"


BAD_VALUES = [
    ("model.latent_dim=0", "model.latent_dim: expected an integer >= 1, got 0"),
    ("model.latent_dim=-6", "model.latent_dim: expected an integer >= 1, got -6"),
    ("model.d_model=0", "model.d_model: expected an integer >= 1, got 0"),
    ("train.log_every=-1", "train.log_every: expected an integer >= 1, got -1"),
    ("train.checkpoint_every=-1", "train.checkpoint_every: expected an integer >= 0, got -1"),
    ("train.eval_every=-5", "train.eval_every: expected an integer >= 0, got -5"),
    ("eval.nll_samples=0", "eval.nll_samples: expected an integer >= 1, got 0"),
    ("eval.temperature=.nan", "eval.temperature: expected a finite number > 0, got nan"),
    ("eval.temperature=.inf", "eval.temperature: expected a finite number > 0, got inf"),
    ("eval.temperature=0", "eval.temperature: expected a finite number > 0, got 0"),
    ("model.kl.beta=-.inf", "model.kl.beta: expected a finite number >= 0, got -inf"),
    ("model.kl.free_bits=-0.5", "model.kl.free_bits: expected a finite number >= 0, got -0.5"),
    ("train.adam_betas=[0.9, 1.0]", r"train.adam_betas\[1\]: expected a number in \[0, 1\), got 1.0"),
    ("train.lora={dropout: 1.0}", r"train.lora.dropout: expected a number in \[0, 1\), got 1.0"),
    (
        "train.lr_multipliers={'decoders.*': -1}",
        r"train.lr_multipliers.decoders.\*: expected a finite number >= 0",
    ),
    ("train.seed=-1", r"train.seed: expected an integer in \[0, 2147483647\], got -1"),
    ("data.limit=0", "data.limit: expected an integer >= 1, got 0"),
    (
        "model.targets.image.decoder.size=[28, 0]",
        r"model.targets.image.decoder.size\[1\]: expected an integer >= 1, got 0",
    ),
]


@pytest.mark.parametrize("override, message", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_out_of_range_values_are_refused_with_the_field_path(override, message):
    with pytest.raises(ConfigError, match=message):
        load_run_config(None, [override])


def test_nan_in_a_yaml_file_is_refused(tmp_path):
    data = to_dict(default_run_config())
    data["train"]["lr"] = float("nan")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    assert "lr: .nan" in path.read_text()
    with pytest.raises(ConfigError, match=rf"{path}.train.lr: expected a finite number > 0, got nan"):
        load_run_config(path)


def test_a_huge_value_is_refused_in_a_bounded_message():
    with pytest.raises(ConfigError, match="train.lr: expected a finite number > 0") as error:
        load_run_config(None, ["train.lr=" + "9" * 400])  # past the float range: no OverflowError
    assert len(str(error.value)) < 200


def test_command_configs_check_their_ranges_too():
    from cvae_bridge.config import apply_overrides, from_dict

    with pytest.raises(ConfigError, match="generate.num: expected an integer >= 1, got 0"):
        from_dict(GenerateConfig, apply_overrides({"model": "m", "prompts": ["a"]}, ["num=0"]), "generate")


BAD_OPTIONS = [
    (["generate", "--num", "0"], "argument --num: expected an integer >= 1, got 0"),
    (["generate", "--num", "1.5"], "argument --num: expected an integer >= 1, got 1.5"),
    (["generate", "--temperature", "nan"], "argument --temperature: expected a finite number > 0, got nan"),
    (["generate", "--temperature", "inf"], "argument --temperature: expected a finite number > 0, got inf"),
    (["generate", "--temperature", "-1"], "argument --temperature: expected a finite number > 0, got -1"),
    (["generate", "--seed", "-1"], "argument --seed: expected an integer in [0, 2147483647], got -1"),
    (
        ["rollout", "--suite", "aloha", "--episodes", "0"],
        "argument --episodes: expected an integer >= 1, got 0",
    ),
    (
        ["rollout", "--suite", "aloha", "--videos", "-1"],
        "argument --videos: expected an integer >= 0, got -1",
    ),
    (
        ["rollout", "--suite", "aloha", "--temporal-ensemble", "nan"],
        "argument --temporal-ensemble: expected a finite number >= 0, got nan",
    ),
    (
        ["replay", "--data", "d", "--query-period", "0"],
        "argument --query-period: expected an integer >= 1, got 0",
    ),
    (
        ["replay", "--data", "d", "--episodes", "0", "-2"],
        "argument --episodes: expected an integer >= 0, got -2",
    ),
    (["demos", "--suite", "aloha", "--workers", "0"], "argument --workers: expected an integer >= 1, got 0"),
    (
        ["demos", "--suite", "aloha", "--image-size", "0", "32"],
        "argument --image-size: expected an integer >= 1, got 0",
    ),
]


@pytest.mark.parametrize("argv, message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_cli_options_outside_their_range_exit_2_naming_the_option(argv, message, tmp_path, capsys):
    from pathlib import Path

    model = Path(__file__).parents[1] / "artifacts" / "text_to_image" / "model"
    out = tmp_path / "out"
    command, *rest = argv
    required = {
        "generate": ["--model", str(model), "--prompt", "a 3", "--out", str(out)],
        "rollout": ["--model", str(model), "--out", str(out)],
        "replay": ["--model", str(model), "--out", str(out)],
        "demos": ["--out", str(out)],
    }[command]
    with pytest.raises(SystemExit) as exit:
        main([command, *required, *rest])
    assert exit.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert errors == [f"cvae-bridge {command}: error: {message}"]
    assert not out.exists() and not list(tmp_path.iterdir())
