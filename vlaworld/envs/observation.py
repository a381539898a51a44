"""Raw robosuite observations -> the LeRobot feature dict the checkpoints were trained on.

Mirrors LeRobot's `LiberoProcessorStep` (processor/env_processor.py L54-154 @v0.4.2): both cameras
rotated 180° (dataset orientation) and the 8-d state eef_pos | axis-angle(eef_quat) | gripper_qpos,
computed with LeRobot's own float32 torch formula.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from vlaworld.envs.constants import CAMERAS, STATE_KEY, TASK_KEY

_AXIS_ANGLE_EPS = 1e-10  # LiberoProcessorStep._quat2axisangle: at or below it the rotation is treated as zero


def quat2axisangle(quat: np.ndarray) -> np.ndarray:
    """(4,) xyzw quaternion -> (3,) axis-angle, bit for bit as LeRobot computes it.

    LeRobot's ``LiberoProcessorStep._quat2axisangle`` (processor/env_processor.py L115-154 @v0.4.2, the
    same in 0.4.4 and 0.6.1) runs in float32 torch: w clamped to [-1, 1], den = sqrt(clamp(1 - w², 0)),
    aa = xyz / den * 2 acos(w) where den > 1e-10, else 0. torch's float32 sqrt and acos are not correctly
    rounded on CPU (SLEEF kernels), and a closed loop amplifies one ulp of state into 3e-2 of action after
    30 steps, so the same torch operations run here, in the same order and dtypes, on a (1, 4) batch
    (a row's result does not depend on the batch it sits in; tests/test_oracle_lerobot.py checks both).
    """
    import torch  # imported on first use: the env workers need torch for this formula only

    q = torch.from_numpy(np.asarray(quat, dtype=np.float64).reshape(1, 4)).to(torch.float32)  # (1, 4)
    w = q[:, 3].clamp(-1.0, 1.0)
    den = torch.sqrt(torch.clamp(1.0 - w * w, min=0.0))
    result = torch.zeros((1, 3))
    mask = den > _AXIS_ANGLE_EPS
    if mask.any():
        angle = 2.0 * torch.acos(w[mask])  # (M,)
        axis = q[mask, :3] / den[mask].unsqueeze(1)
        result[mask] = axis * angle.unsqueeze(1)
    return result[0].numpy()  # (3,) float32


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
