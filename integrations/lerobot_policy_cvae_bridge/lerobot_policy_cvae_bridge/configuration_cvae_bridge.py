"""LeRobot's config for a cvae_bridge policy: type "cvae_bridge", naming the model folder it runs.

    lerobot-eval --policy.type=cvae_bridge --policy.model_path=runs/act/model --env.type=aloha ...

Its input and output features are read from the model folder (conversion.read_layout); features
given in a config file must agree with them, and so must the action of the environment or
dataset that LeRobot's make_policy writes into `output_features`.
"""

from __future__ import annotations

from dataclasses import dataclass

from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import FeatureType, PolicyFeature

from cvae_bridge.errors import ConfigError, UsageError

from .conversion import Feature, LeRobotLayout, check_features, read_layout

TRAIN_WITH_CVAE_BRIDGE = (
    "a cvae_bridge policy is trained by cvae_bridge (`cvae-bridge train <config>`), not by lerobot-train; "
    "LeRobot runs it for evaluation and deployment"
)


@PreTrainedConfig.register_subclass("cvae_bridge")
@dataclass
class CvaeBridgeConfig(PreTrainedConfig):
    # The cvae_bridge model folder written by `cvae-bridge train` (its run_config.json names the
    # observation keys), or a Hugging Face Hub repo id.
    model_path: str = ""
    # ActionChunkPolicy's options: re-plan every n steps (None: the chunk size, open loop in
    # between), and ACT's temporal ensembling weight m (None: off; 0.01 is ACT's).
    query_period: int | None = None
    temporal_ensemble: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model_path:
            raise ConfigError("policy.model_path: give the cvae_bridge model folder (or Hub repo id) to run")
        self.layout: LeRobotLayout = read_layout(self.model_path)  # not a field: draccus does not save it
        self.input_features = self.input_features or to_lerobot(self.layout.input_features)
        self.output_features = self.output_features or to_lerobot(self.layout.output_features)
        self.validate_features()

    def validate_features(self) -> None:
        check_features(self.layout, to_plain(self.input_features), to_plain(self.output_features))

    @property
    def observation_delta_indices(self) -> None:
        return None  # the current observation only

    @property
    def action_delta_indices(self) -> None:
        return None  # LeRobot does not train this policy

    @property
    def reward_delta_indices(self) -> None:
        return None

    def get_optimizer_preset(self):
        raise UsageError(TRAIN_WITH_CVAE_BRIDGE)

    def get_scheduler_preset(self):
        raise UsageError(TRAIN_WITH_CVAE_BRIDGE)


def to_lerobot(features: dict[str, Feature]) -> dict[str, PolicyFeature]:
    return {key: PolicyFeature(FeatureType(f.type), f.shape) for key, f in features.items()}


def to_plain(features: dict[str, PolicyFeature] | None) -> dict[str, Feature]:
    return {key: Feature(FeatureType(f.type).value, tuple(f.shape)) for key, f in (features or {}).items()}
