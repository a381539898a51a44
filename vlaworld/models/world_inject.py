"""Gated cross-attention that injects the world memory into the action expert, in plain PyTorch.

Numerically this is the research plugin's ``GatedCrossAttention`` (``world_modality/model.py`` L103-165,
branch ``phaseC-flow-head``): ``h + tanh(gate) * MHA(q=h, k=v=future_proj(memory))``, applied by
``WorldInjectedVLAFlowMatching.denoise_step`` to the expert output after its final norm, in float32,
right before ``action_out_proj``, at every denoising step (``docs/world_plugin_facts.md`` §2).

Notable choices:
- Parameter names and shapes equal what the plugin's torch modules produce (``future_proj``,
  ``cross_attn.in_proj_weight`` [3W, W], ``cross_attn.in_proj_bias``, ``cross_attn.out_proj``, a 0-dim
  ``gate``), so ``model.world_inject.*`` loads unchanged; the attention itself is written out here
  (``PackedAttention``, shared with the Prophet) so it can be compiled and inspected.
- Do no harm without a host sync: the plugin returns ``h`` untouched when ``|tanh(gate)| < 1e-6`` or the
  memory is not finite, through Python ``if``s that read the GPU. Here the same decision is a
  ``torch.where`` per batch row, so forward stays graph-friendly, a NaN in one episode's memory never
  touches another episode's actions (the plugin dropped the memory of the whole batch), and a closed
  gate returns ``h`` bit for bit. Callers that want to skip the world path entirely ask ``is_open()``.
- Diagnostics are opt-in (``record_stats = True``): only then are attention probabilities materialised
  (an explicit softmax beside the fused kernel, whose output is used either way, so recording never
  changes actions) and kept as tensors in ``last_stats``; nothing is read back to the host until
  ``InjectStats.summary()`` or ``rows()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlaworld.models.registry import lookup

# The plugin's closed-gate threshold (model.py L128 and modeling_smolvla_world.py L625).
CLOSED_EPS = 1e-6
# The plugin clamps attention probabilities before taking logs for its entropy statistic (model.py L145).
PROB_FLOOR = 1e-8


class PackedAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter layout (packed q/k/v projection).

    Equal to ``nn.MultiheadAttention(width, n_heads, batch_first=True)`` (bias on, no bias_kv, no
    zero_attn, dropout 0) in eval mode; ``need_probs`` also returns the per-head probabilities, which
    that module returns with ``average_attn_weights=False``.
    """

    def __init__(self, *, width: int, n_heads: int) -> None:
        super().__init__()
        if width % n_heads:
            raise ValueError(f"attention width {width} is not divisible by {n_heads} heads")
        self.width, self.n_heads, self.head_dim = width, n_heads, width // n_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.MultiheadAttention's own init, so random-weight models look like the plugin's at step 0.
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, N, hd)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor | None = None, *, need_probs: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from ``x`` [B, S, W] to ``memory`` [B, K, W] (to ``x`` itself when None).

        Returns the output [B, S, W] and, with ``need_probs``, the probabilities [B, nh, S, K].
        """
        w, b, width = self.in_proj_weight, self.in_proj_bias, self.width
        if memory is None:
            q, k, v = F.linear(x, w, b).chunk(3, dim=-1)  # 3 x (B, S, W)
        else:
            q = F.linear(x, w[:width], b[:width])  # (B, S, W)
            k, v = F.linear(memory, w[width:], b[width:]).chunk(2, dim=-1)  # 2 x (B, K, W)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)  # (B, nh, S|K, hd)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, nh, S, hd)
        # Probabilities for diagnostics come from a separate softmax, so recording them never changes
        # the output: a run with diagnostics takes exactly the actions of a run without.
        probs = ((q * self.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1) if need_probs else None  # (B, nh, S, K)
        y = y.transpose(1, 2).reshape(x.shape[0], x.shape[1], width)  # (B, S, W)
        return self.out_proj(y), probs


@dataclass(frozen=True, kw_only=True)
class WorldInjectConfig:
    """The injection block; vlaworld.checkpoint.architecture builds it from a checkpoint's config."""

    width: int  # W: the expert's hidden size (``expert_hidden_size``)
    memory_dim: int  # D: ``world_latent_dim``
    n_heads: int  # ``world_inject_num_heads``
    gate_init: float = 0.0  # ``world_gate_init``: tanh(gate) starts at 0 ("do no harm")
    head_dim: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("width", "memory_dim", "n_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"WorldInjectConfig.{name} must be positive, got {getattr(self, name)}")
        if self.width % self.n_heads:
            raise ValueError(
                f"expert width {self.width} is not divisible by world_inject_num_heads={self.n_heads}"
            )
        object.__setattr__(self, "head_dim", self.width // self.n_heads)


CONFIGS: dict[str, WorldInjectConfig] = {
    "debug": WorldInjectConfig(width=48, memory_dim=24, n_heads=2),  # vlaworld.debug: expert 64 x 0.75
    # the LIBERO checkpoints: SmolVLA expert width 960 x 0.75, V-JEPA 2 ViT-g latents (tests/test_architecture.py)
    "smolvla-libero": WorldInjectConfig(width=720, memory_dim=1408, n_heads=8),
}


def config_from_name(name: str) -> WorldInjectConfig:
    """A named config from ``CONFIGS``; an unknown name suggests the closest one."""
    return lookup(CONFIGS, name, "world-inject")


@dataclass(frozen=True, kw_only=True)
class InjectStats:
    """One injection call's diagnostics, per batch row, as tensors (no host sync until ``summary``).

    Definitions follow the plugin's ``last_stats`` (model.py L142-158), computed per row instead of
    over the whole batch; the batch mean of each equals the plugin's number when every row is applied.
    ``entropy_ratio`` is entropy / log K (1 = uniform over the K future slots): the team's "entropy ratio
    0.86" is this normalisation of the plugin's ``attn_entropy``, which the plugin code itself never forms.
    """

    gate: torch.Tensor  # () tanh(gate)
    applied: torch.Tensor  # [B] bool: row was changed (gate open and memory finite)
    entropy: torch.Tensor  # [B] nats, mean over heads and queries of -sum_k p log p (p floored at 1e-8)
    entropy_ratio: torch.Tensor  # [B] entropy / log K, in [0, 1]
    pmax: torch.Tensor  # [B] mean over heads and queries of max_k p
    per_k: torch.Tensor  # [B, K] attention mass on each future slot k=1..K, mean over heads, queries
    ctx_norm: torch.Tensor  # [B] mean L2 norm of the attention output (before the gate)
    h_norm: torch.Tensor  # [B] mean L2 norm of the expert hidden states going in

    def summary(self) -> dict[str, Any]:
        """Batch means as Python numbers (one host sync), named like the plugin's logged metrics."""
        rows = self.applied
        n = int(rows.sum())
        if n == 0:
            return {"gate": float(self.gate), "applied_rows": 0}

        def mean(t: torch.Tensor) -> float:
            return float(t[rows].float().mean())

        return {
            "gate": float(self.gate),
            "applied_rows": n,
            "attn_entropy": mean(self.entropy),
            "attn_entropy_ratio": mean(self.entropy_ratio),
            "attn_pmax": mean(self.pmax),
            "attn_per_k": self.per_k[rows].float().mean(dim=0).tolist(),
            "ctx_norm": mean(self.ctx_norm),
            "act_norm": mean(self.h_norm),
        }

    def rows(self) -> list[dict[str, Any]]:
        """Per batch row (one host sync): each episode's own attention statistics, for per-episode records.

        A row the injection left untouched (non-finite memory, closed gate) gets ``{"applied": False}``.
        """
        applied = self.applied.tolist()
        entropy, ratio = self.entropy.float().tolist(), self.entropy_ratio.float().tolist()
        per_k = self.per_k.float().tolist()
        return [{"applied": True, "attn_entropy": e, "attn_entropy_ratio": r, "attn_per_k": pk} if a
                else {"applied": False} for a, e, r, pk in zip(applied, entropy, ratio, per_k)]


class GatedCrossAttention(nn.Module):
    """``h + tanh(gate) * CrossAttn(h, future_proj(memory))``: the expert tokens read the predicted future."""

    def __init__(self, config: WorldInjectConfig) -> None:
        super().__init__()
        self.config = config
        self.future_proj = nn.Linear(config.memory_dim, config.width)
        self.cross_attn = PackedAttention(width=config.width, n_heads=config.n_heads)
        self.gate = nn.Parameter(torch.tensor(float(config.gate_init)))  # 0-dim, like the plugin's
        self.record_stats = False
        self.last_stats: InjectStats | None = None

    def gate_value(self) -> float:
        """tanh(gate) as a float (one host read; call it outside hot loops)."""
        return float(torch.tanh(self.gate.detach().float()))

    def is_open(self, eps: float = CLOSED_EPS) -> bool:
        """Whether the injection can change anything; when not, skip the world path entirely."""
        return abs(self.gate_value()) >= eps

    def forward(self, h: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Inject ``memory`` [B, K, D] into the expert output ``h`` [B, S, W]; returns [B, S, W].

        Rows whose memory holds a NaN/Inf, and all rows while the gate is closed, come back equal to
        ``h`` bit for bit. The memory is cast to ``h``'s dtype, as the plugin does.
        """
        cfg = self.config
        if h.dim() != 3 or h.shape[-1] != cfg.width:
            raise ValueError(f"expert states must be [B, S, {cfg.width}], got {tuple(h.shape)}")
        if memory.dim() != 3 or memory.shape[0] != h.shape[0] or memory.shape[-1] != cfg.memory_dim:
            raise ValueError(
                f"world memory must be [{h.shape[0]}, K, {cfg.memory_dim}] for expert states "
                f"{tuple(h.shape)}, got {tuple(memory.shape)}"
            )
        gate = torch.tanh(self.gate).to(h.dtype)  # ()
        kv = self.future_proj(memory.to(h.dtype))  # (B, K, W)
        ctx, probs = self.cross_attn(h, kv, need_probs=self.record_stats)  # (B, S, W)
        finite = torch.isfinite(memory).flatten(1).all(dim=1)  # (B,)
        applied = finite & (gate.abs() >= CLOSED_EPS)  # (B,)
        out = torch.where(applied[:, None, None], h + gate * ctx, h)  # (B, S, W)
        if probs is not None:
            self.last_stats = _stats(gate, applied, probs, ctx, h)
        return out


@torch.no_grad()
def _stats(
    gate: torch.Tensor, applied: torch.Tensor, probs: torch.Tensor, ctx: torch.Tensor, h: torch.Tensor
) -> InjectStats:
    p = probs.float()  # (B, nh, S, K)
    k = p.shape[-1]
    floored = p.clamp_min(PROB_FLOOR)
    entropy = -(floored * floored.log()).sum(dim=-1).mean(dim=(1, 2))  # (B,)
    ratio = entropy / math.log(k) if k > 1 else torch.zeros_like(entropy)  # (B,)
    return InjectStats(
        gate=gate.detach().float(),
        applied=applied,
        entropy=entropy,
        entropy_ratio=ratio.clamp(0.0, 1.0),
        pmax=p.amax(dim=-1).mean(dim=(1, 2)),
        per_k=p.mean(dim=(1, 2)),  # (B, K)
        ctx_norm=ctx.float().norm(dim=-1).mean(dim=1),
        h_norm=h.float().norm(dim=-1).mean(dim=1),
    )
