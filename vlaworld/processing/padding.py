"""Padding a batch of rows for a compiled policy, the same way in the evaluator and the server.

Compiled code (torch.compile, CUDA graphs) is specialised per batch size. Measured on an H100 with the
demo policy and compile=True: every new size cost 20-28 s of compilation, and past torch's recompile
limit (8 sizes) calls fell back to a path slower than eager. Padding to the next power of two bounds
the sizes to log2(max batch) + 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

Row = TypeVar("Row")


def compiled_batch_size(rows: int) -> int:
    """The padded batch size for a compiled policy: the next power of two."""
    return 1 << (rows - 1).bit_length()


def pad_rows(
    observations: Sequence[Row], noise: torch.Tensor, generators: Sequence[torch.Generator], size: int
) -> tuple[list[Row], torch.Tensor, list[torch.Generator]]:
    """``size`` rows: copies of row 0 with zero noise and throwaway generators (their outputs are dropped)."""
    pad = size - len(observations)
    if pad <= 0:
        return list(observations), noise, list(generators)
    noise = torch.cat([noise, noise.new_zeros((pad, *noise.shape[1:]))])  # (size, chunk, max_action_dim)
    spare = [torch.Generator().manual_seed(0) for _ in range(pad)]
    return [*observations, *[observations[0]] * pad], noise, [*generators, *spare]
