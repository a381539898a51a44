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
from vlaworld.models.smolvla import ModelSpec, SmolVLAModel
from vlaworld.processing import pad_vector, resize_with_pad, to_float_chw
from vlaworld.tokenizer import TaskTokenizer

STATE_KEY = "observation.state"
ACTION_KEY = "action"


@dataclass(frozen=True, kw_only=True)
class ResolvedConfig(PolicyConfig):
    """The checkpoint's config with every runtime choice resolved (what a result file records)."""

    checkpoint: str
    vlm_dir: str
    memory: str
    device: str
    dtype: str  # "stored" (as in the file, LeRobot's mix) or a torch dtype name
    compile: bool = False
    stats_file: str | None = None


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

    # --------------------------------------------------------------------------- episode API
    def reset(self) -> None:
        """Start new episodes: forget queued actions (and, for world policies, the frame history)."""
        self._queue.clear()
        self._queue_batch = None

    @torch.no_grad()
    def act(self, batch: dict, noise: torch.Tensor | None = None) -> np.ndarray:
        """One action per batch row [B, action_dim]; a chunk is computed only when the queue is empty."""
        bsz = _batch_size(batch)
        if self._queue and self._queue_batch != bsz:
            raise ValueError(
                f"act() got a batch of {bsz} while {self._queue_batch} episodes are in progress; call reset() "
                "when starting new episodes"
            )
        if not self._queue:
            chunk = self.predict_chunk(batch, noise=noise)
            self._queue.extend(chunk[:, : self.config.n_action_steps].transpose(0, 1))
            self._queue_batch = bsz
        return self._queue.popleft().cpu().numpy()

    # --------------------------------------------------------------------------- chunks
    @torch.no_grad()
    def predict_chunk(
        self, batch: dict, noise: torch.Tensor | None = None, memory: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Actions [B, chunk_size, action_dim], unnormalised, for a batch in the checkpoint's feature names."""
        if memory is not None and self.config.type != "smolvla_world":
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
        if noise is None:
            noise = torch.randn(shape, dtype=torch.float32, device=self.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape} (batch, chunk_size, max_action_dim), got {tuple(noise.shape)}")
        head = self.model.model
        prefix = head.encode_prefix(images, img_masks, tokens.to(self.device), tok_masks.to(self.device), state)
        actions = head.sample_actions(prefix, noise.to(self.device, torch.float32), memory)
        actions = actions[:, :, : cfg.action_feature.shape[0]]
        if self._unnormalizer is not None:
            actions = self._unnormalizer.apply(ACTION_KEY, actions, inverse=True)
        return actions

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
        """Write the LeRobot ``pretrained_model/`` layout (config, weights as stored, processors)."""
        save_checkpoint(out_dir, self._checkpoint, self.model.state_dict(), self.processors)


def _batch_size(batch: dict) -> int:
    if STATE_KEY in batch:
        return int(torch.as_tensor(batch[STATE_KEY]).shape[0])
    return len(batch["task"])
