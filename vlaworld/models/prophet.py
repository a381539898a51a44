"""The Prophet: predicts the next K world latents from the last T, in plain PyTorch.

Numerically this is the research plugin's ``Prophet`` (``world_modality/model.py`` L41-100, branch
``phaseC-flow-head``) as ``SmolVLAWorldPolicy`` builds it (``modeling_smolvla_world.py`` L358-366):
``input_proj`` (D -> hidden, hidden = D), K learned query slots appended after the T history tokens,
a pre-norm ``nn.TransformerEncoder`` (ReLU, FFN 4 x hidden, LayerNorm eps 1e-5, no final norm), and
``output_proj`` on the last K positions. With ``delta_prediction`` the output is a change: the memory is
``z_t + Prophet(z_hist)`` (``predict_memory``).

Notable choices:
- Parameter names equal the plugin's torch modules (``encoder.layers.{i}.self_attn.in_proj_weight``,
  ``linear1``, ``norm1`` ...), so ``prophet.*`` loads unchanged; the layer math is written out here.
- There is no positional embedding anywhere (the plugin has none): the prediction does not depend on
  the order of the T history latents, only on which ones are present. Reproduced, not fixed.
- Dropout is not modelled: the checkpoints use ``prophet_dropout = 0`` and inference is eval mode.
- Runs in the dtype of its weights (float32 in the plugin); the history is cast to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vlaworld.models.registry import lookup
from vlaworld.models.world_inject import PackedAttention


@dataclass(frozen=True, kw_only=True)
class ProphetConfig:
    """The predictor; vlaworld.checkpoint.architecture builds it from a checkpoint's config."""

    latent_dim: int  # D: ``world_latent_dim``
    hidden_dim: int  # the plugin always passes hidden_dim = world_latent_dim
    horizon: int  # K: ``future_offset``
    n_layers: int  # ``prophet_layers``
    n_heads: int  # ``prophet_heads``
    norm_eps: float = 1e-5  # nn.TransformerEncoderLayer's default layer_norm_eps
    ffn_dim: int = field(init=False, repr=False)  # dim_feedforward = 4 * hidden_dim in the plugin
    head_dim: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("latent_dim", "hidden_dim", "horizon", "n_layers", "n_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ProphetConfig.{name} must be positive, got {getattr(self, name)}")
        if self.hidden_dim % self.n_heads:
            raise ValueError(f"Prophet hidden_dim {self.hidden_dim} is not divisible by prophet_heads={self.n_heads}")
        object.__setattr__(self, "ffn_dim", 4 * self.hidden_dim)
        object.__setattr__(self, "head_dim", self.hidden_dim // self.n_heads)


CONFIGS: dict[str, ProphetConfig] = {
    "debug": ProphetConfig(latent_dim=24, hidden_dim=24, horizon=4, n_layers=2, n_heads=2),  # vlaworld.debug
    # the LIBERO checkpoints: V-JEPA 2 ViT-g latents, K = 8 (tests/test_architecture.py)
    "vjepa2-vitg": ProphetConfig(latent_dim=1408, hidden_dim=1408, horizon=8, n_layers=2, n_heads=8),
}


def config_from_name(name: str) -> ProphetConfig:
    """A named config from ``CONFIGS``; an unknown name suggests the closest one."""
    return lookup(CONFIGS, name, "Prophet")


class ProphetLayer(nn.Module):
    """``nn.TransformerEncoderLayer(norm_first=True, activation=relu, batch_first=True)`` in eval mode."""

    def __init__(self, config: ProphetConfig) -> None:
        super().__init__()
        self.self_attn = PackedAttention(width=config.hidden_dim, n_heads=config.n_heads)
        self.linear1 = nn.Linear(config.hidden_dim, config.ffn_dim)
        self.linear2 = nn.Linear(config.ffn_dim, config.hidden_dim)
        self.norm1 = nn.LayerNorm(config.hidden_dim, eps=config.norm_eps)
        self.norm2 = nn.LayerNorm(config.hidden_dim, eps=config.norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x))[0]  # (B, T+K, hidden), full bidirectional attention
        return x + self.linear2(F.relu(self.linear1(self.norm2(x))))


class ProphetEncoder(nn.Module):
    """The layer stack; named like ``nn.TransformerEncoder`` (``layers.{i}``; the plugin sets no final norm)."""

    def __init__(self, config: ProphetConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ProphetLayer(config) for _ in range(config.n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class Prophet(nn.Module):
    """Predict K future latents (or their changes from z_t) from a history of T latents."""

    def __init__(self, config: ProphetConfig) -> None:
        super().__init__()
        self.config = config
        self.input_proj = nn.Linear(config.latent_dim, config.hidden_dim)
        self.query_slots = nn.Parameter(torch.empty(1, config.horizon, config.hidden_dim))
        self.encoder = ProphetEncoder(config)
        self.output_proj = nn.Linear(config.hidden_dim, config.latent_dim)
        nn.init.normal_(self.query_slots, mean=0.0, std=0.02)  # the plugin's init

    def forward(self, z_hist: torch.Tensor) -> torch.Tensor:
        """``z_hist`` [B, T, D] (oldest first) -> [B, K, D] for horizons k = 1..K."""
        cfg = self.config
        if z_hist.dim() != 3 or z_hist.shape[-1] != cfg.latent_dim:
            raise ValueError(f"z_hist must be [B, T, {cfg.latent_dim}], got {tuple(z_hist.shape)}")
        z_hist = z_hist.to(self.input_proj.weight.dtype)
        x = self.input_proj(z_hist)  # (B, T, hidden)
        q = self.query_slots.expand(z_hist.shape[0], -1, -1)  # (B, K, hidden)
        y = self.encoder(torch.cat([x, q], dim=1))  # (B, T+K, hidden)
        return self.output_proj(y[:, -cfg.horizon :])  # (B, K, D)


def predict_memory(prophet: Prophet, z_hist: torch.Tensor, *, delta: bool) -> torch.Tensor:
    """World memory in ``pred`` mode: ``z_t + Prophet(z_hist)`` when ``delta`` else ``Prophet(z_hist)``.

    ``z_hist`` [B, T, D] -> [B, K, D], in the Prophet's dtype (the plugin adds its fp16 z_t to the fp32
    prediction, which promotes to fp32).
    """
    pred = prophet(z_hist)  # (B, K, D)
    if not delta:
        return pred
    return z_hist[:, -1:].to(pred.dtype) + pred  # z_t broadcast over the K horizons


def horizon_cosine(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cosine per row and horizon, ``pred`` / ``target`` [B, K, D] -> [B, K] (norms floored at 1e-8).

    The plugin's definition (``compute_world_cosine_masked``, ``train_utils.compute_world_cosine_per_step``).
    For a ``delta_prediction`` checkpoint the team's "Prophet cosine" compares changes: pass the raw
    Prophet output and ``z_{t+k} - z_t``; comparing absolute latents gives values near 1 that say little.
    """
    p, t = pred.float(), target.float()
    p = p / p.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    t = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return (p * t).sum(dim=-1)  # (B, K)
