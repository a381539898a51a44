"""The public policy object: load a LeRobot checkpoint, then ``reset`` / ``act`` / ``predict_chunk``.

``predict_chunk`` is LeRobot's ``predict_action_chunk`` with its processors folded in: rename, images
to [0,1] CHW, resize-with-pad, ×2−1, task + "\\n" tokenised, state normalised and zero-padded, Euler
sampling, action slice, unnormalise. ``act`` hands out the first ``n_action_steps`` actions of each chunk,
one per call, as LeRobot's ``select_action`` queue does.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vlaworld import lerobot_processors as lp
from vlaworld.checkpoint import Checkpoint, save_checkpoint
from vlaworld.config import PolicyConfig
from vlaworld.models.cuda_graph import CudaGraphSampler
from vlaworld.models.smolvla import ModelSpec, SmolVLAModel
from vlaworld.processing import pad_vector, resize_with_pad, to_float_chw
from vlaworld.tokenizer import TaskTokenizer
from vlaworld.world import FrameHistory, WorldMemory
from vlaworld.world_diagnostics import HorizonCosine

STATE_KEY = "observation.state"
ACTION_KEY = "action"
WORLD_FRAMES_KEY = "observation.world_frames"  # [B, m+T-1, H, W, 3]: the world camera's recent frames


@dataclass(frozen=True, kw_only=True)
class ResolvedConfig(PolicyConfig):
    """The checkpoint's config with every runtime choice resolved (what a result file records)."""

    checkpoint: str
    vlm_dir: str
    memory: str
    device: str
    dtype: str  # "lerobot" (each part as the profile's LeRobot runs it) or a torch dtype name (forced)
    numerics: str = "lerobot-0.4"  # the LeRobot generation reproduced (vlaworld.numerics)
    runtime_dtypes: dict[str, str] | None = None  # part -> dtype it runs in
    compile: bool = False
    cuda_graphs: bool = False
    # sha256 of every input file (checkpoint, processor stats, VLM config, tokenizer, --stats, world encoder),
    # hashed once at load; run.json keeps them, so a resume with any file changed is refused naming it.
    fingerprint: dict[str, str] | None = None
    stats_file: str | None = None
    world_window: int | None = None  # m used at rollout (world policies)
    world_preprocess: str | None = None
    world_encoder: str | None = None  # the --world-encoder path given, else the repo id read from the HF cache


class Policy:
    """A loaded SmolVLA(-world) policy. Build it with ``vlaworld.load_policy``."""

    def __init__(
        self,
        config: ResolvedConfig,
        model: SmolVLAModel,
        spec: ModelSpec,
        tokenizer: TaskTokenizer,
        processors: lp.ProcessorSpec,
        checkpoint: Checkpoint,
        world: WorldMemory | None = None,
    ) -> None:
        self.config = config
        self.model = model.eval()
        self.spec = spec
        self.tokenizer = tokenizer
        self.processors = processors
        self._checkpoint = checkpoint
        self._normalizer = processors.normalizer
        self._unnormalizer = processors.unnormalizer
        self._rename = processors.rename_map
        self.device = torch.device(config.device)
        self._queue: deque[torch.Tensor] = deque()
        self._queue_batch: int | None = None
        self.world = world
        self._history = FrameHistory(world.rollout.frames_needed) if world is not None else None
        self._history_has_current = False
        self._step = 0  # env steps since reset(), as seen by act()
        self._horizon_cos = HorizonCosine(world.rollout.horizon) if world is not None else None
        self.last_chunk_stats: list[dict] = []
        if config.cuda_graphs:
            if self.device.type != "cuda":
                raise ValueError("cuda_graphs=True needs device='cuda'")
            self._sample = CudaGraphSampler(model.model)
        else:
            self._sample = model.model.sample_actions

    # --------------------------------------------------------------------------- episode API
    def reset(self) -> None:
        """Start new episodes: forget queued actions (and, for world policies, the frame history)."""
        self._queue.clear()
        self._queue_batch = None
        if self._history is not None:
            self._history.clear()
            self._horizon_cos.reset()
        self._step = 0

    # --------------------------------------------------------------------------- world modality
    @property
    def gate(self) -> float:
        """tanh(gate) of the world injection (0.0 for plain smolvla policies)."""
        return 0.0 if self.world is None else self.world.inject.gate_value()

    @property
    def world_frames_needed(self) -> int:
        """How many recent first-camera frames a chunk needs (m+T−1), 0 when the world path needs none."""
        return 0 if self.world is None else self.world.frames_needed

    @property
    def world_camera(self) -> str | None:
        """The camera whose frames the world encoder reads (the first image feature, as in the plugin)."""
        return None if self.world is None else self.config.image_features[0]

    @property
    def world_encoder_calls(self) -> int:
        """V-JEPA clips encoded since loading."""
        return 0 if self.world is None else self.world.encoder_clips

    @property
    def record_diagnostics(self) -> bool:
        """Opt-in injection diagnostics (attention probabilities are only materialised when on)."""
        return self.world is not None and self.world.inject.record_stats

    @record_diagnostics.setter
    def record_diagnostics(self, on: bool) -> None:
        world = self._require_world()
        if on and self.config.cuda_graphs:
            raise ValueError("diagnostics read the injection's attention as the denoising loop runs, which a "
                             "replayed CUDA graph does not do; turn cuda_graphs off to record them")
        world.inject.record_stats = bool(on)

    def diagnostics(self) -> dict:
        """Gate; with ``record_diagnostics``: the last injection's attention entropy ratio and per-K mass,
        and (``act`` in ``pred`` mode) the Prophet's cosine per horizon against the latents observed later."""
        world = self._require_world()
        out = {"gate": world.inject.gate_value()}
        stats = world.inject.last_stats
        if world.inject.record_stats and stats is not None:
            out |= stats.summary()
        if world.inject.record_stats:
            out["prophet_cosine_per_k"] = self._horizon_cos.summary()
        return out

    @torch.no_grad()
    def encode_world(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Clips [B, m, H, W, 3] uint8 (or [B, m, 3, H, W] float in [0,1]) -> world latents [B, D]."""
        return self._require_world().encode_world(frames)

    @torch.no_grad()
    def predict_memory(self, z_hist: torch.Tensor) -> torch.Tensor:
        """z_hist [B, T, D] -> the ``pred`` world memory [B, K, D] (z_t + Prophet when delta)."""
        return self._require_world().predict(z_hist.to(self.device))

    @property
    def last_world_prediction(self) -> torch.Tensor | None:
        """The Prophet's predicted change pred_k − z_t [B, K, D] of the last chunk, in ``pred`` mode only
        (None otherwise, or when that chunk's memory was passed in): what the Prophet cosine scores."""
        if self.world is None or self.config.memory != "pred" or self.world.last_latents is None:
            return None
        z_hist, pred = self.world.last_latents
        return pred - z_hist[:, -1:].float()

    def _require_world(self) -> WorldMemory:
        if self.world is None:
            raise ValueError("this is a plain smolvla policy: it has no world modality")
        return self.world

    @torch.no_grad()
    def act(
        self, batch: dict, noise: torch.Tensor | None = None, generators: list[torch.Generator] | None = None
    ) -> np.ndarray:
        """One action per batch row [B, action_dim]; a chunk is computed only when the queue is empty.

        Call it at every env step: world policies keep the first camera's recent frames from it.
        """
        bsz = _batch_size(batch)
        if self._queue and self._queue_batch != bsz:
            raise ValueError(
                f"act() got a batch of {bsz} while {self._queue_batch} episodes are in progress; call reset() "
                "when starting new episodes"
            )
        tracking = self.record_diagnostics and self.world_frames_needed > 0
        if self.world_frames_needed:
            self._history.push(batch[self.world_camera])
            self._history_has_current = True
            if tracking:  # one extra clip per step: the observed latent the Prophet is scored against
                z = self.world.encode_world(self._history.window()[:, -self.world.rollout.window :])
                self._horizon_cos.observed(self._step, z)
        try:
            if not self._queue:
                chunk = self.predict_chunk(batch, noise=noise, generators=generators)
                self._queue.extend(chunk[:, : self.config.n_action_steps].transpose(0, 1))
                self._queue_batch = bsz
                prediction = self.last_world_prediction
                if tracking and prediction is not None:
                    self._horizon_cos.predicted(self._step, prediction)
        finally:
            self._history_has_current = False
        self._step += 1
        return self._queue.popleft().cpu().numpy()

    # --------------------------------------------------------------------------- chunks
    @torch.no_grad()
    def predict_chunk(
        self,
        batch: dict,
        noise: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        generators: list[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """Actions [B, chunk_size, action_dim], unnormalised, for a batch in the checkpoint's feature names.

        ``memory`` [B, K, D] replaces the world memory (bypassing encoder and mode). Otherwise world
        policies build it from ``batch["observation.world_frames"]`` (the last ``world_frames_needed``
        first-camera frames, oldest first) or, without it, from the frames ``act`` has kept (a direct
        call adds the batch's frame as the newest). ``generators`` (one per row) draw the noise when
        ``noise`` is None and the random memories: the episode's own randomness.
        """
        if memory is not None and self.world is None:
            raise ValueError("memory= needs a smolvla_world checkpoint; this is a plain smolvla policy")
        cfg = self.config
        batch = {self._rename.get(k, k): v for k, v in batch.items()}
        images, img_masks = self.prepare_images(batch)
        state = self.prepare_state(batch)
        if "task" not in batch:
            raise KeyError("batch needs 'task': a list of B task strings (the prompt, e.g. task.language)")
        tokens, tok_masks = self.tokenizer(list(batch["task"]))
        bsz = state.shape[0]
        if tokens.shape[0] != bsz or any(img.shape[0] != bsz for img in images):
            raise ValueError("batch entries disagree on the batch size (images, state, task)")
        shape = (bsz, cfg.chunk_size, cfg.max_action_dim)
        if noise is None and generators is not None:
            if len(generators) != bsz:
                raise ValueError(f"got {len(generators)} generators for a batch of {bsz}")
            noise = torch.stack([torch.randn(shape[1:], generator=g) for g in generators])
        if noise is None:
            noise = torch.randn(shape, dtype=torch.float32, device=self.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape} (batch, chunk_size, max_action_dim), got {tuple(noise.shape)}")
        if self.world is not None:  # nothing from an earlier chunk may pass for this one's
            self.world.last_latents = None
            self.world.inject.last_stats = None
        if memory is None and self.world is not None:
            memory = self.world.memory(bsz, self._world_window(batch), generators, self.device)
        head = self.model.model
        prefix = head.encode_prefix(images, img_masks, tokens.to(self.device), tok_masks.to(self.device), state)
        actions = self._sample(prefix, noise.to(self.device, torch.float32), memory)
        self.last_chunk_stats = _memory_stats(memory, bsz)
        if self.record_diagnostics and memory is not None and self.world.inject.last_stats is not None:
            for row, attn in zip(self.last_chunk_stats, self.world.inject.last_stats.rows()):
                row["attention"] = attn  # the last denoising step's, as the plugin logged it
        actions = actions[:, :, : cfg.action_feature.shape[0]]
        if self._unnormalizer is not None:
            actions = self._unnormalizer.apply(ACTION_KEY, actions, inverse=True)
        return actions

    def _world_window(self, batch: dict) -> torch.Tensor | np.ndarray | None:
        """The frame window for the world latents: from the batch, else the history ``act`` keeps."""
        if not self.world_frames_needed:
            return None
        if WORLD_FRAMES_KEY in batch:
            return batch[WORLD_FRAMES_KEY]
        if not self._history_has_current:  # a direct predict_chunk call: this frame is the newest
            self._history.push(batch[self.world_camera])
        return self._history.window()

    def prepare_images(self, batch: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Cameras in config order -> [-1,1] tensors at the model's size, with per-row validity masks."""
        cfg = self.config
        present = [k for k in cfg.image_features if k in batch]
        missing = [k for k in cfg.image_features if k not in batch]
        if not present:
            raise KeyError(f"batch has none of the policy's cameras {cfg.image_features}")
        if len(missing) > cfg.empty_cameras:
            raise KeyError(
                f"batch lacks cameras {missing} (config allows {cfg.empty_cameras} empty ones); LeRobot would "
                "silently run with fewer image tokens. Provide them, or rename your keys to the policy's."
            )
        images, masks = [], []
        for key in present:
            img = to_float_chw(batch[key], key).to(self.device)
            if self._normalizer is not None:
                img = self._normalizer.apply(key, img)
            if cfg.resize_imgs_with_padding is not None:
                img = resize_with_pad(img, *cfg.resize_imgs_with_padding, pad_value=0)
            images.append(img * 2.0 - 1.0)
            pad_key = f"{key}_padding_mask"
            mask = torch.as_tensor(batch[pad_key]).bool() if pad_key in batch else torch.ones(img.shape[0], dtype=torch.bool)
            masks.append(mask.to(self.device))
        for _ in missing:  # LeRobot's empty cameras: an all -1 image whose tokens are masked out
            images.append(torch.full_like(images[0], -1.0))
            masks.append(torch.zeros_like(masks[0]))
        return images, masks

    def prepare_state(self, batch: dict) -> torch.Tensor:
        if STATE_KEY not in batch:
            raise KeyError(f"batch needs '{STATE_KEY}' [B, {self.config.state_feature.shape[0]}]")
        state = torch.as_tensor(batch[STATE_KEY]).to(self.device, torch.float32)
        if state.ndim == 3:
            state = state[:, -1]
        width = self.config.state_feature.shape[0]
        if state.ndim != 2 or state.shape[1] != width:
            raise ValueError(f"{STATE_KEY} must be [B, {width}], got {tuple(state.shape)}")
        if self._normalizer is not None:
            state = self._normalizer.apply(STATE_KEY, state)
        return pad_vector(state, self.config.max_state_dim)

    # --------------------------------------------------------------------------- saving
    def save_pretrained(self, out_dir: str | Path) -> None:
        """Write the LeRobot ``pretrained_model/`` layout (config, weights in their stored dtypes, processors)."""
        save_checkpoint(out_dir, self._checkpoint, self.model.state_dict(), self.processors)


def _memory_stats(memory: torch.Tensor | None, bsz: int) -> list[dict]:
    """Per-row facts about the memory a chunk used (one host read per chunk, for episode records)."""
    if memory is None:
        return [{"memory": False} for _ in range(bsz)]
    flat = memory.detach().float().flatten(1)
    finite = torch.isfinite(flat).all(dim=1).tolist()
    norms = memory.detach().float().norm(dim=-1).mean(dim=1).tolist()
    return [{"memory": True, "memory_finite": f, "memory_norm": n} for f, n in zip(finite, norms)]


def _batch_size(batch: dict) -> int:
    if STATE_KEY in batch:
        return int(torch.as_tensor(batch[STATE_KEY]).shape[0])
    return len(batch["task"])
