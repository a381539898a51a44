"""Read and write LeRobot ``pretrained_model/`` directories unchanged.

A checkpoint is ``config.json`` + ``model.safetensors`` + the processor files (stats, tokenizer
settings). The VLM's architecture and tokenizer are *not* inside: like LeRobot we read them from
``vlm_model_name``, but only locally (``--vlm DIR`` or the offline Hugging Face cache).
Legacy variants accepted: a ``model._orig_mod.`` prefix (a compiled model's save) and lerobot < 0.4
normalisation buffers inside ``model.safetensors``. Weights are never unpickled.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from vlaworld.checkpoint import normalization as norm
from vlaworld.checkpoint import processors as lp
from vlaworld.checkpoint.files import CheckpointError, read_json, read_safetensors
from vlaworld.checkpoint.hub import find_model_dir
from vlaworld.config import ConfigError, PolicyConfig
from vlaworld.models.smolvla import VLMConfig

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
COMPILED_PREFIX = "model._orig_mod."  # torch.compile'd saves (smolvla_base@3326b100 era)
VLM_FILES = ("config.json", "tokenizer.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")  # what the tokenizer reads


@dataclass(frozen=True, kw_only=True)
class CheckpointSource:
    """What writing a checkpoint back needs from the one it was read from: never its weights, so a loaded
    policy holds one copy of them (its modules'), whatever device or dtype they were moved to."""

    path: Path
    stored_dtypes: dict[str, torch.dtype]  # tensor name -> the dtype the file stored it in
    compiled_prefix: bool = False
    legacy_tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # lerobot < 0.4 stats buffers
    has_processors: bool = True


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """Everything read from disk; ``tensors`` keys are already in the model's naming."""

    path: Path
    config: PolicyConfig
    tensors: dict[str, torch.Tensor]
    processors: lp.ProcessorSpec | None  # None: a lerobot < 0.4 checkpoint
    legacy_stats: norm.LegacyStats | None
    legacy_tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # written back on save
    compiled_prefix: bool = False

    @property
    def source(self) -> CheckpointSource:
        return CheckpointSource(
            path=self.path, stored_dtypes={k: v.dtype for k, v in self.tensors.items()},
            compiled_prefix=self.compiled_prefix, legacy_tensors=self.legacy_tensors,
            has_processors=self.processors is not None,
        )


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """Accept ``pretrained_model/`` itself or a training checkpoint directory that contains it."""
    p = Path(path).expanduser()
    if (p / CONFIG).is_file():
        return p
    if (p / "pretrained_model" / CONFIG).is_file():
        return p / "pretrained_model"
    if not p.exists():
        raise CheckpointError(f"Checkpoint directory {p} does not exist.")
    raise CheckpointError(
        f"{p} has no {CONFIG}. Pass a LeRobot 'pretrained_model/' directory (it holds config.json, "
        f"{WEIGHTS} and the policy_*processor files), e.g. outputs/train/RUN/checkpoints/last/pretrained_model."
    )


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Parse config, weights and processors of a LeRobot checkpoint (no model is built here)."""
    ckpt = resolve_checkpoint_dir(path)
    raw = read_json(ckpt / CONFIG)
    config = PolicyConfig.from_lerobot(raw, source=ckpt / CONFIG)
    weights = ckpt / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{ckpt} has no {WEIGHTS}. vlaworld reads safetensors only (never pickles).")
    tensors = read_safetensors(weights)
    compiled = any(k.startswith(COMPILED_PREFIX) for k in tensors)
    if compiled:
        tensors = {("model." + k[len(COMPILED_PREFIX):] if k.startswith(COMPILED_PREFIX) else k): v
                   for k, v in tensors.items()}
    legacy = norm.extract_legacy_stats(tensors, {**config.input_features, **config.output_features})
    legacy_tensors = {k: tensors.pop(k) for k in legacy.consumed}
    processors = lp.read_processors(ckpt) if lp.has_processors(ckpt) else None
    return Checkpoint(
        path=ckpt, config=config, tensors=tensors, processors=processors,
        legacy_stats=legacy if legacy.consumed else None, legacy_tensors=legacy_tensors,
        compiled_prefix=compiled,
    )


def checkpoint_hash(path: str | Path) -> str:
    """sha256 of config.json and model.safetensors: identifies the weights a result came from."""
    ckpt = resolve_checkpoint_dir(path)
    h = hashlib.sha256()
    for name in (CONFIG, WEIGHTS):
        with open(ckpt / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def find_vlm_dir(repo_id: str, explicit: str | Path | None) -> Path:
    return find_model_dir(repo_id, explicit, VLM_FILES, "--vlm", "VLM config and tokenizer (vlm_model_name)")


def read_vlm_config(vlm_dir: Path) -> tuple[VLMConfig, dict]:
    """The VLM's parsed config and its raw JSON (the sub-configs' dtypes decide LeRobot's runtime dtypes)."""
    raw = read_json(vlm_dir / "config.json")
    if "vision_config" not in raw or "text_config" not in raw:
        raise ConfigError(f"{vlm_dir / 'config.json'} lacks vision_config/text_config: is this a SmolVLM checkpoint?")
    return VLMConfig.from_hf(raw), raw


def resolve_stats(ckpt: Checkpoint, stats_file: str | Path | None) -> lp.ProcessorSpec:
    """The processor spec to run and save with, refusing unusable normalisation stats (SPEC §8).

    The preprocessor's and the postprocessor's stats are checked apart: the first must normalise every
    input the policy normalises (the state), the second unnormalise its outputs (the action). A gap in
    one is never hidden by the other (the preprocessor also holds ``action`` stats, for training).
    """
    cfg = ckpt.config
    spec = ckpt.processors
    if spec is None:  # lerobot < 0.4: build the pipelines LeRobot would have, from the legacy buffers
        legacy = ckpt.legacy_stats
        spec = lp.smolvla_spec(
            input_features=cfg.input_features, output_features=cfg.output_features,
            norm_map=cfg.normalization_mapping, tokenizer_name=cfg.vlm_model_name,
            max_length=cfg.tokenizer_max_length, padding=cfg.pad_language_to,
            stats=legacy.pre if legacy else None, post_stats=legacy.post if legacy else None,
            world=cfg.type == "smolvla_world",
        )
        where_pre = where_post = f"{ckpt.path / WEIGHTS} (lerobot < 0.4: normalisation buffers in the weights)"
    else:
        where_pre = _state_file(ckpt.path, lp.PREPROCESSOR, spec.preprocessor.find("normalizer_processor"))
        where_post = _state_file(ckpt.path, lp.POSTPROCESSOR, spec.postprocessor.find("unnormalizer_processor"))
    if stats_file is not None:
        override = norm.load_stats_file(stats_file)
        spec = spec.with_stats(pre=override, post=override)
        where_pre = where_post = f"--stats {stats_file}"
    norm_map = spec.normalizer.norm_map if spec.normalizer else cfg.normalization_mapping
    norm.require_stats(spec.normalizer, cfg.input_features, norm_map, where=where_pre,
                     purpose="normalise the policy's inputs")
    norm_map = spec.unnormalizer.norm_map if spec.unnormalizer else cfg.normalization_mapping
    norm.require_stats(spec.unnormalizer, cfg.output_features, norm_map, where=where_post,
                     purpose="unnormalise the policy's actions")
    return spec


def input_files(
    ckpt_dir: Path, processors: lp.ProcessorSpec, tokenizer_dir: Path, vlm_dir: Path, stats: str | Path | None
) -> dict[str, Path]:
    """Every file whose content changes what the policy computes, by role (run.json fingerprints them)."""
    files = {f"checkpoint/{name}": ckpt_dir / name
             for name in (CONFIG, WEIGHTS, f"{lp.PREPROCESSOR}.json", f"{lp.POSTPROCESSOR}.json")}
    for pipe in (processors.preprocessor, processors.postprocessor):
        for step in pipe.steps:
            if "state_file" in step.entry:
                files[f"checkpoint/{step.entry['state_file']}"] = ckpt_dir / step.entry["state_file"]
    files["vlm/config.json"] = vlm_dir / "config.json"
    files |= {f"tokenizer/{name}": tokenizer_dir / name for name in TOKENIZER_FILES}
    if stats is not None:
        files[f"stats/{Path(stats).name}"] = Path(stats)
    return files


def _state_file(ckpt_dir: Path, pipeline: str, step: lp.Step | None) -> str:
    """Where a (un)normaliser step's stats live, for error messages."""
    if step is None:
        return f"{ckpt_dir / pipeline}.json"
    name = step.entry.get("state_file")
    if name is None:
        return f"{ckpt_dir / pipeline}.json (its {step.registry_name} step has no state_file)"
    return str(ckpt_dir / name)


def save_checkpoint(
    out_dir: str | Path,
    source: CheckpointSource,
    state_dict: dict[str, torch.Tensor],
    processors: lp.ProcessorSpec | None,
) -> None:
    """Write the LeRobot layout back: config.json, model.safetensors, processor files (+ train_config)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (source.path / CONFIG).resolve() != (out / CONFIG).resolve():
        shutil.copyfile(source.path / CONFIG, out / CONFIG)  # byte-identical: the config is never changed
    # Each tensor in the dtype the file stored it in (runtime dtypes follow the numerics profile).
    stored = source.stored_dtypes
    tensors = {k: v.detach().to("cpu", stored.get(k, v.dtype)).contiguous() for k, v in state_dict.items()}
    if source.compiled_prefix:
        tensors = {(COMPILED_PREFIX + k[len("model."):] if k.startswith("model.") else k): v for k, v in tensors.items()}
    tensors |= {k: v.contiguous() for k, v in source.legacy_tensors.items()}
    save_file(tensors, out / WEIGHTS, metadata={"format": "pt"})
    if source.has_processors and processors is not None:
        lp.write_processors(out, processors)
    train_cfg = source.path / "train_config.json"
    if train_cfg.is_file() and train_cfg.resolve() != (out / "train_config.json").resolve():
        shutil.copyfile(train_cfg, out / "train_config.json")
