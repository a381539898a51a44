"""V-JEPA 2 video encoder (the world modality's frozen feature extractor) in plain PyTorch.

Reproduces ``transformers.VJEPA2Model``'s encoder (``skip_predictor=True``), which itself reproduces
facebookresearch/vjepa2, including the quirks pretrained weights depend on:

- tubelet Conv3d patch embedding over [B, T, C, H, W]; clips shorter than a tubelet (T=1) are
  repeated ``tubelet`` times, odd T is floored by the stride; no CLS token, no absolute positions;
- 3D RoPE on q and k of every head: three equal chunks of ``2*((head_dim//3)//2)`` dims (20/20/20 for
  head_dim 64) rotated by the tubelet, row and column index, the remaining dims (4) left alone, and
  within a chunk the sin/cos table *tiled* ([f0..f9, f0..f9]) while the rotation partner is
  *interleaved* (x[2i] pairs with x[2i+1]): the original repo's acknowledged "subtle bug";
- pre-norm blocks, exact-erf GELU MLP, final LayerNorm; ``encode`` averages every post-LN token.

RoPE angles are computed and applied in the activations' dtype, and the pooled latent is averaged in it,
as transformers' ``VJEPA2Model`` does (``rotate_queries_or_keys`` @4.57.6): a bf16/fp16 model rotates by
bf16/fp16 angles (up to ~1e-2 rad off at position 15). That is what the checkpoints saw: the research
plugin made its training latents and its rollout latents with the HF model in float16. In float32
nothing changes.

Module names equal the Hugging Face safetensors keys (``encoder.layer.{i}.attention.query`` ...), so
the key map is the identity. There are no buffers: build on the meta device, then
``vlaworld.checkpoint.vjepa2.load_vjepa2`` fills it with ``assign=True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vlaworld.models.registry import lookup

ROPE_THETA = 10000  # hard-coded in the original repo and in transformers (an int literal there)


@dataclass(frozen=True, kw_only=True)
class VJEPA2Config:
    hidden: int
    layers: int
    heads: int
    mlp_ratio: float = 4.0
    patch: int = 16
    tubelet: int = 2
    crop_size: int = 256
    in_chans: int = 3
    eps: float = 1e-6
    qkv_bias: bool = True
    head_dim: int = field(init=False)
    mlp_hidden: int = field(init=False)
    grid: int = field(init=False)  # patches per side; RoPE rows/columns assume crop_size inputs
    rope_dim: int = field(init=False)  # rotated dims per axis (t, h, w); the rest of a head is not rotated

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not a multiple of heads {self.heads}")
        if self.crop_size % self.patch:
            raise ValueError(f"crop_size {self.crop_size} is not a multiple of patch {self.patch}")
        head_dim = self.hidden // self.heads
        object.__setattr__(self, "head_dim", head_dim)
        object.__setattr__(self, "mlp_hidden", int(self.hidden * self.mlp_ratio))  # as HF: int(1408*48/11) = 6144
        object.__setattr__(self, "grid", self.crop_size // self.patch)
        object.__setattr__(self, "rope_dim", 2 * ((head_dim // 3) // 2))

    @classmethod
    def from_name(cls, name: str) -> VJEPA2Config:
        return lookup(CONFIGS, name, "V-JEPA 2")

    @classmethod
    def from_hf(cls, cfg: dict) -> VJEPA2Config:
        """Read a Hugging Face VJEPA2 ``config.json``; refuse values this implementation does not do.

        Predictor, pooler, dropout and ``frames_per_clip`` fields do not affect the encoder at inference.
        """
        if cfg.get("model_type", "vjepa2") != "vjepa2":
            raise ValueError(f"world encoder config has model_type {cfg['model_type']!r}, expected 'vjepa2'")
        if cfg.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"V-JEPA 2 hidden_act {cfg['hidden_act']!r} is not supported (only exact 'gelu')")
        patch = cfg.get("patch_size", 16)
        if isinstance(patch, (list, tuple)):
            if len(set(patch)) != 1:
                raise ValueError(f"non-square V-JEPA 2 patch_size {patch} is not supported")
            patch = patch[0]
        return cls(
            hidden=int(cfg.get("hidden_size", 1024)),  # defaults are transformers' VJEPA2Config's
            layers=int(cfg.get("num_hidden_layers", 24)),
            heads=int(cfg.get("num_attention_heads", 16)),
            mlp_ratio=float(cfg.get("mlp_ratio", 4.0)),
            patch=int(patch),
            tubelet=int(cfg.get("tubelet_size", 2)),
            crop_size=int(cfg.get("crop_size", 256)),
            in_chans=int(cfg.get("in_chans", 3)),
            eps=float(cfg.get("layer_norm_eps", 1e-6)),
            qkv_bias=bool(cfg.get("qkv_bias", True)),
        )


CONFIGS: dict[str, VJEPA2Config] = {
    # the debug size's encoder (vlaworld.debug.VJEPA_JSON): 64-pixel patches keep the 256² crop cheap
    "debug": VJEPA2Config(hidden=24, layers=1, heads=2, mlp_ratio=2.0, patch=64),
    # HF convert_vjepa2_to_hf.py get_vjepa2_config; vit_giant has 22 heads (original vit_giant_xformers).
    "vit_large": VJEPA2Config(hidden=1024, layers=24, heads=16, mlp_ratio=4.0),
    "vit_huge": VJEPA2Config(hidden=1280, layers=32, heads=16, mlp_ratio=4.0),
    "vit_giant": VJEPA2Config(hidden=1408, layers=40, heads=22, mlp_ratio=48 / 11),
    "vit_giant_384": VJEPA2Config(hidden=1408, layers=40, heads=22, mlp_ratio=48 / 11, crop_size=384),
}


class VJEPA2Encoder(nn.Module):
    """The frozen world encoder: clip [B, T, 3, S, S] (normalised, S = crop_size) -> latent [B, hidden]."""

    def __init__(self, config: VJEPA2Config) -> None:
        super().__init__()
        self.config = config
        self.encoder = Backbone(config)

    def forward_features(self, clip: torch.Tensor) -> torch.Tensor:
        """Post-LayerNorm tokens [B, (T//tubelet)*grid², hidden] (HF ``last_hidden_state``)."""
        return self.encoder(clip)

    def encode(self, clip: torch.Tensor) -> torch.Tensor:
        """Mean over all tokens (time and space) in the model dtype, as the plugin pooled its latents
        (``last_hidden_state.mean(dim=1)``), returned as float32."""
        return self.forward_features(clip).mean(dim=1).float()  # (B, hidden)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.encode(clip)

    def compile_blocks(self, mode: str | None = None) -> None:
        """Regional torch.compile: each transformer block on its own (RoPE tables stay eager)."""
        for block in self.encoder.layer:
            block.compile(mode=mode, dynamic=False)


class Backbone(nn.Module):
    """Patch embedding, blocks and final norm (``encoder.*`` in the checkpoint)."""

    def __init__(self, config: VJEPA2Config) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layer = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.layernorm = nn.LayerNorm(config.hidden, eps=config.eps)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(clip)  # (B, N, D)
        cos, sin = rope_tables(self.config, x.shape[1], x.device, x.dtype)  # (N, head_dim) in x's dtype
        for block in self.layer:
            x = block(x, cos, sin)
        return self.layernorm(x)


class Embeddings(nn.Module):
    """Frames to tubelet tokens; the extra nesting mirrors the checkpoint's key names."""

    def __init__(self, config: VJEPA2Config) -> None:
        super().__init__()
        self.config = config
        self.patch_embeddings = PatchEmbed3D(config)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        c = self.config
        if clip.ndim != 5 or clip.shape[2] != c.in_chans or clip.shape[-2:] != (c.crop_size, c.crop_size):
            raise ValueError(
                f"V-JEPA 2 expects clips [B, T, {c.in_chans}, {c.crop_size}, {c.crop_size}] (RoPE rows and "
                f"columns assume crop_size), got {tuple(clip.shape)}; see vlaworld.world.preprocess"
            )
        x = clip.permute(0, 2, 1, 3, 4)  # (B, C, T, H, W)
        if x.shape[2] < c.tubelet:
            x = x.repeat(1, 1, c.tubelet, 1, 1)  # as HF: a single frame becomes one full tubelet
        x = x.to(self.patch_embeddings.proj.weight.dtype)
        return self.patch_embeddings(x)


class PatchEmbed3D(nn.Module):
    def __init__(self, config: VJEPA2Config) -> None:
        super().__init__()
        kernel = (config.tubelet, config.patch, config.patch)
        self.proj = nn.Conv3d(config.in_chans, config.hidden, kernel_size=kernel, stride=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, T//tubelet, grid, grid); odd T floors
        return x.flatten(2).transpose(1, 2)  # (B, N, D), token index t*grid² + h*grid + w


class Block(nn.Module):
    def __init__(self, config: VJEPA2Config) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden, eps=config.eps)
        self.attention = Attention(config)
        self.norm2 = nn.LayerNorm(config.hidden, eps=config.eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class Attention(nn.Module):
    def __init__(self, config: VJEPA2Config) -> None:
        super().__init__()
        self.heads, self.head_dim = config.heads, config.head_dim
        self.query = nn.Linear(config.hidden, config.hidden, bias=config.qkv_bias)
        self.key = nn.Linear(config.hidden, config.hidden, bias=config.qkv_bias)
        self.value = nn.Linear(config.hidden, config.hidden, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden, config.hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q = self.query(x).view(B, N, self.heads, self.head_dim).transpose(1, 2)  # (B, nh, N, hd)
        k = self.key(x).view(B, N, self.heads, self.head_dim).transpose(1, 2)
        v = self.value(x).view(B, N, self.heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v)  # no mask; scale head_dim**-0.5 as HF
        return self.proj(y.transpose(1, 2).reshape(B, N, D))  # (B, N, D)


class MLP(nn.Module):
    def __init__(self, config: VJEPA2Config) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden, config.mlp_hidden)
        self.fc2 = nn.Linear(config.mlp_hidden, config.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact erf GELU ("gelu" in HF)


def rope_tables(
    config: VJEPA2Config, n_tokens: int, device: torch.device, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [N, head_dim] of the 3D RoPE in ``dtype``, laid out per head as [t | h | w | unrotated].

    Token i sits at tubelet i // grid², row (i % grid²) // grid, column i % grid. Each axis chunk uses
    ``omega_k = 10000**(-k / (rope_dim/2))`` tiled twice ([f0..f9, f0..f9], the original's layout), with
    transformers' operations in ``dtype`` (``rotate_queries_or_keys``: omega, the integer position times
    omega, sin and cos). The unrotated tail gets cos 1, sin 0, so one rotation over the whole head leaves
    it exact.
    """
    g, r = config.grid, config.rope_dim
    ids = torch.arange(n_tokens, device=device)
    pos = torch.stack([ids // (g * g), (ids % (g * g)) // g, ids % g], dim=-1)  # (N, 3) int64
    omega = torch.arange(r // 2, dtype=dtype, device=device)
    omega /= r / 2.0
    omega = 1.0 / ROPE_THETA**omega  # (r/2,)
    freq = pos[:, :, None] * omega  # (N, 3, r/2) in dtype
    freq = freq.repeat(1, 1, 2).flatten(1)  # (N, 3r) tiled within each axis chunk
    tail = config.head_dim - 3 * r
    cos = F.pad(freq.cos(), (0, tail), value=1.0)  # (N, head_dim)
    sin = F.pad(freq.sin(), (0, tail), value=0.0)
    return cos, sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """(x * cos) + (partner(x) * sin) with the interleaved partner (-x[2i+1], x[2i]), in x's dtype as HF."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)  # (..., hd/2) each
    partner = torch.stack((-x2, x1), dim=-1).flatten(-2)  # (..., hd)
    return (x * cos) + (partner * sin)


def param_count(config: VJEPA2Config) -> int:
    """Parameters of the encoder for ``config``, counted on the meta device (no memory)."""
    with torch.device("meta"):
        model = VJEPA2Encoder(config)
    return sum(p.numel() for p in model.parameters())


__all__ = ["CONFIGS", "VJEPA2Config", "VJEPA2Encoder", "apply_rope", "param_count", "rope_tables"]
