"""Strict state-dict loading shared by every checkpoint reader.

LeRobot loads with ``strict=False``, so a renamed or missing tensor silently leaves random weights in
place. Here every tensor of a file is either mapped to a parameter or matched by an explicit drop
pattern, and every parameter is filled; anything else is one error listing all the problems.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from vlaworld.checkpoint.files import CheckpointError

def _fmt(keys: Iterable[str], limit: int = 20) -> str:
    keys = sorted(keys)
    shown = "\n    ".join(keys[:limit])
    more = f"\n    ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"\n    {shown}{more}"


def check_keys(
    expected: Mapping[str, torch.Size],
    tensors: Mapping[str, torch.Tensor],
    drop: Iterable[str] = (),
    source: str = "checkpoint",
) -> dict[str, torch.Tensor]:
    """Return the tensors of ``tensors`` that fill ``expected``; raise on any mismatch.

    ``drop`` holds regular expressions (full match) for keys that are known and deliberately unused.
    """
    drop_res = [re.compile(p) for p in drop]
    kept, unexpected, mismatched = {}, [], []
    for key, value in tensors.items():
        if key in expected:
            if tuple(value.shape) != tuple(expected[key]):
                mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(expected[key])}")
            else:
                kept[key] = value
        elif not any(r.fullmatch(key) for r in drop_res):
            unexpected.append(key)
    missing = [k for k in expected if k not in tensors]
    if missing or unexpected or mismatched:
        parts = [f"{source} does not match the model it should fill."]
        if missing:
            parts.append(f"  missing keys ({len(missing)}):{_fmt(missing)}")
        if unexpected:
            parts.append(f"  unexpected keys ({len(unexpected)}):{_fmt(unexpected)}")
        if mismatched:
            parts.append(f"  shape mismatches ({len(mismatched)}):{_fmt(mismatched)}")
        parts.append(
            "  Check that the config.json beside the weights describes the same model (layer counts, "
            "widths, feature shapes), and that the file is not truncated or from another model."
        )
        raise CheckpointError("\n".join(parts))
    return kept


def load_strict(
    module: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    drop: Iterable[str] = (),
    source: str = "checkpoint",
    keep_dtype: bool = True,
) -> None:
    """Fill every parameter and buffer of ``module`` from ``tensors`` (already renamed to its keys).

    With ``keep_dtype`` each parameter takes the dtype stored in the file (LeRobot mixes bf16 and fp32
    on purpose); otherwise tensors are cast to the module's dtypes. Works for modules on the meta device.
    """
    state = module.state_dict(keep_vars=True)
    expected = {k: v.shape for k, v in state.items()}
    kept = check_keys(expected, tensors, drop, source)
    if not keep_dtype:
        kept = {k: v.to(state[k].dtype) for k, v in kept.items()}
    module.load_state_dict(kept, strict=True, assign=True)
