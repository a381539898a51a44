"""Debug-size checkpoints (vlaworld.debug) on disk in LeRobot's exact layout, with the tests' schedule.

The weights are random, stored with LeRobot's dtype mix (bf16 VLM and expert; fp32 projections and
cross-attention k/v), and the non-weight files come from ``tests/support/lerobot_layout.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from safetensors.torch import save_file

from tests.support import lerobot_layout as layout
from tests.support.tiny_models import TEST_SCHEDULE
from vlaworld import debug
from vlaworld.checkpoint.architecture import architecture
from vlaworld.config import PolicyConfig
from vlaworld.models.smolvla import VLMConfig

VLM_REPO = "tiny-org/TinySmolVLM"


def tiny_config_json(world: bool = False, **overrides) -> dict:
    inputs, outputs = layout.features(image_shape=(3, 16, 16))
    base = {**TEST_SCHEDULE, **debug.POLICY_FIELDS, "vlm_model_name": VLM_REPO}
    base.update(overrides)
    make = layout.smolvla_world_config if world else layout.smolvla_config
    return make(input_features=inputs, output_features=outputs, overrides=base)


def lerobot_dtypes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cast to LeRobot's stored mix: fp32 for model.action_*, model.state_proj and the CA k/v; bf16 else."""
    out = {}
    for key, t in state.items():
        fp32 = key.startswith(("model.action_", "model.state_proj")) or (
            ".lm_expert." in key and key.endswith(("k_proj.weight", "v_proj.weight")) and t.shape[0] == t.shape[1]
        )
        out[key] = t.to(torch.float32 if fp32 else torch.bfloat16).contiguous()
    return out


def write_tiny_checkpoint(directory: Path, *, seed: int = 0, stats: bool = True, config: dict | None = None) -> Path:
    """A complete ``pretrained_model/`` directory for a tiny smolvla policy."""
    cfg_json = config or tiny_config_json()
    pstats = layout.dataset_stats(seed=seed) if stats else None
    layout.write_checkpoint(directory, config=cfg_json, stats=pstats)
    model = random_model(cfg_json, seed)
    save_file(lerobot_dtypes(model.state_dict()), directory / "model.safetensors", metadata={"format": "pt"})
    return directory


def random_model(cfg_json: dict, seed: int) -> torch.nn.Module:
    """The modules a config.json describes (debug-size VLM), every parameter perturbed from its init."""
    arch = architecture(PolicyConfig.from_lerobot(cfg_json), VLMConfig.from_hf(debug.VLM_JSON))
    torch.manual_seed(seed)
    model = arch.build()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def libero_batch(bsz: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "observation.images.image": torch.randint(0, 256, (bsz, 16, 16, 3), generator=g, dtype=torch.uint8).numpy(),
        "observation.images.image2": torch.randint(0, 256, (bsz, 16, 16, 3), generator=g, dtype=torch.uint8).numpy(),
        "observation.state": torch.randn(bsz, 8, generator=g).numpy(),
        "task": ["pick up the black bowl and place it on the plate", "open the top drawer of the cabinet"][:bsz]
        + ["put the cream cheese in the basket"] * max(0, bsz - 2),
    }


VJEPA_REPO = "tiny-org/TinyVJEPA2"
WORLD_OVERRIDES = {**debug.WORLD_FIELDS, "world_vision_model_name": VJEPA_REPO}


def write_tiny_world_checkpoint(directory: Path, *, seed: int = 0, gate: float = 0.5, **overrides) -> Path:
    """A complete ``pretrained_model/`` of a tiny smolvla_world policy; ``gate`` is the stored gate param."""
    cfg_json = tiny_config_json(world=True, **{**WORLD_OVERRIDES, **overrides})
    layout.write_checkpoint(directory, world=True, config=cfg_json, stats=layout.dataset_stats(seed=seed))
    model = random_model(cfg_json, seed)
    with torch.no_grad():
        model.model.world_inject.gate.fill_(gate)
    state = lerobot_dtypes({k: v for k, v in model.state_dict().items() if "world_inject" not in k and "prophet" not in k})
    state |= {k: v.float().contiguous() for k, v in model.state_dict().items() if "world_inject" in k or "prophet" in k}
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


class TinyFiles(NamedTuple):
    vlm: Path
    ckpt: Path


class TinyWorldFiles(NamedTuple):
    vlm: Path
    vjepa: Path
    ckpt: Path


def write_tiny_files(root: Path) -> TinyFiles:
    return TinyFiles(debug.write_vlm(root / "vlm"), write_tiny_checkpoint(root / "pretrained_model"))


def write_tiny_world_files(root: Path) -> TinyWorldFiles:
    return TinyWorldFiles(debug.write_vlm(root / "vlm"), debug.write_vjepa(root / "vjepa", seed=0),
                          write_tiny_world_checkpoint(root / "pretrained_model"))
