"""Every shipped run config loads, validates and builds its model (a typo in a key fails here, not
an hour into a benchmark; those that take sizes from their robot dataset, on an ALOHA sim
dataset's features); every config field is described for `cvae-bridge config --explain`."""

import dataclasses

import pytest
from conftest import ALOHA_SIM_FEATURES, CONFIGS

from cvae_bridge.cli import main
from cvae_bridge.config import (
    EvalConfig,
    KLConfig,
    LoRAConfig,
    ModelConfig,
    RunConfig,
    SharpenConfig,
    TargetConfig,
    TrainConfig,
    load_run_config,
    unset_sizes,
)
from cvae_bridge.data.resolve import resolve_run_config
from cvae_bridge.model import ConditionalVAE
from cvae_bridge.registry import REGISTRIES
from cvae_bridge.utils.field_docs import field_descriptions


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_config_builds(name: str) -> None:
    config = load_run_config(CONFIGS / name)
    if unset_sizes(config.model):
        config, _ = resolve_run_config(config, ALOHA_SIM_FEATURES)
    model = ConditionalVAE(config.model)
    assert set(model.target_encoders) == set(config.model.targets)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0


def _config_classes() -> list[type]:
    """The run config's own dataclasses and every registered component's Config."""
    classes = [
        RunConfig,
        ModelConfig,
        TargetConfig,
        KLConfig,
        TrainConfig,
        LoRAConfig,
        SharpenConfig,
        EvalConfig,
    ]
    for registry in REGISTRIES.values():
        classes += [registry.get(name).Config for name in registry.names()]
    return classes


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda cls: f"{cls.__module__}.{cls.__name__}")
def test_every_config_field_is_described(cls: type) -> None:
    """`cvae-bridge config --explain` reads each field's description from the comment beside it."""
    described = field_descriptions(cls)
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in described]
    assert not missing, f"{cls.__name__}: fields without a comment: {missing}"


def test_config_explain_prints_every_field_with_its_range_and_meaning(capsys) -> None:
    assert main(["config", str(CONFIGS / "metaworld_mt10.yaml"), "--set", "train.lr=3e-4", "--explain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "train.lr: 0.0003  # a finite number > 0; peak learning rate (AdamW)" in lines
    assert "train.schedule: cosine  # one of cosine, constant; after warm-up" in lines
    keys = {line.split(":")[0] for line in lines}
    assert {"model.latent_dim", "model.targets.action.decoder.chunk_size", "data.path", "eval.split"} <= keys
    assert all("  # " in line and not line.endswith("; ") for line in lines)
