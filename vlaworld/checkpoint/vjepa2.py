"""Reading a Hugging Face V-JEPA 2 directory (``world_vision_model_name``) into ``VJEPA2Encoder``.

Files: ``config.json`` plus ``model.safetensors`` or the shards of ``model.safetensors.index.json``,
from ``--world-encoder DIR`` or the offline Hugging Face cache; safetensors only, filled strictly.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vlaworld.checkpoint.files import open_safetensors, read_json
from vlaworld.checkpoint.hub import ModelFilesNotFound, find_model_dir
from vlaworld.checkpoint.strict import load_strict
from vlaworld.models.vjepa2 import VJEPA2Config, VJEPA2Encoder

DEFAULT_REPO = "facebook/vjepa2-vitg-fpc64-256"  # the plugin's world_vision_model_name


ENCODER_DROP = (r"predictor\..*",)  # VJEPA2Model files also carry the pretraining predictor (~22M)
CLASSIFIER_DROP = (r"pooler\..*", r"classifier\..*")  # VJEPA2ForVideoClassification heads


def adapt_hf_keys(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """Detect the file's layout by its keys; return tensors under our names and the drop patterns.

    ``VJEPA2Model`` files use our names already (identity); ``VJEPA2ForVideoClassification`` files
    prefix the backbone with ``vjepa2.`` and add a pooler and classifier, which are dropped.
    """
    if any(k.startswith("vjepa2.") for k in tensors):
        renamed = {k.removeprefix("vjepa2."): v for k, v in tensors.items()}
        return renamed, ENCODER_DROP + CLASSIFIER_DROP
    return dict(tensors), ENCODER_DROP


def weight_files(model_dir: Path, repo_id: str) -> list[Path]:
    """The safetensors files of a HF directory: ``model.safetensors`` or the shards of its index."""
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
        missing = [s for s in shards if not (model_dir / s).is_file()]
        if missing:
            raise ModelFilesNotFound(f"{index} lists shards that are not there: {', '.join(missing)}")
        return [model_dir / s for s in shards]
    raise ModelFilesNotFound(
        f"no model.safetensors or model.safetensors.index.json in {model_dir} for the world encoder "
        f"({repo_id}); vlaworld reads safetensors only (never pickled .bin files). Pass --world-encoder "
        f"DIR with the files of: huggingface-cli download {repo_id}"
    )


def load_vjepa2(
    path: str | os.PathLike | None,
    repo_id: str = DEFAULT_REPO,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> VJEPA2Encoder:
    """Build the encoder on the meta device and fill it strictly from a HF VJEPA2 directory.

    ``path`` (``--world-encoder``) wins over the offline HF cache. ``dtype`` None keeps the stored
    dtype (fp32 for the published checkpoints). Returned in eval mode with gradients off.
    """
    model_dir = find_model_dir(
        repo_id, explicit=path, required=("config.json",), flag="--world-encoder", what="world encoder"
    )
    config = VJEPA2Config.from_hf(read_json(model_dir / "config.json"))
    tensors: dict[str, torch.Tensor] = {}
    for file in weight_files(model_dir, repo_id):
        with open_safetensors(file) as f:
            for key in f.keys():
                t = f.get_tensor(key)  # cast one tensor at a time: peak memory stays ~1x the target
                tensors[key] = t.to(device=device, dtype=dtype if dtype is not None else t.dtype)
    tensors, drop = adapt_hf_keys(tensors)
    with torch.device("meta"):
        model = VJEPA2Encoder(config)
    load_strict(model, tensors, drop=drop, source=f"world encoder {model_dir}", keep_dtype=True)
    return model.eval().requires_grad_(False)


def encoder_files(explicit: str | os.PathLike | None, repo_id: str) -> dict[str, Path]:
    """The files ``load_vjepa2`` reads (config and safetensors, sharded or not), by role."""
    model_dir = find_model_dir(repo_id, explicit, ("config.json",), "--world-encoder", "world encoder")
    files = {"world_encoder/config.json": model_dir / "config.json"}
    files |= {f"world_encoder/{f.name}": f for f in weight_files(model_dir, repo_id)}
    return files
