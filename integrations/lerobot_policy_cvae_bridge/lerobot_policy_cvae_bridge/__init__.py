"""LeRobot policy plugin for cvae_bridge: the policy type "cvae_bridge" runs a cvae_bridge model
folder in LeRobot's evaluation and deployment tools.

LeRobot imports every installed distribution named `lerobot_policy_*` at start-up
(`lerobot.utils.import_utils.register_third_party_plugins`); importing this package registers the
config (`@PreTrainedConfig.register_subclass("cvae_bridge")`). LeRobot's factory then finds the
rest by naming convention: `CvaeBridgeConfig` in configuration_cvae_bridge -> `CvaeBridgePolicy` in
modeling_cvae_bridge, and `make_cvae_bridge_pre_post_processors` in processor_cvae_bridge.
"""

from .configuration_cvae_bridge import CvaeBridgeConfig
from .modeling_cvae_bridge import CvaeBridgePolicy
from .processor_cvae_bridge import make_cvae_bridge_pre_post_processors

__all__ = ["CvaeBridgeConfig", "CvaeBridgePolicy", "make_cvae_bridge_pre_post_processors"]
