"""The research plugin's world modality, restated from its source on top of the real LeRobot (torch only).

The plugin (charbelsan/world-modality-vla, branch phaseC-flow-head @f2eb59a) is not on PyPI. Its world
parts are small and written here line for line from its source, as torch modules: ``Prophet`` and
``GatedCrossAttention`` (world_modality/model.py L41-165), ``encode_temporal`` (world_modality/vision.py
L92-142, the HF ``VJEPA2Model`` it wraps is transformers' own), the rollout memory of
``_build_world_memory_rollout`` (lerobot_policy_world_modality/modeling_smolvla_world.py L492-554) and
the injection before ``action_out_proj`` (``WorldInjectedVLAFlowMatching.denoise_step`` L286-315).
Everything else is LeRobot's SmolVLA itself (harness.py runs this inside the oracle environment).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # VJEPA2VideoProcessor image_mean (the plugin reads processor.image_mean)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Prophet(nn.Module):
    """model.py L41-100: [history || K query slots] through a pre-norm TransformerEncoder, last K read out."""

    def __init__(self, emb_dim: int, hidden_dim: int, future_horizon: int, n_layers: int = 2, n_heads: int = 8,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.future_horizon = future_horizon
        self.input_proj = nn.Linear(emb_dim, hidden_dim)
        self.query_slots = nn.Parameter(torch.zeros(1, future_horizon, hidden_dim))
        layer = nn.TransformerEncoderLayer(d_model=hidden_dim, nhead=n_heads, dim_feedforward=4 * hidden_dim,
                                           dropout=dropout, batch_first=True, norm_first=True)
        # The plugin keeps enable_nested_tensor=True, which torch disables for norm_first layers anyway.
        self.encoder = nn.TransformerEncoder(layer, num_layers=n_layers, enable_nested_tensor=False)
        self.output_proj = nn.Linear(hidden_dim, emb_dim)
        nn.init.normal_(self.query_slots, mean=0.0, std=0.02)

    def forward(self, z_hist: torch.Tensor) -> torch.Tensor:
        q = self.query_slots.expand(z_hist.shape[0], -1, -1)
        y = self.encoder(torch.cat([self.input_proj(z_hist), q], dim=1))
        return self.output_proj(y[:, -self.future_horizon :, :])


class GatedCrossAttention(nn.Module):
    """model.py L103-141: h + tanh(gate) * MHA(h, proj(mem), proj(mem)), skipped when closed or non-finite."""

    def __init__(self, d_model: int, n_heads: int, future_dim: int, track_stats: bool = False) -> None:
        super().__init__()
        self.future_proj = nn.Linear(future_dim, d_model)
        self.cross_attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.gate = nn.Parameter(torch.tensor(0.0))
        self.track_stats = track_stats

    def forward(self, act_h: torch.Tensor, future_memory: torch.Tensor) -> torch.Tensor:
        gate = torch.tanh(self.gate).to(dtype=act_h.dtype)
        if float(gate.abs().detach().cpu().item()) < 1e-6 or not torch.isfinite(future_memory).all():
            return act_h
        kv = self.future_proj(future_memory.to(dtype=act_h.dtype))
        ctx, _ = self.cross_attn(query=act_h, key=kv, value=kv, need_weights=self.track_stats,
                                 average_attn_weights=not self.track_stats)
        return act_h + gate * ctx


class InjectThenProject(nn.Module):
    """Stands in for ``action_out_proj``: the plugin's ``_inject`` (memory cast to float32) right before it."""

    def __init__(self, out_proj: nn.Module, inject: GatedCrossAttention, memory: torch.Tensor | None) -> None:
        super().__init__()
        self.out_proj, self.inject, self.memory = out_proj, inject, memory

    def forward(self, suffix_out: torch.Tensor) -> torch.Tensor:
        if self.memory is not None:
            suffix_out = self.inject(suffix_out, self.memory.to(torch.float32))
        return self.out_proj(suffix_out)


@torch.no_grad()
def encode_temporal(backbone: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """vision.py L92-142: [B, m, C, H, W] in [0, 1] -> bilinear 256², ImageNet-normalised, HF VJEPA2Model
    in its dtype (float16 in the plugin), mean of last_hidden_state over all tokens -> [B, D]."""
    B, m, C, H, W = frames.shape
    frames = frames.float()
    if frames.max() > 1.0:
        frames = frames / 255.0
    frames = F.interpolate(frames.view(B * m, C, H, W), size=(256, 256), mode="bilinear",
                           align_corners=False).view(B, m, C, 256, 256)
    mean = torch.tensor(IMAGENET_MEAN, device=frames.device).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=frames.device).view(1, 1, 3, 1, 1)
    frames = ((frames - mean) / std).to(dtype=backbone.dtype)
    return backbone(pixel_values_videos=frames).last_hidden_state.mean(dim=1)


def rollout_window(world: dict) -> int:
    """``_rollout_temporal_window`` (modeling_smolvla_world.py L407-415)."""
    w = int(world.get("world_rollout_temporal_window", 0) or 0)
    if w > 0:
        return w
    suffix = str(world.get("latent_suffix", "") or "")
    return max(1, int(suffix[1:])) if suffix.startswith("m") and suffix[1:].isdigit() else 1


def first_memory(first_image: torch.Tensor, backbone: nn.Module, prophet: Prophet, world: dict) -> torch.Tensor | None:
    """The memory of an episode's first step: SigLIP image [-1, 1] -> [0, 1] clip of m copies -> z; history of T
    copies -> z_t + Prophet(z_hist) (delta) or Prophet(z_hist); None if non-finite (select_action L630-631)."""
    img01 = ((first_image + 1.0) * 0.5).clamp(0.0, 1.0)
    m, t = rollout_window(world), int(world.get("context_frames", 4))
    if m > 1:
        z = encode_temporal(backbone, torch.stack([img01] * m, dim=1))
    else:  # vision.py _encode_vjepa_batch: one frame as a T = 1 video, same preprocessing
        z = encode_temporal(backbone, img01[:, None])
    z_hist = torch.stack([z] * t, dim=1)  # [B, T, D] in the encoder's dtype
    pred = prophet(z_hist.float())
    mem = z_hist[:, -1:, :] + pred if world.get("delta_prediction", True) else pred
    return mem if torch.isfinite(mem).all() else None
