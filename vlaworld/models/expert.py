"""The VLM text stack interleaved with SmolVLA's action expert, and the static prefix KV cache.

Layer schedule (LeRobot ``smolvlm_with_expert.py``): VLM layer i runs *self-attention* (prefix and
suffix tokens attend jointly, each stream with its own projections) when ``i % self_attn_every_n_layers
== 0`` (or always, in ``self_attn`` mode); otherwise *cross-attention*: the prefix attends to itself and
the expert's queries attend to the layer's post-RoPE VLM keys and raw values, re-projected by the expert's
own ``k_proj``/``v_proj`` (320→320), with query positions restarting at 0 and no suffix keys.

Inference runs the prefix once (``prefill``: every layer takes the self-attention path and stores K/V),
then ``forward_suffix`` reads the cache at each denoising step. The cross-attention keys/values are
identical at every step, so they are projected once per chunk at prefill instead of ten times.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vlaworld.models.smollm import DecoderLayer, RMSNorm, TextConfig, apply_rope, eager_attention


def expert_intermediate_size(hidden: int, ffn_dim_multiplier: int = 4, multiple_of: int = 256) -> int:
    """LeRobot ``get_intermediate_size``: 720 -> 2048."""
    hidden = int(2 * hidden / 3)
    hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass(frozen=True, kw_only=True)
class ExpertLayout:
    """Which expert layer serves which VLM layer, and which attention each layer runs."""

    num_vlm_layers: int
    num_expert_layers: int
    cross_attn: bool  # attention_mode == "cross_attn"
    self_attn_every_n_layers: int
    width: int
    intermediate_size: int

    def __post_init__(self) -> None:
        if self.num_vlm_layers % self.num_expert_layers:
            raise ValueError(
                f"num_vlm_layers={self.num_vlm_layers} must be a multiple of num_expert_layers="
                f"{self.num_expert_layers} (LeRobot asserts the same)"
            )
        for i in range(self.num_vlm_layers):
            e = self.expert_index(i)
            if e is None and self.is_self_attn(i):
                raise ValueError(
                    f"VLM layer {i} has no expert layer (num_expert_layers={self.num_expert_layers}) but runs "
                    "self-attention; LeRobot cannot run this combination either (its denoising step fails)."
                )
            if e is not None and self.is_self_attn(i) == self.expert_has_cross_kv(e):
                raise ValueError(
                    f"num_expert_layers={self.num_expert_layers} with self_attn_every_n_layers="
                    f"{self.self_attn_every_n_layers} puts expert layer {e} (built for "
                    f"{'cross' if self.expert_has_cross_kv(e) else 'self'}-attention) under VLM layer {i} "
                    "of the other kind; LeRobot cannot run this combination either."
                )

    def is_self_attn(self, vlm_layer: int) -> bool:
        n = self.self_attn_every_n_layers
        return not self.cross_attn or (n > 0 and vlm_layer % n == 0)

    def expert_has_cross_kv(self, expert_layer: int) -> bool:
        n = self.self_attn_every_n_layers
        return self.cross_attn and not (n > 0 and expert_layer % n == 0)

    def expert_index(self, vlm_layer: int) -> int | None:
        """LeRobot ``get_model_layers``: with fewer expert layers, only every k-th VLM layer has one."""
        k = self.num_vlm_layers // self.num_expert_layers
        if k > 0 and vlm_layer > 0 and vlm_layer % k != 0:
            return None
        return vlm_layer // k if k > 0 else vlm_layer


class ExpertModel(nn.Module):
    """The action expert: a narrower Llama decoder without token embeddings (``lm_expert``)."""

    def __init__(self, text: TextConfig, layout: ExpertLayout) -> None:
        super().__init__()
        vlm_kv = text.num_key_value_heads * text.head_dim
        self.layers = nn.ModuleList(
            DecoderLayer(text, layout.width, layout.intermediate_size, vlm_kv if layout.expert_has_cross_kv(e) else None)
            for e in range(layout.num_expert_layers)
        )
        self.norm = RMSNorm(layout.width, text.rms_norm_eps)


@dataclass
class PrefixCache:
    """Per-chunk state the denoising steps read: post-RoPE prefix keys, raw values, projected CA K/V.

    Read-only during the steps (each self-attention step concatenates its suffix K/V to a copy), so
    a denoising step is a pure function of its inputs: safe to compile and to capture in a CUDA graph.
    """

    keys: dict[int, torch.Tensor]  # self-attention vlm layer -> [B, P, KV, D]
    values: dict[int, torch.Tensor]
    cross_keys: dict[int, torch.Tensor]  # vlm layer -> [B, P, KV, D]
    cross_values: dict[int, torch.Tensor]
    prefix_len: int


class VLMWithExpert(nn.Module):
    """Runs the truncated VLM text layers and the expert side by side (LeRobot's key layout)."""

    def __init__(self, vlm: nn.Module, text: TextConfig, layout: ExpertLayout) -> None:
        super().__init__()
        self.vlm = vlm  # .model.{vision_model, connector, text_model}, .lm_head
        self.lm_expert = ExpertModel(text, layout)
        self.layout = layout
        self.text = text

    @property
    def text_model(self) -> nn.Module:
        return self.vlm.model.text_model

    def _expert_layer(self, i: int) -> DecoderLayer | None:
        e = self.layout.expert_index(i)
        return None if e is None else self.lm_expert.layers[e]

    def _cross_kv(self, layer: DecoderLayer, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Re-project VLM post-RoPE keys and raw values [B,P,KV,D] with the expert's 320->320 k/v."""
        attn = layer.self_attn
        bsz, plen = k.shape[:2]
        ek = attn.k_proj(k.to(attn.k_proj.weight.dtype).reshape(bsz, plen, -1)).view(bsz, plen, -1, attn.head_dim)
        ev = attn.v_proj(v.to(attn.v_proj.weight.dtype).reshape(bsz, plen, -1)).view(bsz, plen, -1, attn.head_dim)
        return ek, ev

    def prefill(self, prefix: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor) -> PrefixCache:
        """Run the prefix [B,P,W] through every VLM layer (self-attention path) and cache K/V."""
        plen = prefix.shape[1]
        keys, values, cross_k, cross_v = {}, {}, {}, {}
        x = prefix
        for i, layer in enumerate(self.text_model.layers):
            q, k, v = layer.qkv(x)
            q, k = apply_rope(q, position_ids), apply_rope(k, position_ids)
            expert = self._expert_layer(i)
            if expert is not None and self.layout.is_self_attn(i):
                keys[i], values[i] = k, v
            elif expert is not None:
                cross_k[i], cross_v[i] = self._cross_kv(expert, k, v)
            if i + 1 < len(self.text_model.layers):  # the last layer's output is never read
                x = layer.residual_block(x, eager_attention(q, k, v, mask))
        return PrefixCache(keys, values, cross_k, cross_v, plen)

    def forward_suffix(
        self,
        suffix: torch.Tensor,
        cache: PrefixCache,
        position_ids: torch.Tensor,
        full_mask: torch.Tensor,
    ) -> torch.Tensor:
        """One expert pass of suffix [B,S,We] against the cached prefix -> normed output [B,S,We].

        ``position_ids`` [B,S] are absolute (continuing after the valid prefix); ``full_mask`` [B,S,P+S].
        """
        plen = cache.prefix_len
        cross_pos = position_ids - position_ids.min(dim=1, keepdim=True).values  # 0..S-1
        x = suffix
        for i in range(self.layout.num_vlm_layers):
            layer = self._expert_layer(i)
            if layer is None:
                continue
            if self.layout.is_self_attn(i):
                q, k, v = layer.qkv(x)
                q, k = apply_rope(q, position_ids), apply_rope(k, position_ids)
                k = torch.cat([cache.keys[i], k], dim=1)  # (B, P+S, KV, D)
                v = torch.cat([cache.values[i], v], dim=1)
                out = eager_attention(q, k, v, full_mask)
            else:
                attn = layer.self_attn
                h = layer.input_layernorm(x).to(attn.q_proj.weight.dtype)
                q = attn.q_proj(h).view(*h.shape[:-1], -1, attn.head_dim)
                q = apply_rope(q, cross_pos)
                out = eager_attention(q, cache.cross_keys[i], cache.cross_values[i], full_mask[:, :, :plen])
            x = layer.residual_block(x, out)
        return self.lm_expert.norm(x)

    def forward_joint(
        self, prefix: torch.Tensor, suffix: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Training pass without a cache (LeRobot ``forward(use_cache=False)``) -> normed suffix output.

        prefix [B,P,W], suffix [B,S,We], position_ids [B,P+S], mask [B,P+S,P+S].
        """
        plen, slen = prefix.shape[1], suffix.shape[1]
        x, y = prefix, suffix
        for i, vlm_layer in enumerate(self.text_model.layers):
            expert = self._expert_layer(i)
            if self.layout.is_self_attn(i) or expert is None:
                q, k, v = vlm_layer.qkv(x)
                if expert is not None:
                    qe, ke, ve = expert.qkv(y)
                    q, k, v = torch.cat([q, qe], 1), torch.cat([k, ke], 1), torch.cat([v, ve], 1)
                    pos, m = position_ids, mask
                else:
                    pos, m = position_ids[:, :plen], mask[:, :plen, :plen]
                q, k = apply_rope(q, pos), apply_rope(k, pos)
                out = eager_attention(q, k, v, m)
                x_new = vlm_layer.residual_block(x, out[:, :plen])
                if expert is not None:
                    y = expert.residual_block(y, out[:, plen:])
                x = x_new
            else:
                q, k, v = vlm_layer.qkv(x)
                pos = position_ids[:, :plen]
                q, k = apply_rope(q, pos), apply_rope(k, pos)
                x_new = vlm_layer.residual_block(x, eager_attention(q, k, v, mask[:, :plen, :plen]))
                ek, ev = self._cross_kv(expert, k, v)
                attn = expert.self_attn
                h = expert.input_layernorm(y).to(attn.q_proj.weight.dtype)
                eq = attn.q_proj(h).view(*h.shape[:-1], -1, attn.head_dim)
                epos = position_ids[:, plen:]
                eq = apply_rope(eq, epos - epos.min(dim=1, keepdim=True).values)
                y = expert.residual_block(y, eager_attention(eq, ek, ev, mask[:, -slen:, :plen]))
                x = x_new
        return self.lm_expert.norm(y)
