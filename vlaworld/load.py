"""``vlaworld.load_policy``: checkpoint directory -> ready-to-run ``Policy``."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from vlaworld import lerobot_processors as lp
from vlaworld.checkpoint import find_vlm_dir, read_checkpoint, read_vlm_config, resolve_stats
from vlaworld.config import ConfigError
from vlaworld.errors import UsageError
from vlaworld.files import fingerprint, inside
from vlaworld.hub import find_model_dir
from vlaworld.models.prophet import Prophet, ProphetConfig
from vlaworld.models.siglip import transformers_457_position_ids
from vlaworld.models.smolvla import ModelSpec, SmolVLAModel
from vlaworld.models.vjepa2 import load_vjepa2, weight_files
from vlaworld.models.world_config import MEMORY_MODES
from vlaworld.models.world_inject import GatedCrossAttention, WorldInjectConfig
from vlaworld.numerics import DEFAULT_PROFILE, PROFILE_TABLE, NumericsProfile, RuntimeDtypes, profile
from vlaworld.policy import Policy, ResolvedConfig
from vlaworld.statedict import load_strict
from vlaworld.tokenizer import TOKENIZER_FILES, TaskTokenizer, TokenizerSettings
from vlaworld.world import LATENT_MODES, WorldMemory, WorldRollout, resolve_window

log = logging.getLogger(__name__)

IMAGE_SPECIAL_TOKENS = ("<fake_token_around_image>", "<global-img>")  # SmolVLM tokenizer names
WORLD_ENCODER_PREFIX = "world_encoder."  # a plugin policy saved after rollouts also holds its V-JEPA copy


def load_policy(
    path: str | Path,
    device: str = "cpu",
    dtype: torch.dtype | str | None = None,
    memory: str | None = None,
    numerics: str = DEFAULT_PROFILE,
    n_action_steps: int | None = None,
    compile: bool = False,
    vlm: str | Path | None = None,
    world_encoder: str | Path | None = None,
    stats: str | Path | None = None,
    world_window: int | None = None,
    allow_window_mismatch: bool = False,
    world_preprocess: str = "default",
    cuda_graphs: bool = False,
) -> Policy:
    """Load a LeRobot ``pretrained_model/`` directory (``smolvla`` or ``smolvla_world``).

    ``numerics`` names the LeRobot generation whose actions to reproduce (``lerobot-0.4``: LeRobot 0.4.x
    on transformers 4.57; ``lerobot-0.6``: LeRobot >= 0.5 on transformers 5; see ``vlaworld.numerics``).
    ``dtype=None`` runs every part in the dtype that LeRobot runs it in (its module construction decides,
    not the dtypes stored in the file); a dtype casts the whole model instead. ``vlm`` / ``world_encoder``
    point at local Hugging Face-layout directories (else the offline HF cache); ``stats`` replaces the
    checkpoint's normalisation stats (a safetensors or dataset ``meta/stats.json`` file).
    World policies: ``memory`` is the rollout mode (None: the checkpoint's ``world_memory_mode_rollout``),
    ``world_window`` forces the V-JEPA clip length m (refused when it contradicts the checkpoint unless
    ``allow_window_mismatch``), ``world_preprocess`` is ``default`` (as the training latents were made)
    or ``legacy`` (the plugin's rollout: frames through the checkpoint's SmolVLA resize, V-JEPA in float16).
    ``compile`` torch.compiles the hot stages; ``cuda_graphs`` (CUDA only) replays the whole denoising
    loop from one CUDA graph. Graphs are opt-in until tests/test_cuda.py has passed on a GPU since
    their last fix (the capture kept its time embeddings in freed memory; see README, Speed).
    """
    prof = profile(numerics)
    ckpt = read_checkpoint(path)
    cfg = ckpt.config
    memory = _memory_mode(cfg, memory, ckpt.path)
    steps = cfg.n_action_steps if n_action_steps is None else int(n_action_steps)
    if not 1 <= steps <= cfg.chunk_size:
        raise ConfigError(f"n_action_steps={steps} must be in [1, chunk_size={cfg.chunk_size}]")

    vlm_dir = find_vlm_dir(cfg.vlm_model_name, vlm)
    vlm_cfg, vlm_json = read_vlm_config(vlm_dir)
    processors = resolve_stats(ckpt, stats)
    tokenizer = _tokenizer(processors, cfg, vlm_dir, explicit=vlm is not None, ckpt_dir=ckpt.path)
    special = None
    if cfg.add_image_special_tokens:
        ids = tuple(tokenizer.token_id(t) for t in IMAGE_SPECIAL_TOKENS)
        if None in ids:
            raise ConfigError(f"add_image_special_tokens=true but the tokenizer lacks {IMAGE_SPECIAL_TOKENS}")
        special = ids

    spec = ModelSpec(policy=cfg, vlm=vlm_cfg, image_special_token_ids=special)
    with torch.device("meta"):
        inject, prophet = world_modules(ckpt.raw_config, spec)
        model = SmolVLAModel(spec, inject, prophet)
    tensors = ckpt.tensors
    stale = [k for k in tensors if k.startswith(WORLD_ENCODER_PREFIX)]
    if stale:
        log.warning("%s carries %d V-JEPA tensors (%s*) saved after a rollout; they are ignored and the "
                    "encoder is read from world_vision_model_name", ckpt.path, len(stale), WORLD_ENCODER_PREFIX)
        tensors = {k: v for k, v in tensors.items() if not k.startswith(WORLD_ENCODER_PREFIX)}
    load_strict(model, tensors, source=f"{ckpt.path}/model.safetensors")
    target = _dtype(dtype)
    runtime = (prof.runtime_dtypes(cfg.load_vlm_weights, vlm_json) if target is None
               else RuntimeDtypes.uniform(_dtype_name(target)))
    model.cast_parts(**{part: _dtype(name) for part, name in runtime.as_dict().items()})
    _set_position_ids(model, prof, ckpt.path)
    model.to(device)
    world = None
    if cfg.world is not None:
        rollout = WorldRollout(
            mode=memory, window=resolve_window(cfg.world, world_window, allow_window_mismatch),
            context=cfg.world.context_frames, horizon=cfg.world.future_offset, latent_dim=cfg.world.world_latent_dim,
            delta=cfg.world.delta_prediction, preprocess=world_preprocess, smolvla_size=cfg.resize_imgs_with_padding,
        )
        encoder = None
        if rollout.mode in LATENT_MODES and model.model.world_inject.is_open():
            # The plugin's rollout runs V-JEPA 2 in float16 on every device (VisionEncoder(dtype="float16")).
            encoder_dtype = torch.float16 if world_preprocess == "legacy" else target
            encoder = load_vjepa2(world_encoder, cfg.world.world_vision_model_name, device=device, dtype=encoder_dtype)
        world = WorldMemory(rollout, model.model.world_inject, getattr(model, "prophet", None), encoder)
    if compile:
        model.model.compile_stages()
        if world is not None and world.encoder is not None:
            world.encoder.compile_blocks()
    processors = _stats_to(processors, device)
    files = _input_files(ckpt.path, processors, tokenizer, vlm_dir, stats)
    if world is not None and world.encoder is not None:
        files |= _world_encoder_files(world_encoder, cfg.world.world_vision_model_name)
    resolved = ResolvedConfig(
        **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "n_action_steps"},
        n_action_steps=steps,
        checkpoint=str(ckpt.path),
        vlm_dir=str(vlm_dir),
        memory=memory,
        device=str(device),
        dtype="lerobot" if target is None else _dtype_name(target),
        numerics=prof.name,
        runtime_dtypes=runtime.as_dict() | (
            {} if world is None or world.encoder is None
            else {"world_encoder": _dtype_name(next(world.encoder.parameters()).dtype)}
        ),
        compile=compile,
        cuda_graphs=cuda_graphs,
        fingerprint=fingerprint(files),
        stats_file=None if stats is None else str(stats),
        world_window=None if world is None else world.rollout.window,
        world_preprocess=None if world is None else world_preprocess,
        world_encoder=None if world is None or world.encoder is None else str(world_encoder or cfg.world.world_vision_model_name),
    )
    return Policy(resolved, model, spec, tokenizer, processors, ckpt, world)


def _memory_mode(cfg, memory: str | None, where: Path) -> str:
    """Resolve the rollout memory mode; a plain smolvla checkpoint only runs 'none'."""
    if cfg.world is None:
        if memory not in (None, "none"):
            raise ConfigError(
                f"memory={memory!r} needs a smolvla_world checkpoint; {where} is a plain smolvla policy "
                "(no world modality), which only runs with memory 'none'."
            )
        return "none"
    mode = cfg.world.world_memory_mode_rollout if memory is None else memory
    if mode not in MEMORY_MODES:
        raise ConfigError(f"memory={mode!r}: choose one of {MEMORY_MODES}")
    if not cfg.world.enable_world_injection and mode != "none":
        log.warning("%s has enable_world_injection=false: memory %r runs as 'none' (plain SmolVLA), as in the plugin",
                    where, mode)
        return "none"
    if not cfg.world.enable_world_predictor and mode != "none":
        raise ConfigError(
            f"{where} has enable_world_predictor=false: the plugin then never built a memory (every mode ran as "
            "plain SmolVLA); use memory='none'"
        )
    return mode


def world_modules(raw_config: dict, spec: ModelSpec) -> tuple[GatedCrossAttention | None, Prophet | None]:
    """The injection block and the Prophet a smolvla_world checkpoint holds (None for smolvla)."""
    world = spec.policy.world
    if world is None:
        return None, None
    inject = GatedCrossAttention(WorldInjectConfig.from_lerobot(raw_config, width=spec.layout.width))
    prophet = Prophet(ProphetConfig.from_lerobot(raw_config)) if world.enable_world_predictor else None
    return inject, prophet


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
    if spec.local_dir is not None:
        local = inside(ckpt_dir, str(spec.local_dir), f"{ckpt_dir}/policy_preprocessor.json tokenizer artifacts")
        if (local / "tokenizer.json").is_file():
            return TaskTokenizer(local, settings)
    directory = vlm_dir
    if spec.tokenizer_name and spec.tokenizer_name != cfg.vlm_model_name and not explicit:
        directory = find_model_dir(spec.tokenizer_name, None, ("tokenizer.json",), "--vlm", "tokenizer")
    return TaskTokenizer(directory, settings)


def _input_files(
    ckpt_dir: Path,
    processors: lp.ProcessorSpec,
    tokenizer: TaskTokenizer,
    vlm_dir: Path,
    stats: str | Path | None,
) -> dict[str, Path]:
    """Every file whose content changes what the policy computes, by role (run.json fingerprints them)."""
    files = {f"checkpoint/{name}": ckpt_dir / name
             for name in ("config.json", "model.safetensors", f"{lp.PREPROCESSOR}.json", f"{lp.POSTPROCESSOR}.json")}
    for pipe in (processors.preprocessor, processors.postprocessor):
        for step in pipe.steps:
            if "state_file" in step.entry:
                files[f"checkpoint/{step.entry['state_file']}"] = ckpt_dir / step.entry["state_file"]
    files["vlm/config.json"] = vlm_dir / "config.json"
    files |= {f"tokenizer/{name}": tokenizer.directory / name for name in TOKENIZER_FILES}
    if stats is not None:
        files[f"stats/{Path(stats).name}"] = Path(stats)
    return files


def _world_encoder_files(explicit: str | Path | None, repo_id: str) -> dict[str, Path]:
    """The V-JEPA 2 files ``load_vjepa2`` read (config and safetensors, sharded or not)."""
    model_dir = find_model_dir(repo_id, explicit, ("config.json",), "--world-encoder", "world encoder")
    files = {"world_encoder/config.json": model_dir / "config.json"}
    files |= {f"world_encoder/{f.name}": f for f in weight_files(model_dir, repo_id)}
    return files


def _set_position_ids(model: SmolVLAModel, prof: NumericsProfile, where: Path) -> None:
    """Install the profile's vision position ids, and say once when the other profile computes others."""
    embeddings = model.model.vlm_with_expert.vlm.model.vision_model.embeddings
    side, dtype = embeddings.config.patches_per_side, embeddings.patch_embedding.weight.dtype
    ids = {name: _position_ids(p, side, dtype) for name, p in PROFILE_TABLE.items()}
    embeddings.set_position_ids(ids[prof.name])
    if any(v is not None for v in ids.values()):  # some profile's ids are not arange: they differ here
        if (str(where), prof.name) not in _WARNED:
            _WARNED.add((str(where), prof.name))
            other = next(n for n in PROFILE_TABLE if n != prof.name)
            log.warning(
                "%s: its vision tower runs in %s, where LeRobot 0.4.x (transformers 4.55-4.57) and LeRobot >= 0.5 "
                "(transformers 5) use different patch position ids, so the two give different actions. Running "
                "numerics=%r (LeRobot %s); if this checkpoint is evaluated with LeRobot %s, pass numerics=%r "
                "(--numerics %s).", where, str(dtype).removeprefix("torch."), prof.name, prof.lerobot,
                PROFILE_TABLE[other].lerobot, other, other,
            )


def _position_ids(prof: NumericsProfile, side: int, dtype: torch.dtype) -> torch.Tensor | None:
    """The profile's vision position ids for a tower running in ``dtype``; None when they are arange."""
    if not prof.shifted_fp32_position_ids:
        return None
    ids = transformers_457_position_ids(side, dtype)
    return None if torch.equal(ids, torch.arange(side * side)) else ids


_WARNED: set[tuple[str, str]] = set()  # (checkpoint, profile) pairs already warned about


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise UsageError(f"dtype={dtype!r}: use one of {sorted(names)} or None (each part as LeRobot runs it)")
    return names[dtype]


def _stats_to(spec: lp.ProcessorSpec, device: str) -> lp.ProcessorSpec:
    def move(stats: lp.Stats | None) -> lp.Stats | None:
        return None if stats is None else {k: {s: t.to(device) for s, t in v.items()} for k, v in stats.items()}

    pre = spec.normalizer.stats if spec.normalizer else None
    post = spec.unnormalizer.stats if spec.unnormalizer else None
    return spec.with_stats(pre=move(pre), post=move(post))
