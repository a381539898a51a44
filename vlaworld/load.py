"""``vlaworld.load_policy``: checkpoint directory -> ready-to-run ``Policy``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from vlaworld import lerobot_processors as lp
from vlaworld.checkpoint import find_vlm_dir, read_checkpoint, read_vlm_config, resolve_stats
from vlaworld.config import ConfigError
from vlaworld.hub import find_model_dir
from vlaworld.models.smolvla import ModelSpec, SmolVLAModel
from vlaworld.policy import Policy, ResolvedConfig
from vlaworld.statedict import load_strict
from vlaworld.tokenizer import TaskTokenizer, TokenizerSettings

IMAGE_SPECIAL_TOKENS = ("<fake_token_around_image>", "<global-img>")  # SmolVLM tokenizer names


def load_policy(
    path: str | Path,
    device: str = "cpu",
    dtype: torch.dtype | str | None = None,
    memory: str | None = None,
    n_action_steps: int | None = None,
    compile: bool = False,
    vlm: str | Path | None = None,
    world_encoder: str | Path | None = None,
    stats: str | Path | None = None,
) -> Policy:
    """Load a LeRobot ``pretrained_model/`` directory (``smolvla`` or ``smolvla_world``).

    ``dtype=None`` keeps the stored dtypes (LeRobot's bf16/fp32 mix); ``vlm`` / ``world_encoder`` point
    at local Hugging Face-layout directories (else the offline HF cache); ``stats`` replaces the
    checkpoint's normalisation stats (a safetensors or dataset ``meta/stats.json`` file).
    """
    ckpt = read_checkpoint(path)
    cfg = ckpt.config
    if cfg.type == "smolvla":
        if memory not in (None, "none"):
            raise ConfigError(
                f"memory={memory!r} needs a smolvla_world checkpoint; {ckpt.path} is a plain smolvla policy "
                "(no world modality), which only runs with memory 'none'."
            )
        memory = "none"
    else:
        raise ConfigError(
            "smolvla_world checkpoints are not supported by this version yet (world modality: issue 3)"
        )
    steps = cfg.n_action_steps if n_action_steps is None else int(n_action_steps)
    if not 1 <= steps <= cfg.chunk_size:
        raise ConfigError(f"n_action_steps={steps} must be in [1, chunk_size={cfg.chunk_size}]")

    vlm_dir = find_vlm_dir(cfg.vlm_model_name, vlm)
    vlm_cfg = read_vlm_config(vlm_dir)
    _pre, _post, processors = resolve_stats(ckpt, stats)
    tokenizer = _tokenizer(processors, cfg, vlm_dir, explicit=vlm is not None, ckpt_dir=ckpt.path)
    special = None
    if cfg.add_image_special_tokens:
        ids = tuple(tokenizer.token_id(t) for t in IMAGE_SPECIAL_TOKENS)
        if None in ids:
            raise ConfigError(f"add_image_special_tokens=true but the tokenizer lacks {IMAGE_SPECIAL_TOKENS}")
        special = ids

    spec = ModelSpec(policy=cfg, vlm=vlm_cfg, image_special_token_ids=special)
    with torch.device("meta"):
        model = SmolVLAModel(spec)
    load_strict(model, ckpt.tensors, source=f"{ckpt.path}/model.safetensors")
    target = _dtype(dtype)
    if target is not None:
        model.to(target)
    model.to(device)
    processors = _stats_to(processors, device)
    resolved = ResolvedConfig(
        **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "n_action_steps"},
        n_action_steps=steps,
        checkpoint=str(ckpt.path),
        vlm_dir=str(vlm_dir),
        memory=memory,
        device=str(device),
        dtype="stored" if target is None else str(target).removeprefix("torch."),
        compile=compile,
        stats_file=None if stats is None else str(stats),
    )
    return Policy(resolved, model, spec, tokenizer, processors, ckpt)


def _tokenizer(processors: lp.ProcessorSpec, cfg, vlm_dir: Path, explicit: bool, ckpt_dir: Path) -> TaskTokenizer:
    """Tokenizer settings from the saved tokenizer step (lerobot >= 0.4) or the config (older)."""
    spec = processors.tokenizer
    if spec is None:
        settings = TokenizerSettings(max_length=cfg.tokenizer_max_length, padding=cfg.pad_language_to)
        return TaskTokenizer(vlm_dir, settings)
    settings = TokenizerSettings(
        max_length=spec.max_length, padding=spec.padding, padding_side=spec.padding_side,
        truncation=spec.truncation, append_newline=processors.appends_newline,
    )
    if spec.local_dir is not None and (ckpt_dir / spec.local_dir / "tokenizer.json").is_file():
        return TaskTokenizer(ckpt_dir / spec.local_dir, settings)
    directory = vlm_dir
    if spec.tokenizer_name and spec.tokenizer_name != cfg.vlm_model_name and not explicit:
        directory = find_model_dir(spec.tokenizer_name, None, ("tokenizer.json",), "--vlm", "tokenizer")
    return TaskTokenizer(directory, settings)


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"dtype={dtype!r}: use one of {sorted(names)} or None (as stored)")
    return names[dtype]


def _stats_to(spec: lp.ProcessorSpec, device: str) -> lp.ProcessorSpec:
    def move(stats: lp.Stats | None) -> lp.Stats | None:
        return None if stats is None else {k: {s: t.to(device) for s, t in v.items()} for k, v in stats.items()}

    pre = spec.normalizer.stats if spec.normalizer else None
    post = spec.unnormalizer.stats if spec.unnormalizer else None
    return spec.with_stats(pre=move(pre), post=move(post))
