"""SmolLM2 (Llama-style) decoder pieces shared by SmolVLA's VLM text model and its action expert.

Module and parameter names equal Hugging Face's Llama names (``self_attn.q_proj``, ``mlp.gate_proj``,
``input_layernorm``…), so LeRobot checkpoint keys map by prefix only. Numerics follow LeRobot's
``smolvlm_with_expert.py``, not transformers' Llama, where they differ:
- RoPE uses a hard-coded base of 10 000 (the text config's ``rope_theta`` = 100 000 is ignored) and is
  computed in float32 on split halves;
- attention is eager with fp32 scores and softmax, masked with ``finfo(float32).min``, probabilities
  cast to the value dtype before ``@ V``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ROPE_MAX_WAVELENGTH = 10_000  # LeRobot apply_rope default; SmolVLA never passes the config's rope_theta


@dataclass(frozen=True, kw_only=True)
class TextConfig:
    """The decoder geometry (a subset of a Hugging Face Llama ``text_config``)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    vocab_size: int

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )

    @classmethod
    def from_hf(cls, d: dict) -> TextConfig:
        """Read a Hugging Face ``text_config`` dict (SmolVLM's is a Llama config)."""
        act = d.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"text_config.hidden_act={act!r} is not supported (SmolLM2 uses 'silu')")
        for flag in ("attention_bias", "mlp_bias"):
            if d.get(flag, False):
                raise ValueError(f"text_config.{flag}=True is not supported (SmolLM2 has no biases)")
        heads = d["num_attention_heads"]
        return cls(
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=d.get("num_key_value_heads", heads),
            head_dim=d.get("head_dim") or d["hidden_size"] // heads,
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            vocab_size=d["vocab_size"],
        )


class RMSNorm(nn.Module):
    """Llama RMSNorm: normalise in fp32, cast back to the input dtype, then scale (weight dtype wins)."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class MLP(nn.Module):
    """SwiGLU feed-forward: ``down(silu(gate(x)) * up(x))``, no biases."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Attention(nn.Module):
    """Projection container; the attention itself is done by the caller (streams are joined there).

    ``kv_in_features`` differs from ``hidden_size`` in the expert's cross-attention layers, whose k/v
    re-project the VLM's keys and values (``num_kv_heads * head_dim`` wide) instead of hidden states.
    """

    def __init__(
        self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int, kv_in_features: int | None = None
    ) -> None:
        super().__init__()
        self.head_dim = head_dim
        kv_in = hidden_size if kv_in_features is None else kv_in_features
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(kv_in, num_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(kv_in, num_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=False)


class DecoderLayer(nn.Module):
    """One Llama decoder layer's parameters; ``residual_block`` runs everything after attention."""

    def __init__(self, cfg: TextConfig, hidden_size: int, intermediate_size: int, kv_in_features: int | None = None):
        super().__init__()
        self.self_attn = Attention(
            hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, kv_in_features
        )
        self.mlp = MLP(hidden_size, intermediate_size)
        self.input_layernorm = RMSNorm(hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(hidden_size, cfg.rms_norm_eps)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pre-norm q/k/v of hidden states x [B,L,W] -> each [B,L,heads,head_dim] in the weight dtype."""
        attn = self.self_attn
        h = self.input_layernorm(x).to(attn.q_proj.weight.dtype)
        shape = (*h.shape[:-1], -1, attn.head_dim)
        return attn.q_proj(h).view(shape), attn.k_proj(h).view(shape), attn.v_proj(h).view(shape)

    def residual_block(self, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """o_proj + residual, post-norm MLP + residual, with LeRobot's dtype flow.

        The in-place ``+=`` keeps the o_proj dtype (bf16 in LeRobot checkpoints) even when the
        residual stream arrives in fp32, exactly as LeRobot's loop does.
        """
        o_proj = self.self_attn.o_proj
        out = o_proj(attn_out.to(o_proj.weight.dtype))
        out += x
        residual = out.clone()
        out = self.mlp(self.post_attention_layernorm(out))
        out += residual
        return out


def apply_rope(x: torch.Tensor, positions: torch.Tensor, max_wavelength: int = ROPE_MAX_WAVELENGTH) -> torch.Tensor:
    """Rotate x [B,L,H,D] by positions [B,L] (split-half RoPE in fp32, result in x's dtype)."""
    d_half = x.shape[-1] // 2
    dtype = x.dtype
    x = x.to(torch.float32)
    exponents = (2.0 / x.shape[-1]) * torch.arange(d_half, dtype=torch.float32, device=x.device)
    timescale = max_wavelength**exponents
    radians = positions[..., None].to(torch.float32) / timescale[None, None, :]  # (B, L, D/2)
    radians = radians[..., None, :]  # (B, L, 1, D/2)
    sin, cos = torch.sin(radians), torch.cos(radians)
    x1, x2 = x.split(d_half, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(dtype)


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Grouped-query attention as LeRobot computes it.

    q [B,Lq,H,D], k/v [B,Lk,KV,D], mask [B,Lq,Lk] bool (True = may attend) -> [B,Lq,H*D] in v's dtype.
    """
    bsz, lk, n_kv, hd = k.shape
    n_heads = q.shape[2]
    groups = n_heads // n_kv
    k = k[:, :, :, None, :].expand(bsz, lk, n_kv, groups, hd).reshape(bsz, lk, n_heads, hd)
    v = v[:, :, :, None, :].expand(bsz, lk, n_kv, groups, hd).reshape(bsz, lk, n_heads, hd)
    q = q.to(torch.float32).transpose(1, 2)  # (B, H, Lq, D)
    k = k.to(torch.float32).transpose(1, 2)  # (B, H, Lk, D)
    scores = torch.matmul(q, k.transpose(2, 3))
    scores *= hd**-0.5
    scores = torch.where(mask[:, None, :, :], scores, torch.finfo(torch.float32).min)
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    out = torch.matmul(probs, v.permute(0, 2, 1, 3))  # (B, H, Lq, D)
    return out.permute(0, 2, 1, 3).reshape(bsz, -1, n_heads * hd)


class TextModel(nn.Module):
    """The VLM's text decoder, truncated to the layers SmolVLA keeps (``layers[:num_vlm_layers]``)."""

    def __init__(self, cfg: TextConfig, num_layers: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(
            DecoderLayer(cfg, cfg.hidden_size, cfg.intermediate_size) for _ in range(num_layers)
        )
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, embeds: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Plain decoder pass over embeds [B,L,W] with a 2-D mask [B,L,L]; for tests and prefix-only use."""
        x = embeds
        for layer in self.layers:
            q, k, v = layer.qkv(x)
            q, k = apply_rope(q, position_ids), apply_rope(k, position_ids)
            x = layer.residual_block(x, eager_attention(q, k, v, mask))
        return self.norm(x)
