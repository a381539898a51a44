"""What a checkpoint and a run are configured with: torch-free, imported by every layer above the models.

``policy`` (PolicyConfig, read from LeRobot's config.json), ``world`` (the plugin's world fields, memory
modes), ``features`` (batch keys, Feature) and ``numerics`` (which LeRobot generation to reproduce).
"""

from vlaworld.config.features import ACTION_KEY, IMAGE_PREFIX, STATE_KEY, TASK_KEY, WORLD_FRAMES_KEY, Feature
from vlaworld.config.numerics import DEFAULT_PROFILE, PROFILES, NumericsError, NumericsProfile, RuntimeDtypes, profile
from vlaworld.config.policy import ConfigError, PolicyConfig, check_field_types
from vlaworld.config.world import MEMORY_MODES, WORLD_PREPROCESS_MODES, WorldConfig, WorldConfigError, world_fields

__all__ = [
    "ACTION_KEY", "DEFAULT_PROFILE", "IMAGE_PREFIX", "MEMORY_MODES", "PROFILES", "STATE_KEY", "TASK_KEY",
    "WORLD_FRAMES_KEY", "WORLD_PREPROCESS_MODES", "ConfigError", "Feature", "NumericsError", "NumericsProfile",
    "PolicyConfig", "RuntimeDtypes", "WorldConfig", "WorldConfigError", "check_field_types", "profile",
    "world_fields",
]
