"""World-modality fields of a ``smolvla_world`` config.json (the research plugin's SmolVLAWorldConfig)."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields


@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """Geometry and rollout semantics of the world memory (SPEC §6)."""

    world_latent_dim: int = 1408
    context_frames: int = 4  # T: latents the Prophet reads
    future_offset: int = 8  # K: latents it predicts
    latent_suffix: str = "m4"
    world_rollout_temporal_window: int = 0
    delta_prediction: bool = True
    world_memory_mode_rollout: str = "pred"
    world_vision_model_name: str = "facebook/vjepa2-vitg-fpc64-256"
    init_from_policy_path: str | None = None

    @property
    def temporal_window(self) -> int:
        """m: frames per V-JEPA clip — the forced window, else the latent suffix (``m4`` -> 4), else 1."""
        if self.world_rollout_temporal_window > 0:
            return self.world_rollout_temporal_window
        match = re.search(r"m(\d+)", self.latent_suffix or "")
        return int(match.group(1)) if match else 1

    @classmethod
    def from_lerobot(cls, d: dict) -> WorldConfig:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def world_fields() -> frozenset[str]:
    """config.json fields the world plugin adds on top of SmolVLAConfig."""
    return frozenset(f.name for f in fields(WorldConfig))
