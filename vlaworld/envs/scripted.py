"""A privileged-state scripted expert for libero_spatial ("pick up the black bowl ... place it on the plate").

It validates the environment and the success accounting with a policy that does succeed, and runs
without cameras (LiberoEnv.set_render(False)), so its episodes are cheap. It reads the simulator
state (LiberoEnv.privileged_state(), or info["privileged"] with make(..., privileged_info=True)) and
acts through the same 7-d interface as a learned policy:
  [dx, dy, dz] OSC position deltas in the world frame (action 1.0 moves the gripper ~1 cm per step),
  [dax, day, daz] rotation deltas (world axis-angle), gripper -1 open / +1 close.
The objects of interest of every libero_spatial task are (bowl, plate), in this order (BDDL
:obj_of_interest). It grasps the bowl's wall on the side facing the robot base (far bowls are near
the arm's reach limit), first turning the gripper about the vertical so that the fingers, which
close along world y in the start pose, close along the bowl's radius there. It then steers the bowl
itself (it may slip in the fingers) until its centre touches down on the plate's centre (LIBERO's
On(bowl, plate) needs contact and < 3 cm between centres). A grasp that does not lift the bowl is
retried from the next side (up to max_attempts).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlaworld.envs.constants import ACTION_DIM

GRIPPER_OPEN, GRIPPER_CLOSE = -1.0, 1.0  # robosuite PandaGripper: sign only


@dataclass(frozen=True, kw_only=True)
class ScriptedConfig:
    """Geometry (metres) measured on akita_black_bowl / plate meshes; gains are per control step."""

    grasp_radius: float = 0.043  # bowl wall (radius ~0.033 inner bottom .. 0.047 rim)
    grasp_height: float = 0.030  # gripper site above the bowl's body origin (its bottom)
    hover_height: float = 0.12  # approach / carry height above the grasp height
    place_height: float = 0.012  # bowl origin above plate origin when releasing (resting: ~0.006)
    pos_gain: float = 60.0  # action per metre of position error (saturates beyond ~1.7 cm)
    rot_gain: float = 2.0  # action per radian of orientation error
    reach_tol: float = 0.006  # metres: waypoint reached
    turn_tol: float = 0.08  # radians: orientation reached before descending
    finger_reach: float = 0.045  # outer finger beyond the grasp point (Panda opening ~0.08 m)
    clearance: float = 0.09  # wanted xy distance from the outer finger to any other object's centre
    side_angles_deg: tuple[float, ...] = (0.0, 25.0, -25.0, 50.0, -50.0, 75.0, -75.0)  # tried in order
    close_steps: int = 12  # steps holding still while the gripper closes
    release_steps: int = 10
    max_phase_steps: int = 80  # a phase that takes longer moves on anyway
    lifted: float = 0.04  # the bowl must rise this much while lifting, else the grasp missed
    max_attempts: int = 3  # grasp attempts, each from the next side in side_angles_deg


_PHASES = ("approach", "descend", "close", "lift", "carry", "lower", "release", "retreat")


def _yaw(angle: float) -> np.ndarray:
    """(3, 3) rotation about world z."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """World-frame axis-angle (3,) that rotates `current` (3, 3) onto `target` (3, 3)."""
    r = target @ current.T
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-6:
        return np.zeros(3)
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / (2.0 * np.sin(angle))
    return axis * angle


class ScriptedSpatialExpert:
    """Waypoint state machine: approach, descend, close, lift, carry, lower, release, retreat.

    One instance per running episode; call reset() at every env reset.
    """

    def __init__(self, config: ScriptedConfig | None = None) -> None:
        self.config = config or ScriptedConfig()
        self.reset()

    def reset(self) -> None:
        """Forget the episode: call at every env reset."""
        self.phase = 0
        self._phase_steps = 0
        self._orientation: np.ndarray | None = None  # (3, 3) target, fixed at the first step
        self._grasp_offset: np.ndarray | None = None  # (3,) grasp point relative to the bowl origin
        self._hold_pos: np.ndarray | None = None  # (3,) kept while the gripper closes or opens
        self._lift_z: float | None = None  # frozen at the first step, while the bowl rests on the table
        self._bowl_z: float | None = None  # bowl height at rest
        self._attempt = 0
        self._side = -1  # index into side_angles_deg of the grasp side in use
        self._start_mat: np.ndarray | None = None  # (3, 3) gripper orientation at the first step

    @property
    def phase_name(self) -> str:
        return _PHASES[min(self.phase, len(_PHASES) - 1)]

    def act(self, state: Mapping[str, Any]) -> np.ndarray:
        """(7,) float32 action from a privileged state (LiberoEnv.privileged_state())."""
        cfg = self.config
        eef = np.asarray(state["eef_pos"], dtype=np.float64)
        mat = np.asarray(state["eef_mat"], dtype=np.float64)
        bowl, plate = (np.asarray(p, dtype=np.float64) for p in state["object_pos"][:2])
        if self._orientation is None:
            self._plan(state, mat, bowl)
        if self.phase_name == "carry" and self._phase_steps == 0 and self._missed(bowl):
            self._retry(state, bowl)
        grasp = bowl + self._grasp_offset
        lift_z = self._lift_z
        # Once grasped, steer the bowl itself (it may slip in the fingers): eef moves by the bowl's error.
        bowl_to_eef = eef - bowl
        drop_bowl = plate + np.array([0.0, 0.0, cfg.place_height])

        name = self.phase_name
        gripper = GRIPPER_CLOSE if name in ("close", "lift", "carry", "lower") else GRIPPER_OPEN
        if name == "approach":
            target, done = np.array([grasp[0], grasp[1], lift_z]), None
        elif name == "descend":
            target, done = grasp, None
        elif name == "close":
            target = self._hold(eef)
            done = self._phase_steps >= cfg.close_steps
        elif name == "lift":
            target, done = np.array([eef[0], eef[1], lift_z]), None
        elif name == "carry":
            target, done = np.array([*(drop_bowl[:2] + bowl_to_eef[:2]), lift_z]), None
        elif name == "lower":
            target, done = drop_bowl + bowl_to_eef, None
        elif name == "release":
            target = self._hold(eef)
            done = self._phase_steps >= cfg.release_steps
        else:  # retreat: straight up, open; stays here until the episode ends
            target, done = np.array([eef[0], eef[1], lift_z]), False

        rot_error = _rotation_error(self._orientation, mat)
        if done is None:
            done = bool(np.linalg.norm(target - eef) < cfg.reach_tol)
            if name == "approach":
                done = done and bool(np.linalg.norm(rot_error) < cfg.turn_tol)
        action = np.zeros(ACTION_DIM)
        action[:3] = np.clip(cfg.pos_gain * (target - eef), -1.0, 1.0)
        action[3:6] = np.clip(cfg.rot_gain * rot_error, -1.0, 1.0)
        action[6] = gripper
        self._advance(done)
        return action.astype(np.float32)

    def _missed(self, bowl: np.ndarray) -> bool:
        """After lifting: did the bowl stay down (the fingers closed on nothing or on its rim)?"""
        return bool(bowl[2] < self._bowl_z + self.config.lifted)

    def _retry(self, state: Mapping[str, Any], bowl: np.ndarray) -> None:
        """Back to approach with the next grasp side; after max_attempts, give up (retreat and wait)."""
        self._phase_steps, self._hold_pos = 0, None
        if self._attempt + 1 >= self.config.max_attempts:
            self.phase = _PHASES.index("retreat")
            return
        self._attempt += 1
        self.phase = 0
        self._plan(state, self._start_mat, bowl, after=self._side)

    def _plan(self, state: Mapping[str, Any], mat: np.ndarray, bowl: np.ndarray, after: int = -1) -> None:
        """Grasp side (_grasp_direction), the gripper yaw that suits it, and the carry height."""
        cfg = self.config
        if self._bowl_z is None:
            self._bowl_z, self._start_mat = float(bowl[2]), mat.copy()
        self._side, toward = self._grasp_direction(state, bowl, after)
        # Fingers close along the grip site's x axis (measured: the finger bodies separate along it);
        # turn it (yaw) onto the radius `toward`, by the smaller angle that does (fingers are symmetric).
        closing = mat[:2, 0]
        angle = np.arctan2(toward[1], toward[0]) - np.arctan2(closing[1], closing[0])
        angle = (angle + np.pi / 2) % np.pi - np.pi / 2
        self._orientation = _yaw(angle) @ mat
        self._grasp_offset = np.array([*(cfg.grasp_radius * toward), cfg.grasp_height])
        self._lift_z = float(self._bowl_z + cfg.grasp_height + cfg.hover_height)

    def _grasp_direction(self, state: Mapping[str, Any], bowl: np.ndarray, after: int) -> tuple[int, np.ndarray]:
        """(side index, (2,) unit xy direction from the bowl centre to its grasp point).

        Towards the robot base if the outer finger lands clear of other objects there, else the
        first clear side among side_angles_deg (after index `after`), else the one with the most
        clearance.
        """
        cfg = self.config
        base = np.asarray(state["base_pos"], dtype=np.float64)[:2] - bowl[:2]
        base /= np.linalg.norm(base)
        others = np.asarray(state["other_pos"], dtype=np.float64).reshape(-1, 3)[:, :2]
        best, best_clear = (after + 1, base), -np.inf
        for index in range(after + 1, len(cfg.side_angles_deg)):
            direction = _yaw(np.deg2rad(cfg.side_angles_deg[index]))[:2, :2] @ base
            finger = bowl[:2] + (cfg.grasp_radius + cfg.finger_reach) * direction
            clear = np.min(np.linalg.norm(others - finger, axis=1)) if len(others) else np.inf
            if clear >= cfg.clearance:
                return index, direction
            if clear > best_clear:
                best, best_clear = (index, direction), clear
        return best

    def _hold(self, eef: np.ndarray) -> np.ndarray:
        """Position to keep while the gripper closes or opens (frozen at the phase start)."""
        if self._hold_pos is None:
            self._hold_pos = eef.copy()
        return self._hold_pos

    def _advance(self, done: bool) -> None:
        self._phase_steps += 1
        if (done or self._phase_steps >= self.config.max_phase_steps) and self.phase < len(_PHASES) - 1:
            self.phase += 1
            self._phase_steps = 0
            self._hold_pos = None
