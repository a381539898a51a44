"""Pre- and post-processing of policy inputs and outputs, as LeRobot's SmolVLA does them.

Images: float [0,1] CHW, aspect-preserving bilinear resize padded on the left and top (not centred)
to the configured size, then ×2−1, so the padding becomes −1 (LeRobot ``resize_with_pad``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize_with_pad(img: torch.Tensor, width: int, height: int, pad_value: float = 0.0) -> torch.Tensor:
    """Resize ``img`` [B,C,H,W] keeping its aspect ratio, then pad left/top to [B,C,height,width].

    Arguments in LeRobot's order: ``resize_imgs_with_padding`` is passed as (width, height).
    """
    if img.ndim != 4:
        raise ValueError(f"resize_with_pad expects [B,C,H,W], got shape {tuple(img.shape)}")
    cur_h, cur_w = img.shape[2:]
    ratio = max(cur_w / width, cur_h / height)
    resized_h, resized_w = int(cur_h / ratio), int(cur_w / ratio)
    resized = F.interpolate(img, size=(resized_h, resized_w), mode="bilinear", align_corners=False)
    pad_h, pad_w = max(0, height - resized_h), max(0, width - resized_w)
    return F.pad(resized, (pad_w, 0, pad_h, 0), value=pad_value)  # (B, C, height, width)


def to_float_chw(img: torch.Tensor | np.ndarray, key: str) -> torch.Tensor:
    """A camera batch as float [B,3,H,W] in [0,1]: uint8 [B,H,W,3] is divided by 255 (as LeRobot's
    ``preprocess_observation``), float [B,3,H,W] is taken as is; [B,T,...] keeps the last frame."""
    t = torch.as_tensor(img)
    if t.ndim == 5:
        t = t[:, -1]
    if t.ndim != 4:
        raise ValueError(f"{key}: expected a batch of images [B,H,W,3] uint8 or [B,3,H,W] float, got {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        if t.shape[-1] != 3:
            raise ValueError(f"{key}: uint8 images must be [B,H,W,3] (channels last), got {tuple(t.shape)}")
        return t.permute(0, 3, 1, 2).to(torch.float32) / 255
    if not t.is_floating_point():
        raise ValueError(f"{key}: images must be uint8 [B,H,W,3] or float [B,3,H,W] in [0,1], got {t.dtype}")
    if t.shape[1] != 3:
        raise ValueError(f"{key}: float images must be [B,3,H,W] (channels first) in [0,1], got {tuple(t.shape)}")
    return t


def pad_vector(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Zero-pad the last dimension of x to ``dim`` (LeRobot ``pad_vector``)."""
    if x.shape[-1] > dim:
        raise ValueError(f"vector of width {x.shape[-1]} is wider than the model's {dim}")
    return torch.nn.functional.pad(x, (0, dim - x.shape[-1]))
