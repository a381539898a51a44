"""Episode videos: both cameras side by side, the outcome in the file name and as a coloured bar."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vlaworld.envs.constants import CONTROL_FREQ_HZ
from vlaworld.envs.libero_env import side_by_side

_BAR_PX = 6  # height of the outcome bar under the frames
_GREEN = np.array([40, 200, 60], np.uint8)
_RED = np.array([220, 40, 40], np.uint8)
_MACRO_BLOCK = 16  # H.264 wants both sides divisible by 16; imageio would otherwise resize


class EpisodeRecorder:
    """Collects side-by-side frames of one episode; `write` encodes them with imageio-ffmpeg."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def add(self, obs: Mapping[str, Any]) -> None:
        """Append the cameras of an observation rendered with cameras on."""
        self.frames.append(side_by_side(obs))

    def write(self, directory: str, stem: str, success: bool, fps: int = CONTROL_FREQ_HZ) -> str:
        """Write `<directory>/<stem>_<success|failure>.mp4` and return its path."""
        path = os.path.join(directory, f"{stem}_{'success' if success else 'failure'}.mp4")
        write_video(path, self.frames, success=success, fps=fps)
        return path


def with_outcome_bar(frame: np.ndarray, success: bool) -> np.ndarray:
    """(H, W, 3) -> (H + pad, W, 3): a green (success) or red (failure) bar below, padded to 16 px."""
    height = frame.shape[0] + _BAR_PX
    height += -height % _MACRO_BLOCK
    out = np.zeros((height, frame.shape[1], 3), np.uint8)
    out[: frame.shape[0]] = frame
    out[frame.shape[0] :] = _GREEN if success else _RED
    return out


def write_video(path: str, frames: Sequence[np.ndarray], *, success: bool, fps: int = CONTROL_FREQ_HZ) -> None:
    """Encode (H, W, 3) uint8 frames to an H.264 mp4 with the outcome bar."""
    if not frames:
        raise ValueError(f"No frames to write to {path}: record observations with cameras on.")
    import imageio.v2 as imageio  # optional dependency (the 'sim' extra), imported where used

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=_MACRO_BLOCK) as writer:
        for frame in frames:
            writer.append_data(with_outcome_bar(frame, success))
