"""Every shipped run config loads, validates and builds its model (a typo in a key fails here, not
an hour into a benchmark)."""

import pytest
from conftest import CONFIGS

from cvae_bridge.config import load_run_config
from cvae_bridge.model import ConditionalVAE


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_config_builds(name: str) -> None:
    config = load_run_config(CONFIGS / name)
    model = ConditionalVAE(config.model)
    assert set(model.target_encoders) == set(config.model.targets)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
