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

from vlaworld.checkpoint.lerobot import CheckpointSource, save_checkpoint
from vlaworld.checkpoint.processors import ProcessorSpec
from vlaworld.config import PolicyConfig
from vlaworld.models.cuda_graph import CudaGraphSampler
from vlaworld.models.smolvla import SmolVLAModel
from vlaworld.processing import InputProcessor, TaskTokenizer, batch_size, per_row_normal
from vlaworld.world import WorldMemory


@dataclass(frozen=True, kw_only=True)
class ResolvedConfig(PolicyConfig):
    """The checkpoint's config with every runtime choice resolved (what a result file records)."""

    checkpoint: str
    vlm_dir: str
    memory: str
    device: str
    dtype: str  # "lerobot" (each part as the profile's LeRobot runs it) or a torch dtype name (forced)
    numerics: str = "lerobot-0.4"  # the LeRobot generation reproduced (vlaworld.config.numerics)
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
        inputs: InputProcessor,
        source: CheckpointSource,
        world: WorldMemory | None = None,
    ) -> None:
        self.config = config
        self.model = model.eval()
        self.inputs = inputs
        self.world = world
        self.device = torch.device(config.device)
        self._source = source  # what save_pretrained needs of the checkpoint read (not its weights)
        self._queue: deque[torch.Tensor] = deque()
        self._queue_batch: int | None = None
        self._step = 0  # env steps since reset(), as seen by act()
        self.last_chunk_stats: list[dict] = []
        if config.cuda_graphs:
            if self.device.type != "cuda":
                raise ValueError("cuda_graphs=True needs device='cuda'")
            self._sample = CudaGraphSampler(model.model)
        else:
            self._sample = model.model.sample_actions

    @property
    def processors(self) -> ProcessorSpec:
        """The checkpoint's processor pipelines (stats, tokenizer settings, rename map) as run."""
        return self.inputs.processors

    @property
    def tokenizer(self) -> TaskTokenizer:
        return self.inputs.tokenizer

    @property
    def rename_map(self) -> dict[str, str]:
        """Batch keys the checkpoint's preprocessor renames (an env's name -> the policy's)."""
        return dict(self.processors.rename_map)

    # --------------------------------------------------------------------------- episode API
    def reset(self) -> None:
        """Start new episodes: forget queued actions (and, for world policies, the frame history)."""
        self._queue.clear()
        self._queue_batch = None
        if self.world is not None:
            self.world.reset()
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
        return None if self.world is None else self.world.rollout.camera

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
            out["prophet_cosine_per_k"] = world.horizon_cosine.summary()
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
        bsz = batch_size(batch)
        if self._queue and self._queue_batch != bsz:
            raise ValueError(
                f"act() got a batch of {bsz} while {self._queue_batch} episodes are in progress; call reset() "
                "when starting new episodes"
            )
        batch = self.inputs.rename(batch)
        tracking = self.record_diagnostics and self.world_frames_needed > 0
        if self.world_frames_needed:
            self.world.observe(batch[self.world_camera], self._step, score=tracking)
        try:
            if not self._queue:
                chunk = self._predict_chunk(batch, noise, None, generators)
                self._queue.extend(chunk[:, : self.config.n_action_steps].transpose(0, 1))
                self._queue_batch = bsz
                prediction = self.last_world_prediction
                if tracking and prediction is not None:
                    self.world.horizon_cosine.predicted(self._step, prediction)
        finally:
            if self.world is not None:
                self.world.end_step()
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
        return self._predict_chunk(self.inputs.rename(batch), noise, memory, generators)

    def _predict_chunk(
        self,
        batch: dict,
        noise: torch.Tensor | None,
        memory: torch.Tensor | None,
        generators: list[torch.Generator] | None,
    ) -> torch.Tensor:
        """``predict_chunk`` on a batch whose keys are already the checkpoint's."""
        cfg = self.config
        inputs = self.inputs(batch)
        bsz = inputs.batch_size
        shape = (bsz, cfg.chunk_size, cfg.max_action_dim)
        if noise is None:
            noise = per_row_normal(shape, generators, self.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape} (batch, chunk_size, max_action_dim), got {tuple(noise.shape)}")
        world = self.world
        if world is not None:  # nothing from an earlier chunk may pass for this one's
            world.last_latents = None
            world.inject.last_stats = None
            if memory is None:
                memory = world.memory(bsz, world.frame_window(batch), generators, self.device)
        prefix = self.model.model.encode_prefix(inputs)
        actions = self._sample(prefix, noise.to(self.device, torch.float32), memory)
        self.last_chunk_stats = _memory_stats(memory, bsz)
        if self.record_diagnostics and memory is not None and world.inject.last_stats is not None:
            for row, attn in zip(self.last_chunk_stats, world.inject.last_stats.rows()):
                row["attention"] = attn  # the last denoising step's, as the plugin logged it
        return self.inputs.actions(actions)

    # --------------------------------------------------------------------------- saving
    def save_pretrained(self, out_dir: str | Path) -> None:
        """Write the LeRobot ``pretrained_model/`` layout (config, weights in their stored dtypes, processors)."""
        save_checkpoint(out_dir, self._source, self.model.state_dict(), self.processors)


def _memory_stats(memory: torch.Tensor | None, bsz: int) -> list[dict]:
    """Per-row facts about the memory a chunk used (one host read per chunk, for episode records)."""
    if memory is None:
        return [{"memory": False} for _ in range(bsz)]
    flat = memory.detach().float().flatten(1)
    finite = torch.isfinite(flat).all(dim=1).tolist()
    norms = memory.detach().float().norm(dim=-1).mean(dim=1).tolist()
    return [{"memory": True, "memory_finite": f, "memory_norm": n} for f, n in zip(finite, norms)]
