"""Pre- and post-processing of policy inputs and outputs, as LeRobot's SmolVLA does them.

Images: float [0,1] CHW, aspect-preserving bilinear resize padded on the left and top (not centred)
to the configured size, then ×2−1, so the padding becomes −1 (LeRobot ``resize_with_pad``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_with_pad(img: torch.Tensor, height: int, width: int, pad_value: float = 0.0) -> torch.Tensor:
    """Resize ``img`` [B,C,H,W] keeping its aspect ratio, then pad left/top to [B,C,height,width]."""
    if img.ndim != 4:
        raise ValueError(f"resize_with_pad expects [B,C,H,W], got shape {tuple(img.shape)}")
    cur_h, cur_w = img.shape[2:]
    ratio = max(cur_w / width, cur_h / height)
    resized_h, resized_w = int(cur_h / ratio), int(cur_w / ratio)
    resized = F.interpolate(img, size=(resized_h, resized_w), mode="bilinear", align_corners=False)
    pad_h, pad_w = max(0, height - resized_h), max(0, width - resized_w)
    return F.pad(resized, (pad_w, 0, pad_h, 0), value=pad_value)  # (B, C, height, width)
