"""An independent, test-only statement of LeRobot's SmolVLA computation on transformers' modules.

It follows the structure of LeRobot's ``smolvlm_with_expert.py`` / ``modeling_smolvla.py`` (v0.4.4):
transformers' ``SmolVLMForConditionalGeneration`` with its text layers truncated, a ``LlamaModel``
expert built from a copy of the text config with cross-attention k/v re-created as Linear(kv, kv), a
per-layer dict KV cache that grows by concatenation, cameras embedded one by one. vlaworld's production
code is written differently (static cache, batched cameras, precomputed cross K/V); agreement between
the two is the parity check. Nothing here is used at run time.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, SmolVLMConfig, SmolVLMForConditionalGeneration


def rope(x, positions, max_wavelength=10_000):
    d_half = x.shape[-1] // 2
    dtype = x.dtype
    x = x.float()
    timescale = max_wavelength ** ((2.0 / x.shape[-1]) * torch.arange(d_half, dtype=torch.float32))
    rad = (positions[..., None].float() / timescale[None, None, :])[..., None, :]
    x1, x2 = x.split(d_half, dim=-1)
    res = torch.empty_like(x)
    res[..., :d_half] = x1 * torch.cos(rad) - x2 * torch.sin(rad)
    res[..., d_half:] = x2 * torch.cos(rad) + x1 * torch.sin(rad)
    return res.to(dtype)


def att_2d(pad, att):
    c = torch.cumsum(att, dim=1)
    return (c[:, None, :] <= c[:, :, None]) & (pad[:, None, :] * pad[:, :, None])


class ReferenceSmolVLA(nn.Module):
    def __init__(self, hf_config: SmolVLMConfig, *, num_vlm_layers, width_mult, chunk, max_state, max_action,
                 n_every=2, cross=True, num_expert_layers=-1, num_steps=10, min_period=4e-3, max_period=4.0):
        super().__init__()
        self.vlm = SmolVLMForConditionalGeneration(hf_config)
        tm = self.vlm.model.text_model
        tm.layers = tm.layers[:num_vlm_layers]
        self.n_vlm = len(tm.layers)
        tc = hf_config.text_config
        ec = copy.deepcopy(tc)
        ec.hidden_size = int(tc.hidden_size * width_mult)
        h = int(2 * ec.hidden_size / 3) * 4
        ec.intermediate_size = 256 * ((h + 255) // 256)
        ec.num_hidden_layers = num_expert_layers if num_expert_layers > 0 else self.n_vlm
        self.lm_expert = AutoModel.from_config(ec)
        self.n_every, self.cross = n_every, cross
        if cross:
            kv = tc.num_key_value_heads * tc.head_dim
            for i, layer in enumerate(self.lm_expert.layers):
                if n_every > 0 and i % n_every == 0:
                    continue
                layer.self_attn.k_proj = nn.Linear(kv, kv, bias=False)
                layer.self_attn.v_proj = nn.Linear(kv, kv, bias=False)
        self.lm_expert.embed_tokens = None
        self.heads, self.kv_heads, self.hd = tc.num_attention_heads, tc.num_key_value_heads, tc.head_dim
        w = ec.hidden_size
        self.state_proj = nn.Linear(max_state, tc.hidden_size)
        self.action_in_proj = nn.Linear(max_action, w)
        self.action_out_proj = nn.Linear(w, max_action)
        self.action_time_mlp_in = nn.Linear(2 * w, w)
        self.action_time_mlp_out = nn.Linear(w, w)
        self.chunk, self.num_steps, self.periods = chunk, num_steps, (min_period, max_period)

    def lerobot_state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"model.vlm_with_expert.vlm.{k}": v for k, v in self.vlm.state_dict().items()}
        out |= {f"model.vlm_with_expert.lm_expert.{k}": v for k, v in self.lm_expert.state_dict().items()}
        for name in ("state_proj", "action_in_proj", "action_out_proj", "action_time_mlp_in", "action_time_mlp_out"):
            out |= {f"model.{name}.{k}": v for k, v in getattr(self, name).state_dict().items()}
        return out

    # ---- LeRobot's attention and layer loop
    def attend(self, mask, q, k, v):
        b, lk = k.shape[:2]
        g = self.heads // self.kv_heads
        k = k[:, :, :, None, :].expand(b, lk, self.kv_heads, g, self.hd).reshape(b, lk, self.heads, self.hd)
        v = v[:, :, :, None, :].expand(b, lk, self.kv_heads, g, self.hd).reshape(b, lk, self.heads, self.hd)
        w = torch.matmul(q.float().transpose(1, 2), k.float().transpose(1, 2).transpose(2, 3))
        w *= self.hd**-0.5
        w = torch.where(mask[:, None], w, torch.finfo(torch.float32).min)
        p = F.softmax(w, dim=-1).to(v.dtype)
        return torch.matmul(p, v.permute(0, 2, 1, 3)).permute(0, 2, 1, 3).reshape(b, -1, self.heads * self.hd)

    def layers_at(self, i):
        mult = self.n_vlm // len(self.lm_expert.layers)
        exp = None if (mult > 0 and i > 0 and i % mult != 0) else self.lm_expert.layers[i // mult if mult > 0 else i]
        return self.vlm.model.text_model.layers[i], exp

    def qkv(self, layer, x):
        h = layer.input_layernorm(x).to(layer.self_attn.q_proj.weight.dtype)
        s = (*h.shape[:-1], -1, self.hd)
        return layer.self_attn.q_proj(h).view(s), layer.self_attn.k_proj(h).view(s), layer.self_attn.v_proj(h).view(s)

    def post(self, layer, x, att):
        out = layer.self_attn.o_proj(att.to(layer.self_attn.o_proj.weight.dtype))
        out += x
        res = out.clone()
        out = layer.mlp(layer.post_attention_layernorm(out))
        out += res
        return out

    def run(self, embeds, pos, mask, cache=None, fill=False):
        for i in range(self.n_vlm):
            vlm_l, exp_l = self.layers_at(i)
            layers = [vlm_l, exp_l]
            sa = fill or not self.cross or (self.n_every > 0 and i % self.n_every == 0)
            if sa:
                qs, ks, vs = [], [], []
                for x, layer in zip(embeds, layers):
                    if x is None or layer is None:
                        continue
                    q, k, v = self.qkv(layer, x)
                    qs.append(q), ks.append(k), vs.append(v)
                q, k, v = torch.cat(qs, 1), torch.cat(ks, 1), torch.cat(vs, 1)
                n = q.shape[1]
                p_, m_ = (pos[:, :n], mask[:, :n, :n]) if n < pos.shape[1] else (pos, mask)
                q, k = rope(q, p_), rope(k, p_)
                if fill:
                    cache[i] = (k, v)
                elif cache is not None:
                    k, v = torch.cat([cache[i][0], k], 1), torch.cat([cache[i][1], v], 1)
                outs = [self.attend(m_, q, k, v)]
            else:
                outs = []
                if cache is None:
                    n = embeds[0].shape[1]
                    q, k, v = self.qkv(vlm_l, embeds[0])
                    q, k = rope(q, pos[:, :n]), rope(k, pos[:, :n])
                    outs.append(self.attend(mask[:, :n, :n], q, k, v))
                    epos = pos[:, n:]
                else:
                    k, v = cache[i]
                    epos = pos
                if exp_l is not None:
                    x = embeds[1]
                    h = exp_l.input_layernorm(x).to(exp_l.self_attn.q_proj.weight.dtype)
                    eq = exp_l.self_attn.q_proj(h).view(*h.shape[:-1], -1, self.hd)
                    ek = exp_l.self_attn.k_proj(k.to(exp_l.self_attn.k_proj.weight.dtype).view(*k.shape[:2], -1))
                    ev = exp_l.self_attn.v_proj(v.to(exp_l.self_attn.v_proj.weight.dtype).view(*v.shape[:2], -1))
                    ek, ev = ek.view(*ek.shape[:-1], -1, self.hd), ev.view(*ev.shape[:-1], -1, self.hd)
                    epos = epos - epos.min(dim=1, keepdim=True).values
                    eq = rope(eq, epos)
                    outs.append(self.attend(mask[:, -x.shape[1]:, : ek.shape[1]], eq, ek, ev))
                else:
                    outs.append(None)
            new, start = [], 0
            for j, (x, layer) in enumerate(zip(embeds, layers)):
                if x is None:
                    new.append(None)
                    continue
                if layer is None:
                    new.append(x)
                    continue
                a = outs[j] if j < len(outs) else outs[0]
                end = start + x.shape[1]
                new.append(self.post(layer, x, a[:, start:end]))
                start = end if len(outs) == 1 else 0
            embeds = new
        norms = [self.vlm.model.text_model.norm, self.lm_expert.norm]
        return [None if x is None else n(x) for x, n in zip(embeds, norms)], cache

    # ---- LeRobot's VLAFlowMatching
    def embed_prefix(self, images, img_masks, tokens, tok_masks, state):
        embs, pads, att = [], [], []
        for img, m in zip(images, img_masks):
            vm = self.vlm.model
            e = vm.connector(vm.vision_model(pixel_values=img.to(vm.vision_model.dtype)).last_hidden_state)
            e = e * torch.tensor(e.shape[-1] ** 0.5, dtype=e.dtype)
            embs.append(e), pads.append(m[:, None].expand(e.shape[0], e.shape[1]))
            att += [0] * e.shape[1]
        lang = self.vlm.model.text_model.embed_tokens(tokens)
        embs.append(lang * math.sqrt(lang.shape[-1])), pads.append(tok_masks)
        att += [0] * lang.shape[1]
        s = self.state_proj(state)[:, None]
        embs.append(s), pads.append(torch.ones(s.shape[0], 1, dtype=torch.bool))
        att += [1]
        pad = torch.cat(pads, 1)
        return torch.cat(embs, 1), pad, torch.tensor(att, dtype=torch.bool)[None].expand(pad.shape[0], -1)

    def embed_suffix(self, x_t, t):
        a = self.action_in_proj(x_t)
        d = a.shape[-1]
        frac = torch.linspace(0.0, 1.0, d // 2, dtype=torch.float64)
        period = self.periods[0] * (self.periods[1] / self.periods[0]) ** frac
        x = (1.0 / period * 2 * math.pi)[None, :] * t[:, None]
        te = torch.cat([torch.sin(x), torch.cos(x)], 1).type(a.dtype)[:, None].expand_as(a)
        h = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(torch.cat([a, te], 2))))
        pad = torch.ones(h.shape[:2], dtype=torch.bool)
        return h, pad, torch.ones(h.shape[:2], dtype=h.dtype)

    @torch.no_grad()
    def sample_actions(self, images, img_masks, tokens, tok_masks, state, noise):
        pe, pp, pa = self.embed_prefix(images, img_masks, tokens, tok_masks, state)
        _, cache = self.run([pe, None], torch.cumsum(pp, 1) - 1, att_2d(pp, pa), cache={}, fill=True)
        dt = -1.0 / self.num_steps
        x_t = noise
        for step in range(self.num_steps):
            t = torch.tensor(1.0 + step * dt, dtype=torch.float32).expand(noise.shape[0])
            se, sp, sa = self.embed_suffix(x_t, t)
            b, s, p = se.shape[0], se.shape[1], pp.shape[1]
            mask = torch.cat([pp[:, None, :].expand(b, s, p), att_2d(sp, sa)], 2)
            pos = pp.sum(-1)[:, None] + torch.cumsum(sp, 1) - 1
            (_, out), _ = self.run([None, se], pos, mask, cache=cache)
            x_t = x_t + dt * self.action_out_proj(out[:, -self.chunk:].float())
        return x_t

    def losses(self, images, img_masks, tokens, tok_masks, state, actions, noise, time):
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions
        pe, pp, pa = self.embed_prefix(images, img_masks, tokens, tok_masks, state)
        se, sp, sa = self.embed_suffix(x_t, time)
        pad, att = torch.cat([pp, sp], 1), torch.cat([pa, sa], 1)
        (_, out), _ = self.run([pe, se], torch.cumsum(pad, 1) - 1, att_2d(pad, att))
        return F.mse_loss(noise - actions, self.action_out_proj(out[:, -self.chunk:].float()), reduction="none")
