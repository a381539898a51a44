"""``vlaworld.load_policy``: checkpoint directory -> ready-to-run ``Policy``."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from vlaworld.checkpoint import normalization as norm
from vlaworld.checkpoint import processors as lp
from vlaworld.checkpoint.architecture import architecture
from vlaworld.checkpoint.files import fingerprint
from vlaworld.checkpoint.lerobot import find_vlm_dir, input_files, read_checkpoint, read_vlm_config, resolve_stats
from vlaworld.checkpoint.strict import load_strict
from vlaworld.checkpoint.vjepa2 import encoder_files, load_vjepa2
from vlaworld.config import DEFAULT_PROFILE, MEMORY_MODES, ConfigError, NumericsProfile, RuntimeDtypes, profile
from vlaworld.config.numerics import PROFILE_TABLE
from vlaworld.errors import UsageError
from vlaworld.models.siglip import transformers_457_position_ids
from vlaworld.models.smolvla import SmolVLAModel
from vlaworld.policy import Policy, ResolvedConfig
from vlaworld.processing import InputProcessor, task_tokenizer
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
    on transformers 4.57; ``lerobot-0.6``: LeRobot >= 0.5 on transformers 5; see ``vlaworld.config.numerics``).
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
    tokenizer = task_tokenizer(processors, cfg, vlm_dir, explicit_vlm=vlm is not None, ckpt_dir=ckpt.path)
    inputs = InputProcessor(cfg, _stats_to(processors, device), tokenizer, device)
    special = None
    if cfg.add_image_special_tokens:
        ids = tuple(tokenizer.token_id(t) for t in IMAGE_SPECIAL_TOKENS)
        if None in ids:
            raise ConfigError(f"add_image_special_tokens=true but the tokenizer lacks {IMAGE_SPECIAL_TOKENS}")
        special = ids

    arch = architecture(cfg, vlm_cfg, special, source=ckpt.path / "config.json")
    with torch.device("meta"):
        model = arch.build()
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
            delta=cfg.world.delta_prediction, camera=cfg.image_features[0], preprocess=world_preprocess,
            smolvla_size=cfg.resize_imgs_with_padding,
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
    files = input_files(ckpt.path, processors, tokenizer.directory, vlm_dir, stats)
    if world is not None and world.encoder is not None:
        files |= encoder_files(world_encoder, cfg.world.world_vision_model_name)
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
    return Policy(resolved, model, inputs, ckpt.source, world)


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
    def move(stats: norm.Stats | None) -> norm.Stats | None:
        return None if stats is None else {k: {s: t.to(device) for s, t in v.items()} for k, v in stats.items()}

    pre = spec.normalizer.stats if spec.normalizer else None
    post = spec.unnormalizer.stats if spec.unnormalizer else None
    return spec.with_stats(pre=move(pre), post=move(post))
