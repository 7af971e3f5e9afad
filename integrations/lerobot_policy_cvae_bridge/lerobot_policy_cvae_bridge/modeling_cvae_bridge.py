"""LeRobot's policy class for a cvae_bridge model folder: ActionChunkPolicy behind PreTrainedPolicy.

LeRobot's batches go to ActionChunkPolicy as they are (it reads LeRobot's convention: torch
tensors, images float (B, 3, H, W) in [0, 1], the instruction as `batch["task"]`), so the actions
are exactly cvae_bridge's own. The weights are the model folder's, loaded strictly by cvae_bridge;
a LeRobot policy folder (export.py) holds only LeRobot's config and processors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.pretrained import PreTrainedPolicy
from torch import Tensor

from cvae_bridge import ActionChunkPolicy
from cvae_bridge.errors import ConfigError, UsageError

from .configuration_cvae_bridge import TRAIN_WITH_CVAE_BRIDGE, CvaeBridgeConfig


class CvaeBridgePolicy(PreTrainedPolicy):
    config_class = CvaeBridgeConfig
    name = "cvae_bridge"

    def __init__(
        self,
        config: CvaeBridgeConfig,
        dataset_stats: dict[str, Any] | None = None,
        dataset_meta: Any = None,
    ):
        """Load `config.model_path`. `dataset_stats` and `dataset_meta` (LeRobot's make_policy
        passes them with a dataset) are not used: the model normalises with its training statistics."""
        super().__init__(config)
        config.validate_features()  # make_policy has set output_features to the env's or dataset's action
        self.policy = ActionChunkPolicy.from_pretrained(
            config.model_path,
            device=config.device,
            query_period=config.query_period,
            temporal_ensemble=config.temporal_ensemble,
        )
        self.model = self.policy.model  # a submodule, so that LeRobot's .to(device) and .eval() reach it

    @classmethod
    def from_pretrained(
        cls,
        pretrained_name_or_path: str | Path,
        *,
        config: CvaeBridgeConfig | None = None,
        dataset_stats: dict[str, Any] | None = None,
        dataset_meta: Any = None,
        **hub_options: Any,
    ) -> CvaeBridgePolicy:
        """A LeRobot policy folder (or Hub repo) holding this type's config.json, or `config` as
        LeRobot's make_policy passes it; `hub_options` (token, revision, ...) are for reading that
        config.json, so they go only with no `config`. The weights come from the model folder."""
        if config is not None and hub_options:
            raise ConfigError(f"{sorted(hub_options)}: options for reading config.json, given with a config")
        if config is None:
            config = PreTrainedConfig.from_pretrained(pretrained_name_or_path, **hub_options)
        policy = cls(config, dataset_stats, dataset_meta)
        policy.to(config.device)
        return policy.eval()

    def _save_pretrained(self, save_directory: Path) -> None:
        self.config._save_pretrained(save_directory)  # the weights stay in the model folder

    def reset(self) -> None:
        self.policy.reset()

    def select_action(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, d) actions for the current step, from stored chunks between queries."""
        return self.policy.select_action(batch)

    def predict_action_chunk(self, batch: dict[str, Tensor]) -> Tensor:
        """The (B, k, d) chunk predicted from this observation; the stored chunks stay as they are."""
        return self.policy.predict_action_chunk(batch)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict | None]:
        raise UsageError(TRAIN_WITH_CVAE_BRIDGE)

    def get_optim_params(self) -> dict:
        raise UsageError(TRAIN_WITH_CVAE_BRIDGE)
