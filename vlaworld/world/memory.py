"""World memory at rollout: the latent history, computed lazily, and the memory modes (SPEC §6).

History semantics are the research plugin's: z_s encodes the clip of first-camera frames s−m+1..s and
the Prophet reads z_{t−T+1..t}, indices clamped at the episode start (repeat-padding). The plugin
encoded a clip at every env step; here the only input is the window of the last n = m+T−1 frames
before a chunk boundary (repeat-padded with the episode's first frame), and the T clips a chunk needs
are cut from it and encoded in one batched call. Clamping both the frames and the latents at step 0
is the same as padding the frame window with the first frame, so the results are identical.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from vlaworld.config import MEMORY_MODES, WORLD_FRAMES_KEY, WORLD_PREPROCESS_MODES, WorldConfig
from vlaworld.errors import VlaworldError
from vlaworld.models.prophet import Prophet
from vlaworld.models.vjepa2 import VJEPA2Encoder
from vlaworld.models.world_inject import GatedCrossAttention
from vlaworld.processing.noise import per_row_normal
from vlaworld.world.diagnostics import HorizonCosine
from vlaworld.world.preprocess import preprocess_clip

LATENT_MODES = ("pred", "random_scaled", "signflip", "shuffle")  # modes that need V-JEPA latents
WINDOW_MISMATCH_HELP = (
    "The research team lost 20-40 points of success when a checkpoint trained on m={implied}-frame "
    "V-JEPA clips was rolled out with m={forced}: the Prophet then reads latents from another "
    "distribution. Use the checkpoint's window, or pass allow_window_mismatch=True "
    "(--allow-window-mismatch) if this is a deliberate ablation."
)


class WindowMismatchError(VlaworldError, ValueError):
    """The rollout clip length contradicts the one the checkpoint's latents were made with."""


def resolve_window(cfg: WorldConfig, forced: int | None, allow_mismatch: bool) -> int:
    """m for the rollout: a user-forced window, else the checkpoint's rollout window, else the suffix's."""
    implied = cfg.implied_window
    window = forced if forced is not None else cfg.temporal_window
    if window < 1:
        raise ValueError(f"world temporal window must be >= 1, got {window}")
    if implied is not None and window != implied and not allow_mismatch:
        raise WindowMismatchError(
            f"world temporal window m={window} but latent_suffix={cfg.latent_suffix!r} says the training "
            f"latents used m={implied}. " + WINDOW_MISMATCH_HELP.format(implied=implied, forced=window)
        )
    return window


@dataclass(frozen=True, kw_only=True)
class WorldRollout:
    """What the world path does for one policy: mode, clip length, preprocessing."""

    mode: str
    window: int  # m
    context: int  # T
    horizon: int  # K
    latent_dim: int  # D
    delta: bool
    camera: str  # the batch key of the world camera: the first image feature, as in the plugin
    preprocess: str = "default"
    smolvla_size: tuple[int, int] | None = (512, 512)  # the checkpoint's resize_imgs_with_padding (legacy path)

    def __post_init__(self) -> None:
        if self.mode not in MEMORY_MODES:
            raise ValueError(f"memory mode {self.mode!r}: choose one of {MEMORY_MODES}")
        if self.preprocess not in WORLD_PREPROCESS_MODES:
            raise ValueError(f"world preprocessing {self.preprocess!r}: choose one of {WORLD_PREPROCESS_MODES}")

    @property
    def frames_needed(self) -> int:
        """n = m+T−1 first-camera frames before a chunk boundary (0 when no latents are needed)."""
        return self.window + self.context - 1 if self.mode in LATENT_MODES else 0


class WorldMemory:
    """Builds the [B, K, D] memory a chunk is sampled with, for one of the rollout modes.

    It also keeps what the rollout of one batch of episodes accumulates: the world camera's recent
    frames (for ``Policy.act``) and, with diagnostics on, the Prophet's cosine per horizon.
    """

    def __init__(
        self,
        rollout: WorldRollout,
        inject: GatedCrossAttention,
        prophet: Prophet | None,
        encoder: VJEPA2Encoder | None,
    ) -> None:
        self.gate_open = inject.is_open()  # read once: a host sync per step would stall the GPU
        if rollout.mode in LATENT_MODES and self.gate_open and (prophet is None or encoder is None):
            raise ValueError(f"memory mode {rollout.mode!r} needs the Prophet and the V-JEPA 2 encoder")
        self.rollout = rollout
        self.inject = inject
        self.prophet = prophet
        self.encoder = encoder
        self.encoder_clips = 0  # clips encoded so far (the benchmark reports clips per env step)
        self.last_latents: tuple[torch.Tensor, torch.Tensor] | None = None  # (z_hist, pred) of the last chunk
        self.history = FrameHistory(rollout.frames_needed)
        self.horizon_cosine = HorizonCosine(rollout.horizon)
        self._observed_this_step = False  # observe() already pushed the current frame

    def reset(self) -> None:
        """New episodes: forget the frames and the diagnostics of the last ones."""
        self.history.clear()
        self.horizon_cosine.reset()
        self._observed_this_step = False

    def observe(self, frames: torch.Tensor | np.ndarray, step: int, *, score: bool) -> None:
        """One env step's world-camera frames [B, H, W, 3] (``act`` calls this every step).

        ``score``: also encode the newest clip, the observed latent the Prophet's earlier predictions
        are scored against (one extra V-JEPA clip per step, diagnostics only).
        """
        self.history.push(frames)
        self._observed_this_step = True
        if score:
            z = self.encode_world(self.history.window()[:, -self.rollout.window :])  # (B, D)
            self.horizon_cosine.observed(step, z)

    def end_step(self) -> None:
        self._observed_this_step = False

    def frame_window(self, batch: dict) -> torch.Tensor | np.ndarray | None:
        """The frames a chunk's latents are made from: the batch's ``observation.world_frames``, else the
        history (a direct ``predict_chunk`` call adds the batch's frame as the newest); None if not needed."""
        if not self.frames_needed:
            return None
        if WORLD_FRAMES_KEY in batch:
            return batch[WORLD_FRAMES_KEY]
        if not self._observed_this_step:
            self.history.push(batch[self.rollout.camera])
        return self.history.window()

    @property
    def active(self) -> bool:
        """False when the world path is skipped: mode 'none' or a closed gate (do no harm)."""
        return self.rollout.mode != "none" and self.gate_open

    @property
    def frames_needed(self) -> int:
        return self.rollout.frames_needed if self.active else 0

    def _prepare(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Frames [B, n, ...] -> normalised encoder input [B, n, 3, S, S], made on the encoder's device.

        Preprocessing is per frame, so a window's n frames are prepared once (not once per clip) and
        cross to the device as uint8.
        """
        if self.encoder is None:
            raise ValueError("this policy has no V-JEPA 2 encoder loaded (its memory mode needs none)")
        param = next(self.encoder.parameters())
        x = torch.as_tensor(frames).to(param.device)
        r = self.rollout
        return preprocess_clip(x, mode=r.preprocess, size=self.encoder.config.crop_size,
                               smolvla_size=r.smolvla_size).to(param.dtype)

    def _encode(self, clips: torch.Tensor) -> torch.Tensor:
        """Normalised clips [N, m, 3, S, S] -> latents [N, D] float32, counted."""
        self.encoder_clips += clips.shape[0]
        return self.encoder.encode(clips).float()

    @torch.no_grad()
    def encode_world(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Clips [B, m, H, W, 3] uint8 (or [B, m, 3, H, W] float in [0,1]) -> latents [B, D] float32."""
        return self._encode(self._prepare(frames))

    @torch.no_grad()
    def latent_history(self, window: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Frame window [B, n, ...] (oldest first, n = m+T−1) -> z_hist [B, T, D] in one encoder call."""
        m, t = self.rollout.window, self.rollout.context
        frames = torch.as_tensor(window)
        if frames.ndim != 5 or frames.shape[1] != m + t - 1:
            raise ValueError(
                f"observation.world_frames must be [B, {m + t - 1}, H, W, 3] (the last m+T-1 first-camera "
                f"frames, oldest first), got {tuple(frames.shape)}"
            )
        prepared = self._prepare(frames)  # (B, n, 3, S, S)
        clips = torch.stack([prepared[:, j : j + m] for j in range(t)], dim=1)  # (B, T, m, 3, S, S)
        z = self._encode(clips.flatten(0, 1))  # (B*T, D)
        return z.view(frames.shape[0], t, -1)

    def predict(self, z_hist: torch.Tensor) -> torch.Tensor:
        """``pred`` memory [B, K, D]: z_t + Prophet(z_hist) with delta prediction, else Prophet(z_hist)."""
        if self.prophet is None:
            raise ValueError("this checkpoint has no Prophet (enable_world_predictor=false)")
        dtype = next(self.prophet.parameters()).dtype
        pred = self.prophet(z_hist.to(dtype)).float()  # (B, K, D)
        return z_hist[:, -1:].float() + pred if self.rollout.delta else pred

    def memory(
        self, bsz: int, window: torch.Tensor | np.ndarray | None, generators: list[torch.Generator] | None, device
    ) -> torch.Tensor | None:
        """The memory for this chunk, or None when the world path is skipped."""
        if not self.active:
            return None
        r = self.rollout
        shape = (bsz, r.horizon, r.latent_dim)
        if r.mode == "zero":
            return torch.zeros(shape, device=device)
        if r.mode == "random":
            return per_row_normal(shape, generators, device)
        if window is None:
            raise KeyError(
                f"memory mode {r.mode!r} needs 'observation.world_frames' in the batch (the last "
                f"{r.window + r.context - 1} frames of the first camera), or use policy.act(), which keeps them"
            )
        z_hist = self.latent_history(window).to(device)
        pred = self.predict(z_hist)
        self.last_latents = (z_hist, pred)
        if r.mode == "pred":
            return pred
        if r.mode == "random_scaled":
            noise = per_row_normal(shape, generators, device)
            return noise * (pred.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True))
        if r.mode == "signflip":
            z_t = z_hist[:, -1:].float()
            delta = pred - z_t  # the predicted change, whatever delta_prediction says
            return z_t - delta
        if bsz < 2:  # shuffle
            raise ValueError("memory mode 'shuffle' needs at least 2 episodes per batch (it swaps their memories)")
        return pred.roll(1, dims=0)  # episode i gets episode i-1's prediction: no row keeps its own


class FrameHistory:
    """The last n world-camera frames of each episode in a batch, repeat-padded at the start (for ``act``)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._frames: deque[np.ndarray] = deque(maxlen=max(n, 1))

    def clear(self) -> None:
        self._frames.clear()

    def push(self, frames: torch.Tensor | np.ndarray) -> None:
        """Add one step's frames [B, ...] (copied; environments may reuse their buffers)."""
        arr = np.array(frames.cpu() if isinstance(frames, torch.Tensor) else frames, copy=True)
        if not self._frames:
            self._frames.extend([arr] * self.n)
        else:
            self._frames.append(arr)

    def window(self) -> np.ndarray:
        return np.stack(list(self._frames), axis=1)  # (B, n, ...)
