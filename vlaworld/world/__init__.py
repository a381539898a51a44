"""The world modality at rollout: camera frames -> V-JEPA 2 latents -> the Prophet -> the [B, K, D] memory.

``memory`` (the memory modes, the clip window m and the frame history), ``preprocess`` (frames to the
encoder's input, as the training latents or the plugin's rollout made them), ``diagnostics`` (the
Prophet's cosine per horizon, measured in the rollout).
"""

from vlaworld.world.diagnostics import HorizonCosine
from vlaworld.world.memory import (
    LATENT_MODES,
    FrameHistory,
    WindowMismatchError,
    WorldMemory,
    WorldRollout,
    resolve_window,
)
from vlaworld.world.preprocess import preprocess_clip

__all__ = [
    "LATENT_MODES", "FrameHistory", "HorizonCosine", "WindowMismatchError", "WorldMemory", "WorldRollout",
    "preprocess_clip", "resolve_window",
]
