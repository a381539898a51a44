"""Standard normal draws with one generator per batch row: each episode's own randomness.

The denoising noise and the random memory modes draw from the episode's generator, so a row's numbers
do not depend on which other episodes share its batch (evaluator, server and ``Policy`` alike).
"""

from __future__ import annotations

import torch


def per_row_normal(
    shape: tuple[int, ...], generators: list[torch.Generator] | None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """float32 N(0, 1) of ``shape`` [B, ...]: row i from ``generators[i]`` (drawn on that generator's device,
    one row at a time, so a row does not depend on the batch), or the global RNG if None."""
    if generators is None:
        return torch.randn(shape, device=device)
    if len(generators) != shape[0]:
        raise ValueError(f"got {len(generators)} generators for a batch of {shape[0]}")
    rows = [torch.randn(shape[1:], generator=g, device=g.device) for g in generators]
    return torch.stack(rows).to(device)  # (B, ...)
