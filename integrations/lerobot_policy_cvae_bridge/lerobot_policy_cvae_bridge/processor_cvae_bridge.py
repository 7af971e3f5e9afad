"""The policy's processors: batching and device placement, no normaliser (the cvae_bridge model
normalises states and un-normalises actions itself, with the statistics saved in its folder)."""

from __future__ import annotations

from typing import Any

from lerobot.processor import (
    AddBatchDimensionProcessorStep,
    DeviceProcessorStep,
    PolicyAction,
    PolicyProcessorPipeline,
    RenameObservationsProcessorStep,
)
from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action
from lerobot.utils.constants import POLICY_POSTPROCESSOR_DEFAULT_NAME, POLICY_PREPROCESSOR_DEFAULT_NAME

from .configuration_cvae_bridge import CvaeBridgeConfig


def make_cvae_bridge_pre_post_processors(
    config: CvaeBridgeConfig, dataset_stats: dict[str, Any] | None = None
) -> tuple[
    PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
    PolicyProcessorPipeline[PolicyAction, PolicyAction],
]:
    """LeRobot's factory for this policy type (found by name). `dataset_stats` is not used: the
    model's own training statistics apply, so nothing is normalised twice."""
    preprocessor = PolicyProcessorPipeline[dict[str, Any], dict[str, Any]](
        # lerobot-eval overrides these two steps by name: the rename map and the device.
        steps=[
            RenameObservationsProcessorStep(rename_map={}),
            AddBatchDimensionProcessorStep(),
            DeviceProcessorStep(device=config.device),
        ],
        name=POLICY_PREPROCESSOR_DEFAULT_NAME,
    )
    postprocessor = PolicyProcessorPipeline[PolicyAction, PolicyAction](
        steps=[DeviceProcessorStep(device="cpu")],
        name=POLICY_POSTPROCESSOR_DEFAULT_NAME,
        to_transition=policy_action_to_transition,
        to_output=transition_to_policy_action,
    )
    return preprocessor, postprocessor
