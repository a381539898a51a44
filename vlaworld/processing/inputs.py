"""LeRobot's SmolVLA pre- and post-processing, folded into one object: a batch -> ``PrefixInputs``.

In LeRobot's order: rename the batch's keys (``rename_observations_processor``), images to float [0,1]
CHW, normalise (VISUAL is IDENTITY for SmolVLA), resize-with-pad, ×2−1; the task + "\\n" tokenised; the
state normalised and zero-padded to ``max_state_dim``. After sampling, actions are sliced to the action
feature's width and unnormalised (``unnormalizer_processor``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from vlaworld.checkpoint.processors import ProcessorSpec
from vlaworld.config import ACTION_KEY, STATE_KEY, TASK_KEY, ConfigError, PolicyConfig
from vlaworld.models.flow_matching import PrefixInputs
from vlaworld.processing.tokenizer import TaskTokenizer
from vlaworld.processing.transforms import pad_vector, resize_with_pad, to_float_chw

# device_processor float_dtype values that leave vlaworld's float32 inputs as they are.
FLOAT32_DTYPES = (None, "float32")


class InputProcessor:
    """Turns batches in the checkpoint's feature names into model inputs on ``device``, and back."""

    def __init__(
        self, config: PolicyConfig, processors: ProcessorSpec, tokenizer: TaskTokenizer, device: torch.device | str
    ) -> None:
        if processors.float_dtype not in FLOAT32_DTYPES:
            raise ConfigError(
                f"policy_preprocessor.json device_processor has float_dtype={processors.float_dtype!r}: LeRobot "
                "then casts the inputs before normalising them, which vlaworld does not reproduce (it runs them in "
                "float32). Set it to null (LeRobot's default for SmolVLA) if the policy was trained that way."
            )
        self.config = config
        self.processors = processors
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self._normalizer = processors.normalizer
        self._unnormalizer = processors.unnormalizer
        self._rename = processors.rename_map

    def rename(self, batch: Mapping) -> dict:
        """The batch with its keys renamed as the checkpoint's preprocessor renames them."""
        return {self._rename.get(k, k): v for k, v in batch.items()}

    def __call__(self, batch: Mapping) -> PrefixInputs:
        """A renamed batch -> the model's inputs (images, prompt tokens, state) on the device."""
        images, masks = self.images(batch)
        state = self.state(batch)
        if TASK_KEY not in batch:
            raise KeyError(f"batch needs '{TASK_KEY}': a list of B task strings (the prompt, e.g. task.language)")
        tokens, token_masks = self.tokenizer(list(batch[TASK_KEY]))
        return PrefixInputs(images=tuple(images), image_masks=tuple(masks), tokens=tokens.to(self.device),
                            token_masks=token_masks.to(self.device), state=state)

    def images(self, batch: Mapping) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
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
            img = to_float_chw(batch[key], key).to(self.device)  # (B, 3, H, W) in [0, 1]
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

    def state(self, batch: Mapping) -> torch.Tensor:
        """observation.state [B, S] (or [B, T, S]: the last step) -> normalised, zero-padded [B, max_state_dim]."""
        width = self.config.state_feature.shape[0]
        if STATE_KEY not in batch:
            raise KeyError(f"batch needs '{STATE_KEY}' [B, {width}]")
        state = torch.as_tensor(batch[STATE_KEY]).to(self.device, torch.float32)
        if state.ndim == 3:
            state = state[:, -1]
        if state.ndim != 2 or state.shape[1] != width:
            raise ValueError(f"{STATE_KEY} must be [B, {width}], got {tuple(state.shape)}")
        if self._normalizer is not None:
            state = self._normalizer.apply(STATE_KEY, state)
        return pad_vector(state, self.config.max_state_dim)

    def actions(self, raw: torch.Tensor) -> torch.Tensor:
        """Sampled actions [B, S, max_action_dim] -> the env's [B, S, action_dim], unnormalised."""
        actions = raw[:, :, : self.config.action_feature.shape[0]]
        if self._unnormalizer is not None:
            actions = self._unnormalizer.apply(ACTION_KEY, actions, inverse=True)
        return actions


def batch_size(batch: Mapping) -> int:
    """Rows in a batch: the state's first dimension, else the number of tasks."""
    if STATE_KEY in batch:
        return int(torch.as_tensor(batch[STATE_KEY]).shape[0])
    return len(batch[TASK_KEY])
