"""Raw robosuite observations -> the LeRobot feature dict the checkpoints were trained on.

Mirrors LeRobot's `LiberoProcessorStep` (processor/env_processor.py L54-154 @v0.4.2): both cameras
rotated 180° (dataset orientation) and the 8-d state eef_pos | axis-angle(eef_quat) | gripper_qpos.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from vlaworld.envs.constants import CAMERAS, STATE_KEY, TASK_KEY

_AXIS_ANGLE_EPS = 1e-10  # LiberoProcessorStep._quat2axisangle: below it the rotation is treated as zero


def quat2axisangle(quat: np.ndarray) -> np.ndarray:
    """(4,) xyzw quaternion -> (3,) axis-angle, LeRobot's float32 formula.

    w is clamped to [-1, 1]; den = sqrt(max(1 - w², 0)); aa = xyz / den * 2 acos(w), or 0 when den <= 1e-10.
    Same float32 operations in the same order as LeRobot, but with correctly rounded sqrt and acos:
    torch's float32 sqrt/acos on CPU (AVX512 here) are off by 1 ulp in ~20 % / ~9 % of inputs, so
    LeRobot's own values depend on the machine. We stay within 4 ulp of them (test_envs_units.py).
    """
    q = np.asarray(quat, dtype=np.float32)
    w = np.clip(q[3], np.float32(-1.0), np.float32(1.0))
    den = np.sqrt(np.maximum(np.float32(1.0) - w * w, np.float32(0.0)))
    if den <= _AXIS_ANGLE_EPS:
        return np.zeros(3, dtype=np.float32)
    # acos in float64, then rounded: numpy's float32 arccos is off by an ulp in ~1/3 of cases.
    angle = np.float32(2.0) * np.float32(np.arccos(np.float64(w)))
    return (q[:3] / den * angle).astype(np.float32)  # (3,), same operation order as LeRobot


def state_vector(raw: Mapping[str, np.ndarray]) -> np.ndarray:
    """(8,) float32 = eef_pos(3) | axis-angle(3) | gripper_qpos(2)."""
    pos = np.asarray(raw["robot0_eef_pos"], dtype=np.float32)
    aa = quat2axisangle(raw["robot0_eef_quat"])
    grip = np.asarray(raw["robot0_gripper_qpos"], dtype=np.float32)
    return np.concatenate([pos, aa, grip]).astype(np.float32)


def dataset_orientation(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) raw OpenGL render -> rotated 180° copy (raw[::-1, ::-1]), as stored in the dataset."""
    return np.ascontiguousarray(image[::-1, ::-1])


def format_observation(raw: Mapping[str, np.ndarray], task: str) -> dict[str, object]:
    """Raw robosuite obs dict -> {camera features (H, W, 3) uint8, state (8,) float32, task text}."""
    obs: dict[str, object] = {
        feature: dataset_orientation(raw[f"{camera}_image"]) for camera, feature in CAMERAS.items()
    }
    obs[STATE_KEY] = state_vector(raw)
    obs[TASK_KEY] = task
    return obs
