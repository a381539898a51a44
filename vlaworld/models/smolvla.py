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

from vlaworld.models.expert import ExpertLayout, VLMWithExpert
from vlaworld.models.flow_matching import HeadConfig, VLAFlowMatching
from vlaworld.models.siglip import Connector, ImageEncoderConfig, VisionTransformer
from vlaworld.models.smollm import TextConfig, TextModel


@dataclass(frozen=True, kw_only=True)
class VLMConfig:
    """The parts of a SmolVLM ``config.json`` SmolVLA uses (the VLM named by ``vlm_model_name``)."""

    image: ImageEncoderConfig
    text: TextConfig

    @classmethod
    def from_hf(cls, d: dict) -> VLMConfig:
        """Parse a SmolVLM ``config.json`` dict (``vision_config``, ``text_config`` and the connector's fields)."""
        return cls(image=ImageEncoderConfig.from_hf(d), text=TextConfig.from_hf(d["text_config"]))


@dataclass(frozen=True, kw_only=True)
class SmolVLAConfig:
    """The architecture of one SmolVLA: the VLM it was trained on, the expert beside it, the action head.

    Built from a checkpoint's config in one place (``vlaworld.checkpoint.architecture``).
    """

    vlm: VLMConfig
    layout: ExpertLayout
    head: HeadConfig


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

    def __init__(self, config: SmolVLAConfig, world_inject: nn.Module | None = None, prophet: nn.Module | None = None):
        super().__init__()
        self.config = config
        vlm = SmolVLM(config.vlm, config.layout.num_vlm_layers)
        self.model = VLAFlowMatching(config.head, VLMWithExpert(vlm, config.vlm.text, config.layout), world_inject)
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
        """Put each part in the dtype it runs in (``vlaworld.config.numerics`` says which for each LeRobot).

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
