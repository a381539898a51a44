"""Deterministic random weights that any torch version reproduces bit for bit (torch only, no vlaworld).

The oracle environments run other torch versions than the tests: a model's random initialisation may
differ between them, but ``torch.randn`` with a seeded CPU generator does not. ``fill`` overwrites every
tensor of a state dict from a generator seeded by (seed, key), scaled so that real-size random models
keep sane activations; ``digest`` fingerprints a state dict, so a regenerated checkpoint can be checked
against the one an oracle wrote.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping

import torch


def fill(tensors: Mapping[str, torch.Tensor], seed: int) -> None:
    """Overwrite each tensor in place (in its own dtype) with seeded values, key by key."""
    with torch.no_grad():
        for key in sorted(tensors):
            tensors[key].copy_(values(key, tuple(tensors[key].shape), seed))


def values(key: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """float32 values for one tensor: N(0,1) scaled by its role (norm gains ~1, biases small, weights 1/sqrt(fan-in))."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % (2**62))
    x = torch.randn(shape, generator=g, dtype=torch.float32)
    leaf = key.rsplit(".", 1)[-1]
    module = key.rsplit(".", 2)[-2] if key.count(".") >= 1 else ""
    if "norm" in module and leaf == "weight":
        return 1.0 + 0.1 * x
    if leaf in ("bias", "in_proj_bias") or len(shape) < 2:
        return 0.02 * x
    if "embed" in key or "query_slots" in key:
        return 0.5 * x
    fan_in = 1
    for s in shape[1:]:
        fan_in *= s
    return x / fan_in**0.5


def digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over (key, dtype, shape, bytes) in key order."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{str(t.dtype).removeprefix('torch.')}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
