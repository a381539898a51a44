"""What a client may send, checked before it can reach a batch: one bad request never spoils others'.

A request is a msgpack map. Observation entries use the checkpoint's own feature names (or the env
names its rename map knows), one unbatched sample as ``Policy.act`` takes a batch row:
``observation.images.<cam>`` uint8 [H, W, 3], ``observation.state`` numbers [state_dim], ``task`` text
(openpi's ``prompt`` is the same thing), and optionally ``observation.world_frames`` uint8 [n, H, W, 3]
(the world camera's last n = m+T−1 frames, oldest first). Control entries: ``reset`` (true: start a new
episode) and ``session_id`` (int or str, read with ``reset``). Anything else is ignored, except unknown
``observation.*`` names, which are refused: a misspelt camera would otherwise run as a missing one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlaworld.config import STATE_KEY, WORLD_FRAMES_KEY

TASK_KEYS = ("task", "prompt")
CONTROL_KEYS = ("reset", "session_id")


class ObservationError(ValueError):
    """A request the policy cannot run; the message says what was wrong and what to send instead."""


@dataclass(frozen=True, kw_only=True)
class ObservationSpec:
    """The policy's inputs, as the server checks them (built from a loaded policy's config)."""

    cameras: tuple[str, ...]  # policy feature names, in config order
    empty_cameras: int  # cameras a sample may omit (LeRobot's empty cameras)
    state_dim: int
    world_frames: int  # n = m+T−1, 0 when the world path reads no frames
    world_camera: str | None
    rename: Mapping[str, str]  # env name -> policy name (the checkpoint's rename map)

    def describe(self) -> dict[str, Any]:
        return {
            "images": list(self.cameras), "image_format": "uint8 [H, W, 3] (HWC, dataset orientation)",
            "empty_cameras_allowed": self.empty_cameras, "state": STATE_KEY, "state_dim": self.state_dim,
            "task": "task (or openpi's prompt): text", "world_frames": WORLD_FRAMES_KEY,
            "world_frames_needed": self.world_frames, "world_camera": self.world_camera,
            "rename_map": dict(self.rename),
        }


@dataclass(frozen=True, kw_only=True)
class Request:
    """A checked request: control fields and (unless a bare reset) one observation sample."""

    reset: bool
    session_id: int | str | None
    observation: dict[str, Any] | None  # policy names -> arrays / task text; None for a bare reset


def parse_request(message: Any, spec: ObservationSpec) -> Request:
    """A decoded message -> Request, or ObservationError naming the problem and the fix."""
    if not isinstance(message, Mapping):
        raise ObservationError(f"a request is a map of feature name -> value, got {type(message).__name__}")
    odd = [k for k in message if not isinstance(k, str)]
    if odd:
        raise ObservationError(f"request keys must be text (feature names), got {odd[:3]}")
    message = {spec.rename.get(k, k): v for k, v in message.items()}
    reset = message.get("reset", False)
    if not isinstance(reset, (bool, np.bool_)):
        raise ObservationError(f"'reset' must be true or false, got {reset!r}")
    session_id = message.get("session_id")
    if session_id is not None and not (isinstance(session_id, (str, int, np.integer)) and not isinstance(session_id, bool)):
        raise ObservationError(f"'session_id' must be an integer or a string, got {type(session_id).__name__}")
    if isinstance(session_id, np.integer):
        session_id = int(session_id)
    observed = [k for k in message if k.startswith("observation.") or k in TASK_KEYS]
    if not observed:
        if not reset:
            raise ObservationError(_expected(spec, "the request has no observation"))
        return Request(reset=True, session_id=session_id, observation=None)
    return Request(reset=bool(reset), session_id=session_id, observation=_observation(message, spec))


def _observation(message: Mapping[str, Any], spec: ObservationSpec) -> dict[str, Any]:
    known = {*spec.cameras, STATE_KEY, WORLD_FRAMES_KEY}
    unknown = sorted(k for k in message if k.startswith("observation.") and k not in known)
    if unknown:
        raise ObservationError(_expected(spec, f"unknown observation names {unknown}"))
    missing = [k for k in spec.cameras if k not in message]
    if len(missing) == len(spec.cameras) or len(missing) > spec.empty_cameras:
        raise ObservationError(_expected(spec, f"missing cameras {missing}"))
    out: dict[str, Any] = {}
    for key in spec.cameras:
        if key in message:
            out[key] = _image(message[key], key, ndim=3)
    if STATE_KEY not in message:
        raise ObservationError(_expected(spec, f"missing {STATE_KEY}"))
    out[STATE_KEY] = _state(message[STATE_KEY], spec.state_dim)
    out["task"] = _task(message)
    if WORLD_FRAMES_KEY in message and spec.world_frames:
        frames = _image(message[WORLD_FRAMES_KEY], WORLD_FRAMES_KEY, ndim=4)
        if frames.shape[0] != spec.world_frames:
            raise ObservationError(
                f"{WORLD_FRAMES_KEY} must hold the world camera's last {spec.world_frames} frames (m+T-1, oldest "
                f"first, repeat the first frame at the episode start), got {frames.shape[0]}"
            )
        out[WORLD_FRAMES_KEY] = frames
    if spec.world_frames and WORLD_FRAMES_KEY not in out and spec.world_camera not in out:
        raise ObservationError(
            f"this policy's world memory reads camera {spec.world_camera!r}: send it, or send {WORLD_FRAMES_KEY}"
        )
    return out


def _image(value: Any, key: str, *, ndim: int) -> np.ndarray:
    shape = "[n, H, W, 3]" if ndim == 4 else "[H, W, 3]"
    if not isinstance(value, np.ndarray):
        raise ObservationError(f"{key} must be a numpy uint8 array {shape}, got {type(value).__name__}")
    if value.dtype != np.uint8:
        raise ObservationError(
            f"{key} has dtype {value.dtype}; send uint8 {shape} as the camera gives it (0-255, HWC, one sample)"
        )
    if value.ndim != ndim or value.shape[-1] != 3 or min(value.shape) < 1:
        hint = " (one sample, not a batch)" if value.ndim == ndim + 1 else ""
        raise ObservationError(f"{key} must be uint8 {shape} (HWC, RGB){hint}, got shape {list(value.shape)}")
    return value


def _state(value: Any, dim: int) -> np.ndarray:
    if isinstance(value, (list, tuple)):
        try:
            value = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ObservationError(f"{STATE_KEY} must be {dim} numbers: {exc}") from exc
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        what = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
        raise ObservationError(f"{STATE_KEY} must be a float array [{dim}], got {what}")
    if value.shape != (dim,):
        hint = " (one sample, not a batch)" if value.ndim == 2 else ""
        raise ObservationError(f"{STATE_KEY} must have shape [{dim}]{hint}, got {list(value.shape)}")
    state = value.astype(np.float32)
    if not np.isfinite(state).all():
        raise ObservationError(f"{STATE_KEY} has non-finite values {state.tolist()}")
    return state


def _task(message: Mapping[str, Any]) -> str:
    given = {k: message[k] for k in TASK_KEYS if k in message}
    if not given:
        raise ObservationError("missing the task text: send 'task' (or openpi's 'prompt'), e.g. the LIBERO task.language")
    texts = set()
    for key, text in given.items():
        if not isinstance(text, str):
            raise ObservationError(f"'{key}' must be text, got {type(text).__name__}")
        texts.add(text)
    if len(texts) > 1:
        raise ObservationError(f"'task' and 'prompt' disagree: {sorted(texts)}; send one of them")
    return texts.pop()


def _expected(spec: ObservationSpec, problem: str) -> str:
    optional = f" ({spec.empty_cameras} of them may be omitted)" if spec.empty_cameras else ""
    world = (f", optionally {WORLD_FRAMES_KEY} uint8 [{spec.world_frames}, H, W, 3]" if spec.world_frames else "")
    return (f"{problem}. This policy takes {list(spec.cameras)} as uint8 [H, W, 3]{optional}, {STATE_KEY} "
            f"[{spec.state_dim}], task (or prompt) text{world}; see the server's metadata['features'].")
