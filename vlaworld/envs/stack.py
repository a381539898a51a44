"""The simulator stack record written into every run, and a warning when it drifts from the pins."""

from __future__ import annotations

import os
import warnings
from importlib import metadata

from vlaworld.envs.constants import (
    DEFAULT_INIT_PROTOCOL,
    DUMMY_ACTION,
    IMAGE_SIZES,
    PRIOR_MODEL_LOADS,
    MAX_STEPS,
    N_INIT_STATES,
    SEED_BASE,
    SETTLE_STEPS,
    STACK_PINS,
    TASK_ORDER_INDEX,
)


class SimulatorStackWarning(UserWarning):
    """Installed simulator packages differ from the pinned, validated versions."""


def installed_versions() -> dict[str, str | None]:
    """Installed version of every pinned package (None when missing)."""
    found: dict[str, str | None] = {}
    for name in STACK_PINS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def stack_mismatches() -> dict[str, tuple[str | None, str]]:
    """{package: (installed, pinned)} for every package that differs from its pin."""
    installed = installed_versions()
    return {n: (installed[n], pin) for n, pin in STACK_PINS.items() if installed[n] != pin}


def warn_if_unpinned() -> None:
    """Warn (once per call site) when the simulator stack is not the one the checkpoints used."""
    mismatches = stack_mismatches()
    if not mismatches:
        return
    listed = ", ".join(f"{n} {have or 'missing'} (pinned {pin})" for n, (have, pin) in mismatches.items())
    fix = " ".join(f"{n}=={pin}" for n, (_, pin) in mismatches.items())
    warnings.warn(
        f"Simulator stack differs from the pins: {listed}. Results may not be comparable "
        f"(mujoco > 3.3.2 darkens libero_object and breaks libero_spatial task 5). "
        f"Fix: pip install {fix}",
        SimulatorStackWarning,
        stacklevel=2,
    )


def episode_recipe(init_protocol: str = DEFAULT_INIT_PROTOCOL) -> dict[str, object]:
    """The episode recipe as data (SPEC §7), for the run record."""
    if init_protocol == "lerobot-0.4.2":
        order = ["env.seed(seed)", "env.set_init_state(init[t][e % 50])", "env.reset()  # discards the init state"]
    else:
        order = ["env.seed(seed)", "env.reset()", "env.set_init_state(init[t][e % 50])"]
    return {
        "init_protocol": init_protocol,
        "seed": f"{SEED_BASE} + episode (unless reset(seed=...) is given)",
        "init_state": f"episode % {N_INIT_STATES}",
        "order": order,
        "settle_steps": SETTLE_STEPS,
        "settle_action": DUMMY_ACTION.tolist(),
        "max_steps": dict(MAX_STEPS),
        "success": "env.check_success() after a policy step terminates the episode",
        "image_size": IMAGE_SIZES[init_protocol],
        "image_orientation": "raw[::-1, ::-1] (180 deg, dataset orientation)",
        "state": "eef_pos | quat2axisangle(eef_quat) | gripper_qpos (float32, 8)",
        "task_text": "benchmark task.language",
        "task_order_index": TASK_ORDER_INDEX,
        "controller": "OSC_POSE delta, control_freq 20, hard_reset True",
        # LIBERO's property samplers pile up per model load; reset as the protocol's episode reset sees them.
        "model_loads_before_episode": PRIOR_MODEL_LOADS[init_protocol],
    }


def simulator_stack(init_protocol: str = DEFAULT_INIT_PROTOCOL) -> dict[str, object]:
    """JSON-able record of the simulator stack: versions, pins, GL backend and the episode recipe."""
    installed = installed_versions()
    return {
        "versions": installed,
        "pins": dict(STACK_PINS),
        "matches_pins": all(installed[n] == pin for n, pin in STACK_PINS.items()),
        "gl_backend": os.environ.get("MUJOCO_GL"),
        "recipe": episode_recipe(init_protocol),
    }
