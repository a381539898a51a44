"""Camera clips to V-JEPA 2 input: [B, m, H, W, 3] uint8 or [B, m, 3, H, W] float in [0,1] -> [B, m, 3, 256, 256].

Two modes (SPEC §6), both ending in a bilinear resize to 256² (``align_corners=False``, no antialias)
and ImageNet mean/std normalisation in float32:

``default`` — how the training latents were made (charbelsan/world-modality-vla, branch
  phaseC-flow-head). ``world_modality/precompute_world_latents.py`` L165-167 and L183 read clips of
  ``LeRobotDataset("HuggingFaceVLA/libero")[i]["observation.images.image"]`` (float32 CHW = uint8/255,
  256²; the dataset stores PNGs), L243-256 send them to ``VisionEncoder.encode_temporal``
  (``facebook/vjepa2-vitg-fpc64-256``, fp16, ``world_modality/vision.py`` L24, L31, L49-53), which
  (L114-130) divides by 255 only if ``max() > 1``, resizes with ``F.interpolate(bilinear,
  align_corners=False)`` to 256² (an exact identity on 256² frames) and normalises with the
  processor's ``image_mean``/``image_std`` (ImageNet), in float32, before casting to the model dtype
  (L133). The HF video processor's resize to 292 + centre crop 256 is *bypassed*: only its mean/std are
  used. m=1 latents (L259-267, ``_encode_vjepa_batch`` L172-200) follow the same recipe.

``legacy`` — the plugin's rollout path (``lerobot_policy_world_modality/modeling_smolvla_world.py``
  L505-521): the first camera as SmolVLA's ``prepare_images`` made it (``resize_with_pad`` to the
  checkpoint's ``resize_imgs_with_padding`` with zero padding on the left/top, none when that is null,
  then ×2−1), mapped back with ``((x+1)*0.5).clamp(0,1)`` and then through the same ``encode_temporal``
  (bilinear to 256, normalise). For 256² frames and a 512 checkpoint this is a 256→512→256 round trip,
  which does not give back the training distribution exactly. The plugin runs the encoder in float16
  on every device (``VisionEncoder(..., dtype="float16")``); ``vlaworld.load`` does the same in this mode.

The plugin guessed the value range from ``max() > 1``; here the dtype decides (uint8 means 0..255),
which is the same on every real frame and needs no host sync.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from vlaworld.config.world import WORLD_PREPROCESS_MODES
from vlaworld.processing.transforms import resize_with_pad

WorldPreprocess = Literal["default", "legacy"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # VJEPA2VideoProcessor image_mean (IMAGENET_DEFAULT_MEAN)
IMAGENET_STD = (0.229, 0.224, 0.225)  # VJEPA2VideoProcessor image_std
ENCODER_SIZE = 256  # vision.py encode_temporal resizes to 256² (the ViT-g crop_size)
SMOLVLA_SIZE = (512, 512)  # SmolVLA's default resize_imgs_with_padding (width, height)


def clip_to_float(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    """[B, m, H, W, 3] uint8 or [B, m, 3, H, W] float in [0,1] -> float32 [B, m, 3, H, W] in [0,1]."""
    x = torch.as_tensor(frames)
    if x.ndim != 5:
        raise ValueError(f"world clips are [B, m, H, W, 3] uint8 or [B, m, 3, H, W] float, got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        if x.shape[-1] != 3:
            raise ValueError(f"uint8 world clips must be channels-last [B, m, H, W, 3], got {tuple(x.shape)}")
        return x.permute(0, 1, 4, 2, 3).float() / 255.0  # (B, m, 3, H, W)
    if not x.is_floating_point():
        raise ValueError(f"world clips must be uint8 or float, got {x.dtype}")
    if x.shape[2] != 3:
        raise ValueError(f"float world clips must be channels-first [B, m, 3, H, W] in [0,1], got {tuple(x.shape)}")
    return x.float()


def preprocess_clip(
    frames: torch.Tensor | np.ndarray,
    mode: WorldPreprocess = "default",
    size: int = ENCODER_SIZE,
    smolvla_size: tuple[int, int] | None = SMOLVLA_SIZE,
) -> torch.Tensor:
    """Frames of one clip per row -> normalised encoder input float32 [B, m, 3, size, size].

    ``smolvla_size`` is the checkpoint's ``resize_imgs_with_padding`` (legacy mode only; None: no resize).
    """
    if mode not in WORLD_PREPROCESS_MODES:
        raise ValueError(f"unknown world preprocessing {mode!r}; choose one of {', '.join(WORLD_PREPROCESS_MODES)}")
    x = clip_to_float(frames)
    B, m = x.shape[:2]
    x = x.flatten(0, 1)  # (B*m, 3, H, W)
    if mode == "legacy":
        if smolvla_size is not None:
            x = resize_with_pad(x, *smolvla_size, pad_value=0.0)
        x = x * 2.0 - 1.0  # SigLIP input, [-1, 1]
        x = ((x + 1.0) * 0.5).clamp(0.0, 1.0)  # plugin: back to [0, 1]
    if x.shape[-2:] != (size, size):  # at the size already, this bilinear resize is an exact identity
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)  # (B*m, 3, size, size)
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).unflatten(0, (B, m))  # (B, m, 3, size, size)
