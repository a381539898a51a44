"""The built-in default policy (``--ckpt demo``): a random-weight ``smolvla_world`` of the debug size
(vlaworld.debug), made on the fly.

It exercises the whole neural path — SigLIP, the text layers, the expert with its KV cache, V-JEPA 2
latents, the Prophet and an open injection gate — at toy sizes, so the evaluator runs on a fresh
machine with nothing to download. It fails the tasks: its weights are random. The files are written
in LeRobot's layout (and a Hugging Face layout for the VLM and the encoder) under a cache folder,
deterministically, so every machine builds the same demo.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from vlaworld import debug
from vlaworld.checkpoint import processors as lp

DEMO_VERSION = "demo-v2"  # v2: the debug size (vlaworld.debug)
SEED = 20260125
VLM_REPO = "vlaworld/demo-smolvlm"
WORLD_REPO = "vlaworld/demo-vjepa2"
CAMERAS = ("observation.images.image", "observation.images.image2")  # HuggingFaceVLA/libero names

# SmolVLA's own schedule on the debug size: chunks of 50, 10 executed, 10 denoising steps, 48-token prompts.
SCHEDULE = {"chunk_size": 50, "n_action_steps": 10, "num_steps": 10, "tokenizer_max_length": 48}


@dataclass(frozen=True, kw_only=True)
class DemoPaths:
    ckpt: Path
    vlm: Path
    world_encoder: Path


def demo_root() -> Path:
    base = os.environ.get("VLAWORLD_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vlaworld"
    return Path(base) / DEMO_VERSION


def ensure_demo(root: Path | None = None) -> DemoPaths:
    """Build the demo files once (atomically) and return where they are."""
    root = Path(root) if root is not None else demo_root()
    paths = DemoPaths(ckpt=root / "pretrained_model", vlm=root / "vlm", world_encoder=root / "world_encoder")
    if (root / "COMPLETE").is_file():
        return paths
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    debug.write_vlm(tmp / "vlm")
    debug.write_vjepa(tmp / "world_encoder", seed=SEED + 1)
    _write_checkpoint(tmp / "pretrained_model")
    (tmp / "COMPLETE").write_text(DEMO_VERSION)
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(root)
    except OSError:  # another process finished first: theirs is identical
        if not (root / "COMPLETE").is_file():
            raise
    return paths


def config_json() -> dict:
    """The demo's config.json: every field LeRobot 0.4.4 + the world plugin write (their defaults where the
    debug size and the schedule say nothing)."""
    inputs = {c: {"type": "VISUAL", "shape": [3, 256, 256]} for c in CAMERAS}
    inputs["observation.state"] = {"type": "STATE", "shape": [8]}
    config = {  # LeRobot's and the plugin's defaults, in the order they write them
        "type": "smolvla_world", "n_obs_steps": 1, "input_features": inputs,
        "output_features": {"action": {"type": "ACTION", "shape": [7]}},
        "device": "cpu", "use_amp": False, "use_peft": False, "push_to_hub": False, "repo_id": None,
        "private": None, "tags": None, "license": None, "pretrained_path": None,
        "chunk_size": 50, "n_action_steps": 50,
        "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"},
        "max_state_dim": 32, "max_action_dim": 32, "resize_imgs_with_padding": [512, 512], "empty_cameras": 0,
        "adapt_to_pi_aloha": False, "use_delta_joint_actions_aloha": False, "tokenizer_max_length": 48,
        "num_steps": 10, "use_cache": True, "freeze_vision_encoder": True, "train_expert_only": True,
        "train_state_proj": True, "optimizer_lr": 1e-4, "optimizer_betas": [0.9, 0.95], "optimizer_eps": 1e-8,
        "optimizer_weight_decay": 1e-10, "optimizer_grad_clip_norm": 10, "scheduler_warmup_steps": 1000,
        "scheduler_decay_steps": 30000, "scheduler_decay_lr": 2.5e-6, "vlm_model_name": VLM_REPO,
        "load_vlm_weights": False, "add_image_special_tokens": False, "attention_mode": "cross_attn",
        "prefix_length": -1, "pad_language_to": "longest", "num_expert_layers": -1, "num_vlm_layers": 16,
        "self_attn_every_n_layers": 2, "expert_width_multiplier": 0.75, "min_period": 4e-3, "max_period": 4.0,
        "rtc_config": None, "compile_model": False, "compile_mode": "max-autotune",
        "dataset_repo_id": "HuggingFaceVLA/libero", "cache_dir": "cache", "world_latents_source": "vjepa",
        "latent_suffix": "m4", "world_latent_dim": 1408, "init_from_policy_path": "",
        "init_from_strict": False, "context_frames": 4, "future_offset": 8, "enable_world_injection": True,
        "world_inject_num_heads": 8, "world_gate_init": 0.0, "world_memory_mode_train": "pred",
        "log_attn_stats": True, "log_grad_stats": True, "world_memory_mode_rollout": "pred",
        "world_inject_suffix_in": False, "world_prefix_tokens": 0, "world_prefix_block": "state",
        "world_prefix_gate_init": 0.0, "world_prefix_cross_attn": False, "world_prefix_num_heads": 8,
        "enable_world_predictor": True, "prophet_layers": 2, "prophet_heads": 8, "prophet_dropout": 0.0,
        "delta_prediction": True, "lambda_world": 0.2, "world_vision_model_name": WORLD_REPO,
        "world_use_first_camera_only": True, "world_rollout_temporal_window": 0,
    }
    return config | SCHEDULE | debug.POLICY_FIELDS | debug.WORLD_FIELDS  # the plugin's field order, our values


def _write_checkpoint(directory: Path) -> None:
    from vlaworld.checkpoint.architecture import architecture
    from vlaworld.config import PolicyConfig
    from vlaworld.models.smolvla import VLMConfig

    directory.mkdir(parents=True)
    cfg = config_json()
    (directory / "config.json").write_text(json.dumps(cfg, indent=4))
    policy = PolicyConfig.from_lerobot(cfg)
    torch.manual_seed(SEED)
    model = architecture(policy, VLMConfig.from_hf(debug.VLM_JSON)).build()
    with torch.no_grad():
        model.model.world_inject.gate.fill_(0.5)  # open, so the world path runs (a trained gate starts at 0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, directory / "model.safetensors",
              metadata={"format": "pt"})
    stats = {  # LIBERO-like scales so normalised inputs are O(1)
        "observation.state": {"mean": torch.zeros(8), "std": torch.full((8,), 0.5)},
        "action": {"mean": torch.zeros(7), "std": torch.full((7,), 0.3)},
    }
    spec_files = lp.smolvla_spec(input_features=policy.input_features, output_features=policy.output_features,
                                 norm_map=cfg["normalization_mapping"], tokenizer_name=VLM_REPO, stats=stats,
                                 world=True)
    lp.write_processors(directory, spec_files)
