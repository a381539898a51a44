"""The model the benchmark times: SmolVLA(-world) with random weights at a named size.

``real`` is SmolVLM2-500M-Video-Instruct's architecture under a LIBERO ``smolvla_world`` config (2
cameras at 256² resized to 512², 48 language tokens, chunk 50, 10 Euler steps, 16 VLM layers) with
the V-JEPA 2 ViT-g encoder (m=4, T=4, K=8, D=1408); ``debug`` is the built-in demo policy's sizes.
Weights are random: latency does not depend on their values, and nothing has to be downloaded.
Modules are built on the meta device and materialised once on the target device (no 2x peak).
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vlaworld import debug, demo
from vlaworld.checkpoint.architecture import Architecture, architecture
from vlaworld.config import PolicyConfig
from vlaworld.models.flow_matching import VLAFlowMatching
from vlaworld.models.smolvla import SmolVLAModel, VLMConfig
from vlaworld.models.vjepa2 import VJEPA2Config, VJEPA2Encoder
from vlaworld.world import WorldMemory, WorldRollout

# SmolVLM2-500M-Video-Instruct's config.json, the fields SmolVLA reads (as in the parameter-count test).
REAL_VLM_JSON: dict[str, Any] = {
    "model_type": "smolvlm", "scale_factor": 4,
    "vision_config": {"hidden_size": 768, "image_size": 512, "model_type": "smolvlm_vision",
                      "num_attention_heads": 12, "patch_size": 16},
    "text_config": {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                    "num_attention_heads": 15, "num_key_value_heads": 5, "head_dim": 64, "rms_norm_eps": 1e-5,
                    "vocab_size": 49280, "hidden_act": "silu", "rope_theta": 100000},
}
# What a LIBERO smolvla_world checkpoint changes relative to the demo's config.json (the debug size's
# fields back to SmolVLA's and the plugin's; the schedule is the same).
REAL_POLICY_OVERRIDES: dict[str, Any] = {
    "max_state_dim": 32, "max_action_dim": 32, "resize_imgs_with_padding": [512, 512], "num_vlm_layers": 16,
    "pad_language_to": "max_length", "vlm_model_name": "HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
    "world_latent_dim": 1408, "context_frames": 4, "future_offset": 8, "latent_suffix": "m4",
    "world_inject_num_heads": 8, "prophet_heads": 8, "world_vision_model_name": "facebook/vjepa2-vitg-fpc64-256",
}


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """One benchmark size: the policy config.json, the VLM config, the world encoder and the inputs."""

    name: str
    policy_json: dict[str, Any] = field(repr=False)
    vlm_json: dict[str, Any] = field(repr=False)
    encoder: VJEPA2Config
    camera_size: int = 256  # env frames (LIBERO renders 256²)
    language_tokens: int = 48

    @property
    def policy(self) -> PolicyConfig:
        return PolicyConfig.from_lerobot(self.policy_json)

    @property
    def vlm(self) -> VLMConfig:
        return VLMConfig.from_hf(self.vlm_json)

    @property
    def architecture(self) -> Architecture:
        return architecture(self.policy, self.vlm, source=f"benchmark config {self.name!r}")


def _real_policy_json() -> dict[str, Any]:
    return demo.config_json() | copy.deepcopy(REAL_POLICY_OVERRIDES)


CONFIGS: dict[str, BenchConfig] = {
    "debug": BenchConfig(name="debug", policy_json=demo.config_json(), vlm_json=copy.deepcopy(debug.VLM_JSON),
                         encoder=VJEPA2Config.from_hf(debug.VJEPA_JSON)),
    "real": BenchConfig(name="real", policy_json=_real_policy_json(), vlm_json=copy.deepcopy(REAL_VLM_JSON),
                        encoder=VJEPA2Config.from_name("vit_giant")),
}


def bench_config(name: str) -> BenchConfig:
    if name not in CONFIGS:
        close = difflib.get_close_matches(name, CONFIGS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise KeyError(f"unknown benchmark config '{name}'; known: {', '.join(CONFIGS)}.{hint}")
    return CONFIGS[name]


@dataclass
class Stack:
    """Everything one chunk touches: the SmolVLA(-world) model and the world memory (mode ``pred``)."""

    config: BenchConfig
    model: SmolVLAModel
    world: WorldMemory | None  # None when built without the world encoder (SmolVLA-only timing)
    device: torch.device
    dtype: torch.dtype

    @property
    def head(self) -> VLAFlowMatching:
        return self.model.model


@torch.no_grad()
def random_init_(module: nn.Module, seed: int) -> None:
    """Fill materialised (``to_empty``) parameters: N(0, 0.02) matrices, LayerNorm-like ones at 1,
    other vectors at 0, scalar gates at 0.5 (open, so the world path runs)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if p.ndim >= 2:
            values = torch.randn(p.shape, generator=gen) * 0.02
        elif p.ndim == 0:
            values = torch.tensor(0.5)
        elif name.endswith("weight") and "norm" in name.rsplit(".", 2)[-2]:
            values = torch.ones(p.shape)  # LayerNorm / RMSNorm scale
        else:
            values = torch.zeros(p.shape)
        p.copy_(values.to(p.dtype))
    if next(module.buffers(), None) is not None:
        raise ValueError("random_init_ fills parameters only, and this module has buffers (to_empty left them unset)")


def build_stack(config: BenchConfig, device: torch.device | str, dtype: torch.dtype, *, seed: int = 0,
                world_encoder: bool = True) -> Stack:
    """Random-weight model + world memory at ``config``'s sizes, eval mode, on ``device`` in ``dtype``."""
    device = torch.device(device)
    with torch.device("meta"):
        model = config.architecture.build()
        encoder = VJEPA2Encoder(config.encoder) if world_encoder else None
    model = model.to_empty(device=device).to(dtype)
    random_init_(model, seed)
    # The expert output is cast to float32 before the injection and action_out_proj (LeRobot stores
    # action_out_proj in float32); a blanket cast to half precision would feed them mismatched dtypes.
    model.model.action_out_proj.float()
    model.model.world_inject.float()
    if encoder is not None:
        encoder = encoder.to_empty(device=device).to(dtype)
        random_init_(encoder, seed + 1)
        encoder.eval().requires_grad_(False)
    model.eval().requires_grad_(False)
    policy = config.policy
    w = policy.world
    rollout = WorldRollout(mode="pred", window=w.temporal_window, context=w.context_frames,
                           horizon=w.future_offset, latent_dim=w.world_latent_dim, delta=w.delta_prediction,
                           camera=policy.image_features[0])
    if not model.model.world_inject.is_open():
        raise ValueError("the random injection gate is closed; the world path would be skipped")
    world = WorldMemory(rollout, model.model.world_inject, model.prophet, encoder) if encoder is not None else None
    return Stack(config=config, model=model, world=world, device=device, dtype=dtype)


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
