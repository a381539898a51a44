"""The one place where a checkpoint's typed config becomes the model configs (and the empty modules).

``PolicyConfig`` (LeRobot's ``config.json``) and the VLM's ``VLMConfig`` decide every module's shape:
the expert's layout and width (``vlm hidden_size * expert_width_multiplier``), the action head, and for
``smolvla_world`` the injection block and the Prophet. The models take only their own configs; a value
a model refuses is reported as a ``ConfigError`` naming the checkpoint's field.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlaworld.config import ConfigError, PolicyConfig
from vlaworld.models.expert import ExpertLayout, expert_intermediate_size
from vlaworld.models.flow_matching import HeadConfig
from vlaworld.models.prophet import Prophet, ProphetConfig
from vlaworld.models.smolvla import SmolVLAConfig, SmolVLAModel, VLMConfig
from vlaworld.models.world_inject import GatedCrossAttention, WorldInjectConfig


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """Every module config a checkpoint implies; ``world_inject`` / ``prophet`` are None where absent."""

    smolvla: SmolVLAConfig
    world_inject: WorldInjectConfig | None = None
    prophet: ProphetConfig | None = None

    def build(self) -> SmolVLAModel:
        """The module tree with LeRobot's parameter names (on the current default device: use meta to fill)."""
        inject = GatedCrossAttention(self.world_inject) if self.world_inject is not None else None
        prophet = Prophet(self.prophet) if self.prophet is not None else None
        return SmolVLAModel(self.smolvla, inject, prophet)


def architecture(
    policy: PolicyConfig,
    vlm: VLMConfig,
    image_special_token_ids: tuple[int, int] | None = None,
    source: object = "config.json",
) -> Architecture:
    """The model configs of a checkpoint (``source`` names its config.json in errors)."""
    try:
        smolvla = SmolVLAConfig(vlm=vlm, layout=expert_layout(policy, vlm), head=head_config(policy, image_special_token_ids))
        world = policy.world
        if world is None:
            return Architecture(smolvla=smolvla)
        inject = WorldInjectConfig(width=smolvla.layout.width, memory_dim=world.world_latent_dim,
                                   n_heads=world.world_inject_num_heads)
        prophet = None
        if world.enable_world_predictor:  # the plugin builds no Prophet otherwise
            prophet = ProphetConfig(latent_dim=world.world_latent_dim, hidden_dim=world.world_latent_dim,
                                    horizon=world.future_offset, n_layers=world.prophet_layers,
                                    n_heads=world.prophet_heads)
        return Architecture(smolvla=smolvla, world_inject=inject, prophet=prophet)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{source} describes a model that cannot be built: {exc}") from exc


def expert_layout(policy: PolicyConfig, vlm: VLMConfig) -> ExpertLayout:
    """Which expert layer serves which VLM layer (LeRobot's ``SmolVLMWithExpertModel.__init__``)."""
    total = vlm.text.num_hidden_layers
    n_vlm = min(policy.num_vlm_layers, total) if policy.num_vlm_layers > 0 else total
    width = int(vlm.text.hidden_size * policy.expert_width_multiplier)
    return ExpertLayout(
        num_vlm_layers=n_vlm,
        num_expert_layers=policy.num_expert_layers if policy.num_expert_layers > 0 else n_vlm,
        cross_attn=policy.attention_mode == "cross_attn",
        self_attn_every_n_layers=policy.self_attn_every_n_layers,
        width=width,
        intermediate_size=expert_intermediate_size(width),
    )


def head_config(policy: PolicyConfig, image_special_token_ids: tuple[int, int] | None = None) -> HeadConfig:
    """The flow-matching head: chunk, padded widths, denoising steps, time embedding, prefix layout."""
    return HeadConfig(
        chunk_size=policy.chunk_size,
        max_state_dim=policy.max_state_dim,
        max_action_dim=policy.max_action_dim,
        num_steps=policy.num_steps,
        min_period=policy.min_period,
        max_period=policy.max_period,
        prefix_length=policy.prefix_length,
        image_special_token_ids=image_special_token_ids if policy.add_image_special_tokens else None,
    )
