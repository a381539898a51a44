"""The built-in default policy (``--ckpt demo``): a tiny random-weight ``smolvla_world`` made on the fly.

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

from vlaworld.checkpoint import processors as lp

DEMO_VERSION = "demo-v1"
SEED = 20260125
VLM_REPO = "vlaworld/demo-smolvlm"
WORLD_REPO = "vlaworld/demo-vjepa2"
CAMERAS = ("observation.images.image", "observation.images.image2")  # HuggingFaceVLA/libero names

VLM_JSON = {
    "model_type": "smolvlm", "scale_factor": 2, "tie_word_embeddings": False,
    "vision_config": {"model_type": "smolvlm_vision", "hidden_size": 32, "intermediate_size": 64,
                      "num_hidden_layers": 2, "num_attention_heads": 4, "patch_size": 16, "image_size": 64},
    "text_config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-5,
                    "vocab_size": 256, "hidden_act": "silu", "rope_theta": 100000.0, "pad_token_id": 2},
}
VJEPA_JSON = {
    "model_type": "vjepa2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 2.0,
    "patch_size": 64, "tubelet_size": 2, "crop_size": 256, "in_chans": 3, "layer_norm_eps": 1e-6,
    "qkv_bias": True, "hidden_act": "gelu",
}
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<global-img>"]
WORDS = (
    "pick up the black bowl between plate and ramekin next to cookie box on top of wooden cabinet "
    "place it in center drawer stove table open close turn put push front back left right middle "
    "alphabet soup cream cheese tomato sauce ketchup orange juice milk butter chocolate pudding basket "
    "wine bottle rack bowl mug microwave"
).split()


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
    _write_vlm(tmp / "vlm")
    _write_world_encoder(tmp / "world_encoder")
    _write_checkpoint(tmp / "pretrained_model")
    (tmp / "COMPLETE").write_text(DEMO_VERSION)
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(root)
    except OSError:  # another process finished first: theirs is identical
        if not (root / "COMPLETE").is_file():
            raise
    return paths


def _write_vlm(directory: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(VLM_JSON, indent=2))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in ["\n", *WORDS, "[UNK]"]:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="removed")
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<|im_end|>", "unk_token": "[UNK]"})
    )


def _write_world_encoder(directory: Path) -> None:
    from vlaworld.models.vjepa2 import VJEPA2Config, VJEPA2Encoder

    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(VJEPA_JSON, indent=2))
    torch.manual_seed(SEED + 1)
    enc = VJEPA2Encoder(VJEPA2Config.from_hf(VJEPA_JSON))
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, directory / "model.safetensors",
              metadata={"format": "pt"})


def config_json() -> dict:
    """The demo's config.json, every field as LeRobot 0.4.4 + the world plugin write them."""
    inputs = {c: {"type": "VISUAL", "shape": [3, 256, 256]} for c in CAMERAS}
    inputs["observation.state"] = {"type": "STATE", "shape": [8]}
    return {
        "type": "smolvla_world", "n_obs_steps": 1, "input_features": inputs,
        "output_features": {"action": {"type": "ACTION", "shape": [7]}},
        "device": "cpu", "use_amp": False, "use_peft": False, "push_to_hub": False, "repo_id": None,
        "private": None, "tags": None, "license": None, "pretrained_path": None,
        "chunk_size": 50, "n_action_steps": 10,
        "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"},
        "max_state_dim": 32, "max_action_dim": 32, "resize_imgs_with_padding": [64, 64], "empty_cameras": 0,
        "adapt_to_pi_aloha": False, "use_delta_joint_actions_aloha": False, "tokenizer_max_length": 48,
        "num_steps": 10, "use_cache": True, "freeze_vision_encoder": True, "train_expert_only": True,
        "train_state_proj": True, "optimizer_lr": 1e-4, "optimizer_betas": [0.9, 0.95], "optimizer_eps": 1e-8,
        "optimizer_weight_decay": 1e-10, "optimizer_grad_clip_norm": 10, "scheduler_warmup_steps": 1000,
        "scheduler_decay_steps": 30000, "scheduler_decay_lr": 2.5e-6, "vlm_model_name": VLM_REPO,
        "load_vlm_weights": False, "add_image_special_tokens": False, "attention_mode": "cross_attn",
        "prefix_length": -1, "pad_language_to": "longest", "num_expert_layers": -1, "num_vlm_layers": 4,
        "self_attn_every_n_layers": 2, "expert_width_multiplier": 0.75, "min_period": 4e-3, "max_period": 4.0,
        "rtc_config": None, "compile_model": False, "compile_mode": "max-autotune",
        "dataset_repo_id": "HuggingFaceVLA/libero", "cache_dir": "cache", "world_latents_source": "vjepa",
        "latent_suffix": "m4", "world_latent_dim": VJEPA_JSON["hidden_size"], "init_from_policy_path": "",
        "init_from_strict": False, "context_frames": 4, "future_offset": 8, "enable_world_injection": True,
        "world_inject_num_heads": 4, "world_gate_init": 0.0, "world_memory_mode_train": "pred",
        "log_attn_stats": True, "log_grad_stats": True, "world_memory_mode_rollout": "pred",
        "world_inject_suffix_in": False, "world_prefix_tokens": 0, "world_prefix_block": "state",
        "world_prefix_gate_init": 0.0, "world_prefix_cross_attn": False, "world_prefix_num_heads": 8,
        "enable_world_predictor": True, "prophet_layers": 2, "prophet_heads": 4, "prophet_dropout": 0.0,
        "delta_prediction": True, "lambda_world": 0.2, "world_vision_model_name": WORLD_REPO,
        "world_use_first_camera_only": True, "world_rollout_temporal_window": 0,
    }


def _write_checkpoint(directory: Path) -> None:
    from vlaworld.checkpoint.architecture import architecture
    from vlaworld.config import PolicyConfig
    from vlaworld.models.smolvla import VLMConfig

    directory.mkdir(parents=True)
    cfg = config_json()
    (directory / "config.json").write_text(json.dumps(cfg, indent=4))
    policy = PolicyConfig.from_lerobot(cfg)
    torch.manual_seed(SEED)
    model = architecture(policy, VLMConfig.from_hf(VLM_JSON)).build()
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
