"""LIBERO environments for vlaworld (SPEC §7). Never imports torch or vlaworld.models.

Importing this package does not import mujoco or OpenGL; the GL backend is chosen on the first
reset() (or by calling configure_headless_gl() yourself).
"""

from vlaworld.envs.constants import DEFAULT_INIT_PROTOCOL, INIT_PROTOCOLS, MAX_STEPS, STACK_PINS, SUITES
from vlaworld.envs.libero_env import LiberoEnv, LiberoEnvConfig, make, side_by_side
from vlaworld.envs.rendering import HeadlessGLError, configure_headless_gl
from vlaworld.envs.scripted import ScriptedConfig, ScriptedSpatialExpert
from vlaworld.envs.stack import SimulatorStackWarning, simulator_stack, warn_if_unpinned
from vlaworld.envs.tasks import LiberoTask, load_task, num_tasks
from vlaworld.envs.video import EpisodeRecorder, write_video

__all__ = [
    "DEFAULT_INIT_PROTOCOL",
    "INIT_PROTOCOLS",
    "MAX_STEPS",
    "STACK_PINS",
    "SUITES",
    "EpisodeRecorder",
    "HeadlessGLError",
    "LiberoEnv",
    "LiberoEnvConfig",
    "LiberoTask",
    "ScriptedConfig",
    "ScriptedSpatialExpert",
    "SimulatorStackWarning",
    "configure_headless_gl",
    "load_task",
    "make",
    "num_tasks",
    "side_by_side",
    "simulator_stack",
    "warn_if_unpinned",
    "write_video",
]
