"""The non-weight files of a ``pretrained_model/`` directory, written as ``lerobot-train`` (0.4.x) writes them.

Independent of ``vlaworld`` on purpose, so tests compare our reader/writer against this transcription of
LeRobot's format rather than against themselves. Sources (huggingface/lerobot @v0.4.4 unless noted):
- ``config.json``: ``PreTrainedConfig._save_pretrained`` (configs/policies.py L163-165) =
  ``draccus.dump(cfg, f, indent=4)`` with draccus 0.10: ``{"type": <choice>, **dataclass fields in
  declaration order}`` (a redeclared field keeps its base position), enums by name, tuples as lists.
  Fields: configs/policies.py L56-81 + policies/smolvla/configuration_smolvla.py L30-110; the world
  plugin adds configuration_smolvla_world.py L26-91 (charbelsan/world-modality-vla@phaseC-flow-head).
- ``train_config.json``: ``TrainPipelineConfig._save_pretrained`` (configs/train.py L159-161), same dump.
- processors: ``DataProcessorPipeline._save_pretrained`` (processor/pipeline.py L340-395), steps from
  ``make_smolvla_pre_post_processors`` (processor_smolvla.py L69-91), the world step inserted after
  ``to_batch_processor`` (processor_smolvla_world.py L109-125).
Checked once, byte for byte, against the files lerobot 0.4.2 and 0.4.4 themselves wrote (config.json,
train_config.json, both processor JSONs and state files, for smolvla and the plugin's smolvla_world with
device="cpu"): lerobot and draccus 0.10.0 installed without dependencies, the heavy imports stubbed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

VLM = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
LIBERO_CAMERAS = ("observation.images.image", "observation.images.image2")
QUANTILES = ("q01", "q10", "q50", "q90", "q99")  # datasets/compute_stats.py DEFAULT_QUANTILES L20


def features(*, cameras: Sequence[str] = LIBERO_CAMERAS, image_shape: Sequence[int] = (3, 256, 256),
             state_dim: int = 8, action_dim: int = 7) -> tuple[dict[str, Any], dict[str, Any]]:
    """(input_features, output_features) as JSON, in HuggingFaceVLA/libero's feature order."""
    inputs = {c: {"type": "VISUAL", "shape": list(image_shape)} for c in cameras}
    inputs["observation.state"] = {"type": "STATE", "shape": [state_dim]}
    return inputs, {"action": {"type": "ACTION", "shape": [action_dim]}}


def smolvla_config(*, input_features: Mapping[str, Any] | None = None,
                   output_features: Mapping[str, Any] | None = None, lerobot_version: str = "0.4.4",
                   overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``config.json`` of ``type: smolvla`` with every field SmolVLAConfig serialises, in its order.

    ``overrides`` must name existing fields (e.g. chunk_size, n_action_steps, num_vlm_layers,
    vlm_model_name); ``lerobot_version`` "0.4.2" drops use_peft, compile_model, compile_mode.
    """
    default_in, default_out = features()
    cfg: dict[str, Any] = {
        "type": "smolvla",
        # PreTrainedConfig (configs/policies.py L56-81)
        "n_obs_steps": 1,
        "input_features": dict(input_features or default_in),
        "output_features": dict(output_features or default_out),
        "device": "cuda",  # __post_init__ resolves None to the auto-selected device type
        "use_amp": False,
        "use_peft": False,
        "push_to_hub": True,
        "repo_id": None,
        "private": None,
        "tags": None,
        "license": None,
        "pretrained_path": None,
        # SmolVLAConfig (configuration_smolvla.py L30-110)
        "chunk_size": 50,
        "n_action_steps": 50,
        "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"},
        "max_state_dim": 32,
        "max_action_dim": 32,
        "resize_imgs_with_padding": [512, 512],
        "empty_cameras": 0,
        "adapt_to_pi_aloha": False,
        "use_delta_joint_actions_aloha": False,
        "tokenizer_max_length": 48,
        "num_steps": 10,
        "use_cache": True,
        "freeze_vision_encoder": True,
        "train_expert_only": True,
        "train_state_proj": True,
        "optimizer_lr": 1e-4,
        "optimizer_betas": [0.9, 0.95],
        "optimizer_eps": 1e-8,
        "optimizer_weight_decay": 1e-10,
        "optimizer_grad_clip_norm": 10,
        "scheduler_warmup_steps": 1000,
        "scheduler_decay_steps": 30000,
        "scheduler_decay_lr": 2.5e-6,
        "vlm_model_name": VLM,
        "load_vlm_weights": False,
        "add_image_special_tokens": False,
        "attention_mode": "cross_attn",
        "prefix_length": -1,
        "pad_language_to": "longest",
        "num_expert_layers": -1,
        "num_vlm_layers": 16,
        "self_attn_every_n_layers": 2,
        "expert_width_multiplier": 0.75,
        "min_period": 4e-3,
        "max_period": 4.0,
        "rtc_config": None,
        "compile_model": False,
        "compile_mode": "max-autotune",
    }
    if lerobot_version == "0.4.2":
        for key in ("use_peft", "compile_model", "compile_mode"):
            del cfg[key]
    elif lerobot_version != "0.4.4":
        raise ValueError(f"lerobot_version must be '0.4.2' or '0.4.4', got {lerobot_version!r}")
    return _override(cfg, overrides)


# SmolVLAWorldConfig (configuration_smolvla_world.py L26-91); push_to_hub is redeclared (False) and so
# stays at its PreTrainedConfig position.
WORLD_FIELDS: dict[str, Any] = {
    "dataset_repo_id": "HuggingFaceVLA/libero",
    "cache_dir": "cache",
    "world_latents_source": "vjepa",
    "latent_suffix": "m4",
    "world_latent_dim": 1408,
    "init_from_policy_path": "",
    "init_from_strict": False,
    "context_frames": 4,
    "future_offset": 8,
    "enable_world_injection": True,
    "world_inject_num_heads": 8,
    "world_gate_init": 0.0,
    "world_memory_mode_train": "pred",
    "log_attn_stats": True,
    "log_grad_stats": True,
    "world_memory_mode_rollout": "pred",
    "world_inject_suffix_in": False,
    "world_prefix_tokens": 0,
    "world_prefix_block": "state",
    "world_prefix_gate_init": 0.0,
    "world_prefix_cross_attn": False,
    "world_prefix_num_heads": 8,
    "enable_world_predictor": True,
    "prophet_layers": 2,
    "prophet_heads": 8,
    "prophet_dropout": 0.0,
    "delta_prediction": True,
    "lambda_world": 0.2,
    "world_vision_model_name": "facebook/vjepa2-vitg-fpc64-256",
    "world_use_first_camera_only": True,
    "world_rollout_temporal_window": 0,
}


def smolvla_world_config(*, input_features: Mapping[str, Any] | None = None,
                         output_features: Mapping[str, Any] | None = None, lerobot_version: str = "0.4.4",
                         overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``config.json`` of the plugin's ``type: smolvla_world``: SmolVLA's fields, then the world ones."""
    cfg = smolvla_config(input_features=input_features, output_features=output_features,
                         lerobot_version=lerobot_version)
    cfg["type"] = "smolvla_world"
    cfg["push_to_hub"] = False
    cfg.update(WORLD_FIELDS)
    return _override(cfg, overrides)


def _override(cfg: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    for key, value in (overrides or {}).items():
        if key not in cfg:
            raise KeyError(f"{key!r} is not a field of this config")
        cfg[key] = value
    return cfg


def train_config(policy: Mapping[str, Any], *, dataset_repo_id: str = "HuggingFaceVLA/libero",
                 steps: int = 20000, batch_size: int = 32) -> dict[str, Any]:
    """A minimal but complete ``train_config.json`` (TrainPipelineConfig, configs/train.py L37-79); for a
    0.4.2 ``policy`` (no ``use_peft``) without the fields 0.4.4 added, and checkpoint_path before rename_map."""
    jitter = {"brightness": (0.8, 1.2), "contrast": (0.8, 1.2), "saturation": (0.5, 1.5), "hue": (-0.05, 0.05)}
    tfs = {k: {"weight": 1.0, "type": "ColorJitter", "kwargs": {k: list(v)}} for k, v in jitter.items()}
    tfs["sharpness"] = {"weight": 1.0, "type": "SharpnessJitter", "kwargs": {"sharpness": [0.5, 1.5]}}
    tfs["affine"] = {"weight": 1.0, "type": "RandomAffine",
                     "kwargs": {"degrees": [-5.0, 5.0], "translate": [0.05, 0.05]}}
    cfg = {
        "dataset": {"repo_id": dataset_repo_id, "root": None, "episodes": None,
                    "image_transforms": {"enable": False, "max_num_transforms": 3, "random_order": False,
                                         "tfs": tfs},
                    "revision": None, "use_imagenet_stats": True, "video_backend": "torchcodec",
                    "streaming": False},
        "env": None,
        "policy": dict(policy),
        "output_dir": "outputs/train/smolvla_libero", "job_name": "smolvla_libero",
        "resume": False, "seed": 1000, "num_workers": 4, "batch_size": batch_size, "steps": steps,
        "eval_freq": 20000, "log_freq": 200, "tolerance_s": 1e-4, "save_checkpoint": True,
        "save_freq": 20000, "use_policy_training_preset": True,
        "optimizer": {"type": "adamw", "lr": policy["optimizer_lr"],
                      "weight_decay": policy["optimizer_weight_decay"],
                      "grad_clip_norm": policy["optimizer_grad_clip_norm"],
                      "betas": list(policy["optimizer_betas"]), "eps": policy["optimizer_eps"]},
        "scheduler": {"type": "cosine_decay_with_warmup", "num_warmup_steps": policy["scheduler_warmup_steps"],
                      "num_decay_steps": policy["scheduler_decay_steps"], "peak_lr": policy["optimizer_lr"],
                      "decay_lr": policy["scheduler_decay_lr"]},
        "eval": {"n_episodes": 50, "batch_size": 50, "use_async_envs": False},
        "wandb": {"enable": False, "disable_artifact": False, "project": "lerobot", "entity": None,
                  "notes": None, "run_id": None, "mode": None},
        "peft": None,
        "use_rabc": False, "rabc_progress_path": None, "rabc_kappa": 0.01, "rabc_epsilon": 1e-6,
        "rabc_head_mode": "sparse",
        "rename_map": {},
        "checkpoint_path": None,
    }
    if "use_peft" not in policy:
        for key in ("tolerance_s", "peft", "use_rabc", "rabc_progress_path", "rabc_kappa", "rabc_epsilon",
                    "rabc_head_mode", "rename_map"):
            del cfg[key]
        cfg["rename_map"] = {}
    return cfg


def dataset_stats(*, cameras: Sequence[str] = LIBERO_CAMERAS, state_dim: int = 8, action_dim: int = 7,
                  seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Dataset-like stats (``dataset.meta.stats``): every feature, not only the policy's, with
    min/max/mean/std/count/quantiles; images per channel as (3,1,1). LeRobot saves all of them."""
    g = torch.Generator().manual_seed(seed)

    def one(shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        lo, hi = -torch.rand(shape, generator=g) - 0.5, torch.rand(shape, generator=g) + 0.5
        qs = {q: lo + (hi - lo) * float(q[1:]) / 100 for q in QUANTILES}
        return {"min": lo, "max": hi, "mean": (lo + hi) / 2 + 0.01, "std": (hi - lo) / 4,
                "count": torch.tensor([1234.0]), **qs}

    stats = {c: one((3, 1, 1)) for c in cameras}
    stats["observation.state"] = one((state_dim,))
    stats["action"] = one((action_dim,))
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        stats[key] = one((1,))
    return stats


def preprocessor_json(config: Mapping[str, Any], *, world: bool = False, with_state: bool = True,
                      rename_map: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``policy_preprocessor.json`` for ``config`` (6 steps; 7 with the world plugin's step)."""
    tokenizer = {"max_length": config["tokenizer_max_length"], "task_key": "task", "padding_side": "right",
                 "padding": config["pad_language_to"], "truncation": True,
                 "tokenizer_name": config["vlm_model_name"]}
    steps: list[dict[str, Any]] = [
        {"registry_name": "rename_observations_processor", "config": {"rename_map": dict(rename_map or {})}},
        {"registry_name": "to_batch_processor", "config": {}},
    ]
    if world:
        steps.append({"registry_name": "world_latents_from_cache", "config": {}})
    steps += [
        {"registry_name": "smolvla_new_line_processor", "config": {}},
        {"registry_name": "tokenizer_processor", "config": tokenizer},
        {"registry_name": "device_processor", "config": {"device": config["device"], "float_dtype": None}},
        {"registry_name": "normalizer_processor",
         "config": _norm_config({**config["input_features"], **config["output_features"]}, config)},
    ]
    if with_state:
        steps[-1]["state_file"] = f"policy_preprocessor_step_{len(steps) - 1}_normalizer_processor.safetensors"
    return {"name": "policy_preprocessor", "steps": steps}


def postprocessor_json(config: Mapping[str, Any], *, with_state: bool = True) -> dict[str, Any]:
    """``policy_postprocessor.json``: unnormalizer (output features only), then device cpu."""
    unnorm: dict[str, Any] = {"registry_name": "unnormalizer_processor",
                              "config": _norm_config(config["output_features"], config)}
    if with_state:
        unnorm["state_file"] = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
    device = {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}}
    return {"name": "policy_postprocessor", "steps": [unnorm, device]}


def _norm_config(feats: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    # _NormalizationMixin.get_config (normalize_processor.py L231-240): eps, features, norm_map.
    return {"eps": 1e-8, "features": {k: {"type": v["type"], "shape": list(v["shape"])} for k, v in feats.items()},
            "norm_map": dict(config["normalization_mapping"])}


def flat_stats(stats: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``_NormalizationMixin.state_dict``: ``<feature>.<stat>`` float32 on the CPU."""
    return {f"{k}.{s}": torch.as_tensor(v, dtype=torch.float32) for k, sub in stats.items() for s, v in sub.items()}


def write_json(path: Path, doc: Mapping[str, Any], *, indent: int) -> None:
    with open(path, "w") as f:
        json.dump(doc, f, indent=indent)  # no trailing newline, ensure_ascii, as LeRobot/draccus


def write_checkpoint(ckpt_dir: str | Path, *, world: bool = False, config: Mapping[str, Any] | None = None,
                     stats: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
                     rename_map: Mapping[str, str] | None = None) -> Path:
    """Write config.json, train_config.json and both processors (stats=None: no state files) to ckpt_dir."""
    out = Path(ckpt_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = dict(config or (smolvla_world_config() if world else smolvla_config()))
    write_json(out / "config.json", cfg, indent=4)
    write_json(out / "train_config.json", train_config(cfg), indent=4)
    pre = preprocessor_json(cfg, world=world, with_state=stats is not None, rename_map=rename_map)
    post = postprocessor_json(cfg, with_state=stats is not None)
    for doc in (pre, post):
        write_json(out / f"{doc['name']}.json", doc, indent=2)
        for step in doc["steps"]:
            if "state_file" in step:
                save_file(flat_stats(stats or {}), out / step["state_file"])
    return out
