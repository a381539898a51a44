"""Feature keys and the feature type of LeRobot batches: the names every layer above the models speaks.

The env (vlaworld.envs, below this layer) defines its own observation names; a test keeps them equal.
"""

from __future__ import annotations

from dataclasses import dataclass

STATE_KEY = "observation.state"
ACTION_KEY = "action"
TASK_KEY = "task"
IMAGE_PREFIX = "observation.images."  # + camera name, e.g. observation.images.image (agentview)
# [B, m+T-1, H, W, 3]: the world camera's recent frames, oldest first (vlaworld's own batch key)
WORLD_FRAMES_KEY = "observation.world_frames"


@dataclass(frozen=True, kw_only=True)
class Feature:
    """A LeRobot ``PolicyFeature``: ``type`` is a FeatureType name (VISUAL, STATE, ACTION, ENV...)."""

    type: str
    shape: tuple[int, ...]
