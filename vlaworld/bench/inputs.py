"""Synthetic chunk inputs at a benchmark size, and the device-side tensors each stage starts from.

``HostBatch`` is what the policy process holds when a chunk is due (uint8 camera frames, the world
camera's last m+T−1 frames, state, token ids), so an end-to-end chunk includes the host→device copies
and preprocessing the policy pays. ``StageInputs`` are the intermediate tensors, computed once, so
each stage can be timed alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vlaworld.bench.stack import Stack
from vlaworld.models.flow_matching import PrefixInputs, PrefixState, make_att_2d_masks
from vlaworld.processing.transforms import resize_with_pad, to_float_chw
from vlaworld.world.preprocess import preprocess_clip


@dataclass
class HostBatch:
    cameras: list[torch.Tensor]  # n_cam x [B, H, W, 3] uint8 (CPU)
    world_window: np.ndarray  # [B, m+T-1, H, W, 3] uint8: the world camera's recent frames, oldest first
    state: torch.Tensor  # [B, max_state_dim] float32 (normalised and padded)
    tokens: torch.Tensor  # [B, L] int64
    token_mask: torch.Tensor  # [B, L] bool
    noise: torch.Tensor  # [B, chunk, max_action_dim] float32

    @property
    def batch_size(self) -> int:
        return int(self.state.shape[0])


def host_batch(stack: Stack, bsz: int, seed: int = 0) -> HostBatch:
    """Random inputs with the shapes a LIBERO chunk has (every token valid, as with max_length padding)."""
    cfg, pol = stack.config, stack.config.policy
    gen = torch.Generator().manual_seed(seed)
    size = cfg.camera_size
    n_cam = len(pol.image_features)
    cams = [torch.randint(0, 256, (bsz, size, size, 3), dtype=torch.uint8, generator=gen) for _ in range(n_cam)]
    w = pol.world
    n_frames = w.temporal_window + w.context_frames - 1
    window = torch.randint(0, 256, (bsz, n_frames, size, size, 3), dtype=torch.uint8, generator=gen).numpy()
    vocab = stack.config.vlm.text.vocab_size
    tokens = torch.randint(0, vocab, (bsz, cfg.language_tokens), generator=gen)
    return HostBatch(
        cameras=cams, world_window=window, state=torch.randn(bsz, pol.max_state_dim, generator=gen),
        tokens=tokens, token_mask=torch.ones(bsz, cfg.language_tokens, dtype=torch.bool),
        noise=torch.randn(bsz, pol.chunk_size, pol.max_action_dim, generator=gen),
    )


def prefix_inputs(stack: Stack, batch: HostBatch) -> PrefixInputs:
    """The host batch as the model takes it, on the device: uint8 frames -> [-1, 1] at the model's size
    (the image part of ``vlaworld.processing.InputProcessor``; the state and tokens are made already)."""
    width, height = stack.config.policy.resize_imgs_with_padding
    images, masks = [], []
    for i, cam in enumerate(batch.cameras):
        img = to_float_chw(cam, f"camera{i}").to(stack.device)  # (B, 3, H, W) in [0, 1]
        images.append(resize_with_pad(img, width, height, pad_value=0) * 2.0 - 1.0)
        masks.append(torch.ones(cam.shape[0], dtype=torch.bool, device=stack.device))
    dev = stack.device
    return PrefixInputs(images=tuple(images), image_masks=tuple(masks), tokens=batch.tokens.to(dev),
                        token_masks=batch.token_mask.to(dev), state=batch.state.to(dev))


@dataclass
class StageInputs:
    """Device tensors each stage reads, precomputed from one ``HostBatch``."""

    vision_input: torch.Tensor  # all cameras concatenated [n_cam*B, 3, S, S]
    prefix_embs: torch.Tensor  # [B, P, W]
    prefix_positions: torch.Tensor
    prefix_mask: torch.Tensor
    prefix: PrefixState
    noise: torch.Tensor
    clips: torch.Tensor | None  # [B*T, m, 3, S, S] normalised encoder input on the device
    z_hist: torch.Tensor | None  # [B, T, D]
    memory: torch.Tensor | None  # [B, K, D]


@torch.no_grad()
def stage_inputs(stack: Stack, batch: HostBatch) -> StageInputs:
    head, dev = stack.head, stack.device
    inputs = prefix_inputs(stack, batch)
    embs, pad, att = head.embed_prefix(inputs)
    clips = z_hist = memory = None
    if stack.world is not None:
        w = stack.world
        m, t = w.rollout.window, w.rollout.context
        frames = torch.as_tensor(batch.world_window)
        cut = torch.stack([frames[:, j : j + m] for j in range(t)], dim=1).flatten(0, 1)  # (B*T, m, H, W, 3)
        clips = preprocess_clip(cut, mode=w.rollout.preprocess, size=w.encoder.config.crop_size).to(dev, stack.dtype)
        z_hist = w.latent_history(batch.world_window).to(dev)
        memory = w.predict(z_hist)
    return StageInputs(
        vision_input=torch.cat(inputs.images, dim=0), prefix_embs=embs,
        prefix_positions=torch.cumsum(pad, dim=1) - 1, prefix_mask=make_att_2d_masks(pad, att),
        prefix=head.encode_prefix(inputs), noise=batch.noise.to(dev),
        clips=clips, z_hist=z_hist, memory=memory,
    )
