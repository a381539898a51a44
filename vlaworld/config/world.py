"""World-modality fields of a ``smolvla_world`` config.json (the research plugin's SmolVLAWorldConfig).

Fields and defaults: ``docs/world_plugin_facts.md`` §3 (plugin branch ``phaseC-flow-head``). The
fusion ablations change the architecture in ways vlaworld does not implement, so non-default values
are refused; training-only fields are accepted and ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from vlaworld.errors import VlaworldError

MEMORY_MODES = ("pred", "none", "zero", "random", "random_scaled", "signflip", "shuffle")
# V-JEPA input preprocessing (vlaworld.world.preprocess): as the training latents were made, or the plugin's rollout.
WORLD_PREPROCESS_MODES = ("default", "legacy")
PLUGIN_ROLLOUT_MODES = ("pred", "zero", "random")  # what world_memory_mode_rollout may hold in a checkpoint

# Plugin fields that only matter for training, caching or logging.
WORLD_TRAINING_ONLY = frozenset(
    {
        "dataset_repo_id", "cache_dir", "world_latents_source", "init_from_strict", "world_gate_init",
        "world_memory_mode_train", "log_attn_stats", "log_grad_stats", "prophet_dropout", "lambda_world",
        # Never read by the plugin: the first camera is always the world camera.
        "world_use_first_camera_only",
        # Only consulted when world_prefix_tokens > 0 (refused below).
        "world_prefix_block", "world_prefix_gate_init", "world_prefix_num_heads",
    }
)
# Fusion ablations: field -> its default (the only value vlaworld runs).
WORLD_ABLATIONS = {"world_inject_suffix_in": False, "world_prefix_tokens": 0, "world_prefix_cross_attn": False}


class WorldConfigError(VlaworldError, ValueError):
    """A world field vlaworld cannot honour."""


@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """Geometry and rollout semantics of the world memory (SPEC §6)."""

    world_latent_dim: int = 1408  # D
    context_frames: int = 4  # T: latents the Prophet reads
    future_offset: int = 8  # K: latents it predicts
    latent_suffix: str = "m4"  # the training latents' clip length ("m4": 4 frames)
    world_rollout_temporal_window: int = 0  # m when > 0
    enable_world_injection: bool = True
    world_inject_num_heads: int = 8
    world_memory_mode_rollout: str = "pred"
    enable_world_predictor: bool = True
    prophet_layers: int = 2
    prophet_heads: int = 8
    delta_prediction: bool = True
    world_vision_model_name: str = "facebook/vjepa2-vitg-fpc64-256"
    init_from_policy_path: str | None = ""

    def __post_init__(self) -> None:
        if self.world_memory_mode_rollout not in PLUGIN_ROLLOUT_MODES:
            raise WorldConfigError(
                f"world_memory_mode_rollout={self.world_memory_mode_rollout!r}: the plugin knows "
                f"{PLUGIN_ROLLOUT_MODES} (it silently ran anything else as 'pred'); fix the config.json"
            )
        for name in ("world_latent_dim", "context_frames", "future_offset"):
            if getattr(self, name) < 1:
                raise WorldConfigError(f"{name}={getattr(self, name)} must be >= 1")

    @property
    def implied_window(self) -> int | None:
        """m implied by how the training latents were made (``latent_suffix`` ``m4`` -> 4), if stated."""
        match = re.fullmatch(r"m(\d+)", self.latent_suffix or "")
        return max(1, int(match.group(1))) if match else None

    @property
    def temporal_window(self) -> int:
        """m the plugin rolls out with: the forced window, else the latent suffix, else 1."""
        if self.world_rollout_temporal_window > 0:
            return self.world_rollout_temporal_window
        return self.implied_window or 1

    @classmethod
    def from_lerobot(cls, d: dict, source: object = "config.json") -> WorldConfig:
        for name, default in WORLD_ABLATIONS.items():
            if name in d and d[name] != default:
                raise WorldConfigError(
                    f"{source}: {name}={d[name]!r}: this fusion ablation changes the architecture and is "
                    f"not implemented in vlaworld (only {name}={default!r} runs)"
                )
        kwargs = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        return cls(**kwargs)


def world_fields() -> frozenset[str]:
    """config.json fields the world plugin adds on top of SmolVLAConfig."""
    return frozenset(f.name for f in fields(WorldConfig)) | WORLD_TRAINING_ONLY | frozenset(WORLD_ABLATIONS)
