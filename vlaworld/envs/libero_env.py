"""LIBERO as a gymnasium.Env, exactly as LeRobot >= 0.4.4 evaluated the checkpoints (SPEC §7).

Episode (suite, task t, index e): env.seed(1000 + e) (np.random.seed: the hard reset samples fixture
poses from it), hard reset, set_init_state(init[t][e % 50]), 10 settle steps of [0,0,0,0,0,0,-1];
the observation after the 10th settle step starts the episode. Policy steps then run until
check_success() (terminated) or the suite's step limit (truncated).

The simulator (and its GL context) is built on the first reset, in whichever process calls it, so
an env can be made in a parent and handed to a forked or spawned worker.

Render hook (SPEC §10): robosuite renders a camera inside the camera's observable sensor
(RobotEnv._create_camera_sensors -> sim.render), once per control step. When the simulator is built
we wrap those sensors with a gate (robosuite's public `modify_observable(..., "sensor", ...)`), and
hard resets keep them (_hard_reset): a closed gate returns a zero image instead of calling
sim.render. Rendering never feeds back into physics, and an image depends only on the sim state at
the moment its sensor samples, so a frame rendered after any number of skipped renders is
bit-identical to the one full rendering gives (tests/test_envs_render.py). The hard reset,
set_init_state and settle steps render nothing except the last settle step, which yields the first
observation.
"""

from __future__ import annotations

import atexit
import gc
import os
import string
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from vlaworld.envs.constants import (
    ACTION_DIM,
    ACTION_HIGH,
    ACTION_LOW,
    CAMERAS,
    CONTROL_FREQ_HZ,
    DEFAULT_INIT_PROTOCOL,
    DUMMY_ACTION,
    IMAGE_SIZES,
    INIT_PROTOCOLS,
    PRIOR_MODEL_LOADS,
    MAX_STEPS,
    N_INIT_STATES,
    ROBOSUITE_HORIZON,
    SEED_BASE,
    SETTLE_STEPS,
    STATE_BOUND,
    STATE_DIM,
    STATE_KEY,
    TASK_KEY,
    TASK_TEXT_MAX_LENGTH,
)
from vlaworld.envs.mujoco_warnings import route_mujoco_warnings
from vlaworld.envs.observation import format_observation
from vlaworld.envs.rendering import configure_headless_gl
from vlaworld.envs.stack import warn_if_unpinned
from vlaworld.envs.tasks import LiberoTask, check_suite, load_task
from vlaworld.errors import UsageError

# Characters allowed in the task text (gymnasium's Text default is alphanumeric only, no spaces).
TASK_CHARSET = string.ascii_letters + string.digits + string.punctuation + " "
RESET_OPTIONS = frozenset({"episode"})

# Envs holding a simulator. At exit they are closed before robosuite's atexit eglTerminate (atexit is
# LIFO and ours is registered after the first GL context), so no EGL errors are printed at teardown.
_LIVE: weakref.WeakSet[LiberoEnv] = weakref.WeakSet()
_atexit_registered = False


def _close_live_envs() -> None:
    for env in list(_LIVE):
        env.close()


def render_selection(cameras: bool | Iterable[str]) -> frozenset[str]:
    """set_render's argument as the set of camera features to render; unknown names are an error."""
    if isinstance(cameras, (bool, np.bool_)):
        return frozenset(CAMERAS.values()) if cameras else frozenset()
    if isinstance(cameras, str):
        cameras = (cameras,)
    chosen = frozenset(cameras)
    unknown = chosen - set(CAMERAS.values())
    if unknown:
        raise ValueError(f"Unknown camera feature(s) {sorted(unknown)}; this env renders {sorted(CAMERAS.values())}")
    return chosen


@dataclass(frozen=True, kw_only=True)
class LiberoEnvConfig:
    """Everything that defines the env. `max_steps=None` resolves to the suite's limit."""

    suite: str
    task_id: int
    init_protocol: str = DEFAULT_INIT_PROTOCOL
    max_steps: int | None = None
    image_size: int | None = None  # None: the protocol's (256, or 360 for lerobot-0.6.1)
    cameras: bool = True  # initial render setting, see LiberoEnv.set_render
    privileged_info: bool = False  # add info["privileged"] (simulator state for scripted experts)

    def __post_init__(self) -> None:
        check_suite(self.suite)
        if self.init_protocol not in INIT_PROTOCOLS:
            raise UsageError(f"init_protocol {self.init_protocol!r} unknown; expected one of {INIT_PROTOCOLS}")
        if self.max_steps is None:
            object.__setattr__(self, "max_steps", MAX_STEPS[self.suite])
        if self.image_size is None:
            object.__setattr__(self, "image_size", IMAGE_SIZES[self.init_protocol])
        if not 0 < self.max_steps <= ROBOSUITE_HORIZON - SETTLE_STEPS:
            raise UsageError(
                f"max_steps={self.max_steps} must be in 1..{ROBOSUITE_HORIZON - SETTLE_STEPS} "
                f"(robosuite horizon {ROBOSUITE_HORIZON} minus {SETTLE_STEPS} settle steps)"
            )
        if self.image_size <= 0:
            raise UsageError(f"image_size must be positive, got {self.image_size}")


def observation_space(image_size: int) -> spaces.Dict:
    """Dict space: two (S, S, 3) uint8 cameras, (8,) float32 state, task text.

    The prompt is part of the observation (a policy batch needs it next to the images), so it gets a
    gymnasium Text space: check_env verifies every observation lies in its space, and Text is the
    space whose members are str. Its default charset is alphanumeric only, so we allow printable
    ASCII with spaces. Vector envs batch it as a Tuple of str.
    """
    image = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
    return spaces.Dict(
        {
            **{feature: image for feature in CAMERAS.values()},
            STATE_KEY: spaces.Box(-STATE_BOUND, STATE_BOUND, (STATE_DIM,), np.float32),
            TASK_KEY: spaces.Text(max_length=TASK_TEXT_MAX_LENGTH, min_length=1, charset=TASK_CHARSET),
        }
    )


class LiberoEnv(gym.Env):
    """One LIBERO task. reset(options={"episode": e}) applies the episode recipe (module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_FREQ_HZ}

    def __init__(self, config: LiberoEnvConfig, render_mode: str | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode {render_mode!r} unsupported; use None or 'rgb_array'")
        self.config = config
        self.render_mode = render_mode
        self.task: LiberoTask = load_task(config.suite, config.task_id)
        self.action_space = spaces.Box(ACTION_LOW, ACTION_HIGH, (ACTION_DIM,), np.float32)
        self.observation_space = observation_space(config.image_size)
        self._sim: Any = None  # libero OffScreenRenderEnv, built lazily by _simulator()
        self._sim_pid: int | None = None
        self._property_samplers: tuple[Any, ...] = ()  # one model load's LIBERO property samplers
        self._cameras = render_selection(config.cameras)
        self._render_now = True  # the gate the camera sensors read
        self._blank = np.zeros((config.image_size, config.image_size, 3), np.uint8)
        self._steps = 0
        self._episode_over = True
        self._info: dict[str, Any] = {}
        self._last_obs: dict[str, Any] | None = None

    # ----- lifecycle -------------------------------------------------------------------------
    def _simulator(self) -> Any:
        """The raw LIBERO env, built in this process on first use."""
        if self._sim is not None and self._sim_pid != os.getpid():
            raise RuntimeError(
                "This LiberoEnv's simulator (and GL context) was created in another process. Hand envs to "
                "workers before their first reset(), or make() them inside the worker."
            )
        if self._sim is None:
            configure_headless_gl()
            warn_if_unpinned()
            route_mujoco_warnings()
            from libero.libero.envs import OffScreenRenderEnv

            size = self.config.image_size
            self._sim = OffScreenRenderEnv(bddl_file_name=self.task.bddl_file, camera_heights=size, camera_widths=size)
            self._sim_pid = os.getpid()
            self._property_samplers = tuple(self._sim.env.object_property_initializers)
            self._gate_cameras(self._sim)  # once: hard resets keep these observables (_hard_reset)
            _LIVE.add(self)
            global _atexit_registered
            if not _atexit_registered:
                atexit.register(_close_live_envs)
                _atexit_registered = True
        return self._sim

    def close(self) -> None:
        """Free the simulator and its GL context now, while the GL library is still loaded."""
        sim, self._sim = self._sim, None
        _LIVE.discard(self)
        if sim is not None and self._sim_pid == os.getpid():
            sim.close()
            del sim
            gc.collect()  # robosuite frees the EGL context in __del__; do it before interpreter teardown
        self._sim_pid = None
        self._property_samplers = ()
        self._episode_over = True

    def __getstate__(self) -> dict[str, Any]:
        if self._sim is not None:
            raise TypeError(
                "A LiberoEnv cannot be pickled after its first reset() (it holds a simulator and GL context); "
                "pickle it before resetting, or call close() first."
            )
        return self.__dict__.copy()

    # ----- render hook ----------------------------------------------------------------------
    def set_render(self, cameras: bool | Iterable[str]) -> None:
        """Render camera images from the next step (or reset) on: all (True), none (False), or only the
        named camera features (e.g. ``("observation.images.image",)``; the others come back blank).

        A camera not rendered gives an all-zero image; a step costs ~190 ms here with both cameras,
        ~110 ms with one, ~16 ms with none. Images rendered after skipped steps are bit-identical to
        rendering every step.
        """
        self._cameras = render_selection(cameras)

    @property
    def cameras(self) -> frozenset[str]:
        """The camera features the next observation will carry rendered (empty: none)."""
        return self._cameras

    def _gate_cameras(self, sim: Any) -> None:
        """Wrap each camera sensor so that it renders only while the gate is open for its camera."""
        self._render_now = False  # modify_observable calls the new sensor once to check it
        robosuite_env = sim.env
        for camera, feature in CAMERAS.items():
            name = f"{camera}_image"
            observable = robosuite_env._observables[name]
            robosuite_env.modify_observable(name, "sensor", self._gated(observable._sensor, feature))

    def _gated(self, render: Callable[[dict], np.ndarray], feature: str) -> Callable[[dict], np.ndarray]:
        def gated(obs_cache: dict) -> np.ndarray:
            return render(obs_cache) if self._render_now and feature in self._cameras else self._blank

        gated.__modality__ = render.__modality__  # robosuite's @sensor marker
        return gated

    # ----- gymnasium API ---------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start episode options["episode"] (default 0) with env seed 1000 + episode, or `seed`."""
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - RESET_OPTIONS
        if unknown:
            raise ValueError(f"Unknown reset options {sorted(unknown)}; supported: {sorted(RESET_OPTIONS)}")
        episode = options.get("episode", 0)
        if isinstance(episode, (bool, np.bool_)) or not isinstance(episode, (int, np.integer)) or episode < 0:
            raise ValueError(f"options['episode'] must be an integer >= 0, got {episode!r}")
        episode = int(episode)
        env_seed = SEED_BASE + episode if seed is None else int(seed)
        init_index = episode % N_INIT_STATES
        raw = self._run_recipe(self._simulator(), env_seed, init_index)
        self._steps = 0
        self._episode_over = False
        self._info = {
            "is_success": False,
            "episode": episode,
            "seed": env_seed,
            # lerobot-0.4.2 discards the init state: the layout is the seeded BDDL sample.
            "init_state": None if self.config.init_protocol == "lerobot-0.4.2" else init_index,
            "steps": 0,
        }
        return self._observe(raw), self._info_now()

    def _run_recipe(self, sim: Any, env_seed: int, init_index: int) -> Mapping[str, np.ndarray]:
        init_state = self.task.init_states[init_index]
        self._render_now = False
        sim.seed(env_seed)
        if self.config.init_protocol == "lerobot-0.4.2":
            sim.set_init_state(init_state)
            self._hard_reset(sim)  # model rebuilt and re-sampled: the init state is gone
        else:
            self._hard_reset(sim)  # rebuilds the model (fixtures sampled from the seed)
            sim.set_init_state(init_state)
        raw: Mapping[str, np.ndarray] = {}
        for i in range(SETTLE_STEPS):
            self._render_now = bool(self._cameras) and i == SETTLE_STEPS - 1
            raw, _, _, _ = sim.step(DUMMY_ACTION)
        return raw

    def _hard_reset(self, sim: Any) -> None:
        """LIBERO's reset() (a hard reset) as LeRobot's episode reset sees it, keeping our cameras.

        LIBERO's property samplers pile up over model loads (constants.PRIOR_MODEL_LOADS): we set the
        pile to what the protocol's episode reset finds (LeRobot's by default), so the layout depends on
        the seed only.

        A hard reset rebuilds every observable's sensor, rendering each camera three times
        (robosuite checks new sensors by calling them, twice, then forces an observation). With
        use_camera_obs off during the reset it rebuilds only the non-camera sensors; the camera
        observables keep their gated sensors, whose render closure reads `env.sim` at call time and
        so renders the new simulation. Physics and later frames are unchanged (tests).
        """
        robosuite_env = sim.env
        loads = PRIOR_MODEL_LOADS[self.config.init_protocol]
        robosuite_env.object_property_initializers[:] = list(self._property_samplers) * loads
        robosuite_env.use_camera_obs = False
        try:
            sim.reset()
        finally:
            robosuite_env.use_camera_obs = True

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """One 20 Hz control step; terminated on success, truncated at the suite's step limit."""
        if self._sim is None or self._episode_over:
            raise RuntimeError("Call reset() before step(): no episode is running (or the last one ended).")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},), got {action.shape}")
        if not np.isfinite(action).all():
            raise ValueError(f"action {action.tolist()} is not finite; MuJoCo would integrate NaN and the episode "
                             "would read as an ordinary failure. Check the policy (weights, normalisation stats).")
        self._render_now = bool(self._cameras)
        raw, _, _, _ = self._simulator().step(action)
        self._steps += 1
        success = bool(self._sim.check_success())
        truncated = not success and self._steps >= self.config.max_steps
        self._episode_over = success or truncated
        self._info["is_success"] = success
        self._info["steps"] = self._steps
        return self._observe(raw), float(success), success, truncated, self._info_now()

    def _observe(self, raw: Mapping[str, np.ndarray]) -> dict[str, Any]:
        self._last_obs = format_observation(raw, self.task.language)
        return self._last_obs

    def _info_now(self) -> dict[str, Any]:
        info = dict(self._info)
        if self.config.privileged_info:
            info["privileged"] = self.privileged_state()
        return info

    def render(self) -> np.ndarray | None:
        """rgb_array: the last observation's cameras side by side, (S, 2S, 3) uint8."""
        if self.render_mode != "rgb_array" or self._last_obs is None:
            return None
        return side_by_side(self._last_obs)

    # ----- privileged simulator state (scripted experts, diagnostics) -------------------------
    def privileged_state(self) -> dict[str, Any]:
        """Current simulator state (not the observation, which robosuite samples early in a step).

        Keys: base_pos (3,) robot base, eef_pos (3,), eef_mat (3, 3), gripper_qpos (2,), object_names (objects of interest,
        BDDL order), object_pos (n, 3), object_quat (n, 4, wxyz as MuJoCo stores it), other_names and
        other_pos (m, 3) for the remaining movable objects (not fixtures).
        """
        if self._sim is None:
            raise RuntimeError("privileged_state() needs a running episode: call reset() first.")
        env = self._sim.env
        data = env.sim.data
        robot = env.robots[0]
        names = tuple(env.obj_of_interest)
        body_ids = [env.obj_body_id[n] for n in names]
        others = tuple(n for n in env.objects_dict if n not in names)  # movable objects only
        other_ids = [env.obj_body_id[n] for n in others]
        xmat = data.site_xmat[robot.eef_site_id].reshape(3, 3)
        return {
            "base_pos": np.array(data.body_xpos[env.sim.model.body_name2id(robot.robot_model.root_body)]),
            "eef_pos": np.array(data.site_xpos[robot.eef_site_id]),
            "eef_mat": np.array(xmat),
            "gripper_qpos": np.array(data.qpos[robot._ref_gripper_joint_pos_indexes]),
            "object_names": names,
            "object_pos": np.array(data.body_xpos[body_ids]),
            "object_quat": np.array(data.body_xquat[body_ids]),
            "other_names": others,
            "other_pos": np.array(data.body_xpos[other_ids]).reshape(-1, 3),
        }


def side_by_side(obs: Mapping[str, Any]) -> np.ndarray:
    """Both cameras of an observation next to each other: (S, 2S, 3) uint8, agentview left."""
    return np.concatenate([obs[feature] for feature in CAMERAS.values()], axis=1)


def make(
    suite: str,
    task_id: int,
    *,
    init_protocol: str = DEFAULT_INIT_PROTOCOL,
    max_steps: int | None = None,
    image_size: int | None = None,
    cameras: bool = True,
    privileged_info: bool = False,
    render_mode: str | None = None,
) -> LiberoEnv:
    """Build the env for task `task_id` of `suite` (LIBERO order). No simulator until reset()."""
    config = LiberoEnvConfig(
        suite=suite,
        task_id=task_id,
        init_protocol=init_protocol,
        max_steps=max_steps,
        image_size=image_size,
        cameras=cameras,
        privileged_info=privileged_info,
    )
    return LiberoEnv(config, render_mode=render_mode)
