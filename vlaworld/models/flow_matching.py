"""SmolVLA's flow-matching action head around the VLM+expert stack (LeRobot ``VLAFlowMatching``).

Stages, each a seam that can be tested or compiled alone:
``embed_prefix`` (a ``PrefixInputs``: images, language, state -> prefix tokens and masks), ``encode_prefix`` (VLM once per
chunk -> static KV cache), ``denoise_step`` (expert on the noisy chunk against the cache -> velocity),
``sample_actions`` (Euler from t=1 to 0 in ``num_steps`` steps), ``loss`` (training MSE).
Masks and timesteps are built outside the per-step work so a compiled step sees only tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlaworld.models.expert import PrefixCache, VLMWithExpert


@dataclass(frozen=True, kw_only=True)
class HeadConfig:
    """What the flow-matching head needs from the policy config."""

    chunk_size: int
    max_state_dim: int
    max_action_dim: int
    num_steps: int
    min_period: float
    max_period: float
    prefix_length: int = -1
    image_special_token_ids: tuple[int, int] | None = None  # (fake_image, global_image) when enabled


def make_att_2d_masks(pad_masks: torch.Tensor, att_masks: torch.Tensor) -> torch.Tensor:
    """big_vision's mask algebra: token i sees valid token j iff cumsum(att)[j] <= cumsum(att)[i].

    att [[0,0,1,1]] -> the first two attend to each other, the third adds itself, the fourth sees all:
    a prefix-LM; all ones is causal. pad/att [B,N] -> [B,N,N] bool.
    """
    cumsum = torch.cumsum(att_masks, dim=1)
    att_2d = cumsum[:, None, :] <= cumsum[:, :, None]
    return att_2d & (pad_masks[:, None, :] & pad_masks[:, :, None])


def sinusoidal_time_embedding(t: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """t [B] -> [B, dim] = [sin, cos] of 2π t / period, periods geometric in [min, max], in float64."""
    if dim % 2:
        raise ValueError(f"time embedding dimension {dim} must be even")
    dtype = torch.float32 if t.device.type == "mps" else torch.float64
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=dtype, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    x = (1.0 / period * 2 * math.pi)[None, :] * t[:, None]
    return torch.cat([torch.sin(x), torch.cos(x)], dim=1)


def euler_times(num_steps: int) -> list[float]:
    """Integration times t = 1, 1-dt, ..., dt (computed as LeRobot does, in Python floats)."""
    dt = -1.0 / num_steps
    return [1.0 + step * dt for step in range(num_steps)]


@dataclass(frozen=True, kw_only=True)
class PrefixInputs:
    """One batch as the model takes it (openpi's ``Observation``): made by ``vlaworld.processing``.

    Cameras are in the config's order, which is the order of their tokens in the prefix.
    """

    images: tuple[torch.Tensor, ...]  # per camera [B, 3, H, W] in [-1, 1]
    image_masks: tuple[torch.Tensor, ...]  # per camera [B] bool: False for an empty camera
    tokens: torch.Tensor  # [B, L] long: the task prompt
    token_masks: torch.Tensor  # [B, L] bool
    state: torch.Tensor  # [B, max_state_dim] float32, normalised and zero-padded

    def __post_init__(self) -> None:
        bsz = self.state.shape[0]
        sizes = {int(t.shape[0]) for t in (*self.images, *self.image_masks, self.tokens, self.token_masks)}
        if sizes != {bsz}:
            raise ValueError(f"the batch's parts disagree on the batch size: state {bsz}, images/tokens {sorted(sizes)}")

    @property
    def batch_size(self) -> int:
        return int(self.state.shape[0])


@dataclass
class PrefixState:
    """Everything a denoising step reads, fixed for one chunk."""

    cache: PrefixCache
    pad_mask: torch.Tensor  # [B, P] bool
    suffix_positions: torch.Tensor  # [B, S] absolute positions of the action tokens
    full_mask: torch.Tensor  # [B, S, P+S] bool


class VLAFlowMatching(nn.Module):
    """Parameters and stages of the action head; ``vlm_with_expert`` holds the transformer stacks."""

    def __init__(self, cfg: HeadConfig, vlm_with_expert: VLMWithExpert, world_inject: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.vlm_with_expert = vlm_with_expert
        text_width = vlm_with_expert.text.hidden_size
        width = vlm_with_expert.layout.width
        self.state_proj = nn.Linear(cfg.max_state_dim, text_width)
        self.action_in_proj = nn.Linear(cfg.max_action_dim, width)
        self.action_out_proj = nn.Linear(width, cfg.max_action_dim)
        self.action_time_mlp_in = nn.Linear(2 * width, width)
        self.action_time_mlp_out = nn.Linear(width, width)
        if world_inject is not None:
            self.world_inject = world_inject
        self._prefill = vlm_with_expert.prefill  # swapped for compiled versions by ``compile_stages``
        self._step = self.denoise_step

    def compile_stages(self, mode: str | None = None) -> None:
        """torch.compile the hot stages at their call sites: the prefix pass, each vision block, and the
        denoising step (static shapes per batch size). Masks and positions are built outside them."""
        for layer in self.vlm_with_expert.vlm.model.vision_model.encoder.layers:
            layer.compile(mode=mode, dynamic=False)
        self._prefill = torch.compile(self.vlm_with_expert.prefill, mode=mode, dynamic=False)
        self._step = torch.compile(self.denoise_step, mode=mode, dynamic=False)

    # ----------------------------------------------------------------------------------- prefix
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """images [N,3,H,W] in [-1,1] -> [N, tokens, W] scaled by sqrt(W) in the VLM dtype."""
        backbone = self.vlm_with_expert.vlm.model
        dtype = backbone.vision_model.embeddings.patch_embedding.weight.dtype
        emb = backbone.connector(backbone.vision_model(images.to(dtype)))
        return emb * torch.tensor(emb.shape[-1] ** 0.5, dtype=emb.dtype, device=emb.device)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.vlm_with_expert.text_model.embed_tokens(tokens)

    def embed_prefix(self, inputs: PrefixInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[camera tokens]… [language] [state] -> embs [B,P,W], pad [B,P] bool, att [B,P] (AR flags).

        Images and language get flag 0 (bidirectional), the state 1 (it sees them, they do not see it).
        All cameras go through the vision tower in one batched call.
        """
        images, img_masks, state = inputs.images, inputs.image_masks, inputs.state
        bsz = state.shape[0]
        device = state.device
        n_cam = len(images)
        img_emb = self.embed_images(torch.cat(images, dim=0))  # (n_cam*B, T, W)
        img_emb = img_emb.view(n_cam, bsz, *img_emb.shape[1:])
        embs, pads = [], []
        special = self.cfg.image_special_token_ids
        if special is not None:  # the same start / end tokens around every camera
            start = self.embed_tokens(torch.tensor(special, device=device)).unsqueeze(0).expand(bsz, -1, -1)
            end = self.embed_tokens(torch.tensor(special[:1], device=device)).unsqueeze(0).expand(bsz, -1, -1)
        for cam in range(n_cam):
            if special is not None:
                embs.append(start)
                pads.append(torch.ones(bsz, start.shape[1], dtype=torch.bool, device=device))
            embs.append(img_emb[cam])
            pads.append(img_masks[cam][:, None].expand(bsz, img_emb.shape[2]))
            if special is not None:
                embs.append(end)
                pads.append(torch.ones(bsz, 1, dtype=torch.bool, device=device))
        lang = self.embed_tokens(inputs.tokens)
        embs.append(lang * math.sqrt(lang.shape[-1]))
        pads.append(inputs.token_masks)
        state_emb = self.state_proj(state.to(self.state_proj.weight.dtype))[:, None, :]  # (B, 1, W)
        embs.append(state_emb)
        pads.append(torch.ones(bsz, 1, dtype=torch.bool, device=device))
        embs_t = torch.cat(embs, dim=1)  # dtype promotion: bf16 image/language + fp32 state -> fp32
        pad_t = torch.cat(pads, dim=1)
        att_t = torch.zeros(bsz, pad_t.shape[1], dtype=torch.bool, device=device)
        att_t[:, -1] = True
        if pad_t.shape[1] < self.cfg.prefix_length:
            extra = self.cfg.prefix_length - pad_t.shape[1]
            embs_t = F.pad(embs_t, (0, 0, 0, extra))
            pad_t = F.pad(pad_t, (0, extra), value=False)
            att_t = F.pad(att_t, (0, extra), value=False)
        return embs_t, pad_t, att_t

    def encode_prefix(self, inputs: PrefixInputs) -> PrefixState:
        """Run the VLM once over the prefix and precompute every mask/position the steps need."""
        embs, pad, att = self.embed_prefix(inputs)
        mask = make_att_2d_masks(pad, att)
        positions = torch.cumsum(pad, dim=1) - 1
        slen = self.cfg.chunk_size
        cache = self._prefill(embs, positions, mask)
        bsz = pad.shape[0]
        suffix_pad = torch.ones(bsz, slen, dtype=torch.bool, device=pad.device)
        suffix_mask = make_att_2d_masks(suffix_pad, torch.ones_like(suffix_pad))  # causal actions
        full_mask = torch.cat([pad[:, None, :].expand(bsz, slen, pad.shape[1]), suffix_mask], dim=2)
        suffix_positions = pad.sum(dim=-1, keepdim=True) + torch.cumsum(suffix_pad, dim=1) - 1
        return PrefixState(cache=cache, pad_mask=pad, suffix_positions=suffix_positions, full_mask=full_mask)

    # ----------------------------------------------------------------------------------- suffix
    def time_embeddings(self, times: list[float], bsz: int, device: torch.device) -> list[torch.Tensor]:
        """Sinusoidal embeddings [B, W] of each integration time (precomputed per chunk)."""
        width = self.action_in_proj.out_features
        out = []
        for t in times:
            tt = torch.tensor(t, dtype=torch.float32, device=device).expand(bsz)
            emb = sinusoidal_time_embedding(tt, width, self.cfg.min_period, self.cfg.max_period)
            out.append(emb.to(self.action_in_proj.weight.dtype))
        return out

    def embed_suffix(self, x_t: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        """x_t [B,S,A] and time_emb [B,W] -> action tokens [B,S,W] (time fused by an MLP)."""
        action = self.action_in_proj(x_t.to(self.action_in_proj.weight.dtype))
        time = time_emb.to(action.dtype)[:, None, :].expand_as(action)
        h = self.action_time_mlp_in(torch.cat([action, time], dim=2))
        return self.action_time_mlp_out(F.silu(h))

    def velocity(self, suffix_out: torch.Tensor, memory: torch.Tensor | None) -> torch.Tensor:
        """Expert output [B,S,W] (after its final norm) -> velocity [B,S,A].

        The world memory is injected into the fp32 action tokens right before ``action_out_proj``,
        where the research plugin's ``denoise_step`` puts it.
        """
        # LeRobot casts to fp32, the dtype it stores action_out_proj in; a forced dtype casts to that one.
        h = suffix_out[:, -self.cfg.chunk_size :].to(self.action_out_proj.weight.dtype)
        if memory is not None:
            h = self.world_inject(h, memory)
        return self.action_out_proj(h).float()

    def denoise_step(
        self, x_t: torch.Tensor, time_emb: torch.Tensor, prefix: PrefixState, memory: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One velocity evaluation v(x_t, t) [B,S,A] reading the cached prefix."""
        suffix = self.embed_suffix(x_t, time_emb)
        out = self.vlm_with_expert.forward_suffix(suffix, prefix.cache, prefix.suffix_positions, prefix.full_mask)
        return self.velocity(out, memory)

    @torch.no_grad()
    def sample_actions(
        self,
        prefix: PrefixState,
        noise: torch.Tensor,
        memory: torch.Tensor | None = None,
        times: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Euler-integrate noise [B,S,A] from t=1 to t=0 -> normalized actions [B,S,A] (fp32).

        ``times`` (the per-step time embeddings) may be precomputed, e.g. for CUDA-graph capture.
        """
        dt = -1.0 / self.cfg.num_steps
        if times is None:
            times = self.time_embeddings(euler_times(self.cfg.num_steps), noise.shape[0], noise.device)
        x_t = noise
        for time_emb in times:
            x_t = x_t + dt * self._step(x_t, time_emb, prefix, memory)
        return x_t

    # ----------------------------------------------------------------------------------- training
    def loss(
        self,
        inputs: PrefixInputs,
        actions: torch.Tensor,
        noise: torch.Tensor,
        time: torch.Tensor,
        memory: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """LeRobot's per-element flow-matching loss [B,S,A]: mse(noise - actions, v(x_t, t)).

        x_t = t·noise + (1−t)·actions, one joint pass without a cache.
        """
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions
        u_t = noise - actions
        prefix, pad, att = self.embed_prefix(inputs)
        width = self.action_in_proj.out_features
        time_emb = sinusoidal_time_embedding(time, width, self.cfg.min_period, self.cfg.max_period)
        suffix = self.embed_suffix(x_t, time_emb.to(self.action_in_proj.weight.dtype))
        bsz, slen = suffix.shape[:2]
        suffix_pad = torch.ones(bsz, slen, dtype=torch.bool, device=pad.device)
        pad_all = torch.cat([pad, suffix_pad], dim=1)
        att_all = torch.cat([att, torch.ones_like(suffix_pad)], dim=1)
        mask = make_att_2d_masks(pad_all, att_all)
        positions = torch.cumsum(pad_all, dim=1) - 1
        out = self.vlm_with_expert.forward_joint(prefix, suffix, positions, mask)
        v_t = self.velocity(out, memory)
        return F.mse_loss(u_t, v_t, reduction="none")
