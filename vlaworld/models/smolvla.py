"""Assemble SmolVLA's module tree with LeRobot's exact parameter names.

A LeRobot ``SmolVLAPolicy`` state dict is ``model.`` + ``VLAFlowMatching`` names:
``model.vlm_with_expert.vlm.model.{vision_model,connector,text_model}.*``, ``model.vlm_with_expert.vlm.lm_head``,
``model.vlm_with_expert.lm_expert.*`` and the projections ``model.{state,action_in,action_out}_proj``,
``model.action_time_mlp_{in,out}``. Building the same tree makes the checkpoint key map the identity.
The unused ``lm_head`` is kept so files round-trip and the parameter count equals LeRobot's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vlaworld.config import PolicyConfig, VLMConfig
from vlaworld.models.expert import ExpertLayout, VLMWithExpert, expert_intermediate_size
from vlaworld.models.flow_matching import HeadConfig, VLAFlowMatching
from vlaworld.models.siglip import Connector, VisionTransformer
from vlaworld.models.smollm import TextModel


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Resolved architecture: the policy config plus the VLM config it was trained on."""

    policy: PolicyConfig
    vlm: VLMConfig
    image_special_token_ids: tuple[int, int] | None = None

    @property
    def num_vlm_layers(self) -> int:
        n = self.policy.num_vlm_layers
        total = self.vlm.text.num_hidden_layers
        return min(n, total) if n > 0 else total

    @property
    def layout(self) -> ExpertLayout:
        n_vlm = self.num_vlm_layers
        width = int(self.vlm.text.hidden_size * self.policy.expert_width_multiplier)
        return ExpertLayout(
            num_vlm_layers=n_vlm,
            num_expert_layers=self.policy.num_expert_layers if self.policy.num_expert_layers > 0 else n_vlm,
            cross_attn=self.policy.attention_mode == "cross_attn",
            self_attn_every_n_layers=self.policy.self_attn_every_n_layers,
            width=width,
            intermediate_size=expert_intermediate_size(width),
        )

    @property
    def head(self) -> HeadConfig:
        p = self.policy
        return HeadConfig(
            chunk_size=p.chunk_size,
            max_state_dim=p.max_state_dim,
            max_action_dim=p.max_action_dim,
            num_steps=p.num_steps,
            min_period=p.min_period,
            max_period=p.max_period,
            prefix_length=p.prefix_length,
            image_special_token_ids=self.image_special_token_ids if p.add_image_special_tokens else None,
        )


class SmolVLMModel(nn.Module):
    """``vlm.model``: vision tower, connector and the truncated text decoder."""

    def __init__(self, vlm: VLMConfig, num_text_layers: int) -> None:
        super().__init__()
        self.vision_model = VisionTransformer(vlm.image.vision)
        self.connector = Connector(vlm.image.connector)
        self.text_model = TextModel(vlm.text, num_text_layers)


class SmolVLM(nn.Module):
    """``vlm``: the backbone plus its (unused) language-model head."""

    def __init__(self, vlm: VLMConfig, num_text_layers: int) -> None:
        super().__init__()
        self.model = SmolVLMModel(vlm, num_text_layers)
        self.lm_head = nn.Linear(vlm.text.hidden_size, vlm.text.vocab_size, bias=False)


class SmolVLAModel(nn.Module):
    """The root whose ``state_dict`` keys equal a LeRobot checkpoint's (``model.*`` [+ world parts])."""

    def __init__(self, spec: ModelSpec, world_inject: nn.Module | None = None, prophet: nn.Module | None = None):
        super().__init__()
        layout = spec.layout
        vlm = SmolVLM(spec.vlm, layout.num_vlm_layers)
        self.model = VLAFlowMatching(spec.head, VLMWithExpert(vlm, spec.vlm.text, layout), world_inject)
        if prophet is not None:
            self.prophet = prophet

    def cast_parts(
        self,
        *,
        vision: torch.dtype,
        connector: torch.dtype,
        text: torch.dtype,
        lm_head: torch.dtype,
        expert: torch.dtype,
        projections: torch.dtype,
    ) -> None:
        """Put each part in the dtype it runs in (``vlaworld.numerics`` says which for each LeRobot).

        ``projections`` covers the modules LeRobot makes as plain ``nn.Linear`` after the transformers
        models: the expert's cross-attention k/v, the state/action projections and the world modules.
        """
        head = self.model
        vlm = head.vlm_with_expert.vlm
        vlm.model.vision_model.to(vision)
        vlm.model.connector.to(connector)
        vlm.model.text_model.to(text)
        vlm.lm_head.to(lm_head)
        layout = head.vlm_with_expert.layout
        for e, layer in enumerate(head.vlm_with_expert.lm_expert.layers):
            cross_kv = ("self_attn.k_proj", "self_attn.v_proj") if layout.expert_has_cross_kv(e) else ()
            for name, module in layer.named_modules():  # each module cast once: no detour through bf16
                if any(True for _ in module.parameters(recurse=False)):
                    module.to(projections if name in cross_kv else expert)
        head.vlm_with_expert.lm_expert.norm.to(expert)
        for name in ("state_proj", "action_in_proj", "action_out_proj", "action_time_mlp_in", "action_time_mlp_out"):
            getattr(head, name).to(projections)
        if hasattr(head, "world_inject"):
            head.world_inject.to(projections)
        if hasattr(self, "prophet"):
            self.prophet.to(projections)
