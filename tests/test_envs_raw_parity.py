"""The wrapper against raw LIBERO driven by the recipe written out here, independently of vlaworld.

Pixels and state must be identical after reset and after random actions (SPEC §7).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import vlaworld.envs as ve
from tests.test_envs_units import lerobot_quat2axisangle

pytestmark = pytest.mark.libero

N_RANDOM_STEPS = 5
# suite: (task_id, episode). Spatial task 4 opens a drawer: LIBERO's property samplers pile up per reset.
CASES = {"libero_spatial": (4, 7), "libero_object": (2, 53)}


def lerobot_axis_angle(quat: np.ndarray) -> np.ndarray:
    """LeRobot LiberoProcessorStep._quat2axisangle: float32 torch on a batch of one."""
    return lerobot_quat2axisangle(torch.from_numpy(np.asarray(quat, np.float64)[None]))[0].numpy()


def raw_features(obs: dict) -> dict[str, np.ndarray]:
    pos = np.asarray(obs["robot0_eef_pos"]).astype(np.float32)
    grip = np.asarray(obs["robot0_gripper_qpos"]).astype(np.float32)
    return {
        "observation.images.image": obs["agentview_image"][::-1, ::-1],
        "observation.images.image2": obs["robot0_eye_in_hand_image"][::-1, ::-1],
        "observation.state": np.concatenate([pos, lerobot_axis_angle(obs["robot0_eef_quat"]), grip]),
    }


def raw_rollout(suite: str, task_id: int, episode: int, actions: np.ndarray, legacy: bool = False,
                warmup_reset: bool = True):
    """Raw LIBERO as LeRobot drives it: build + reset once (LiberoEnv._make_envs_task), then
    seed 1000+e, hard reset, init[e % 50], 10 x [0,0,0,0,0,0,-1], then `actions`.
    Without ``warmup_reset``: the plain recipe on a freshly built env (libero_conventions §7.1)."""
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    bench = benchmark.get_benchmark_dict()[suite]()
    task = bench.get_task(task_id)
    init_states = bench.get_task_init_states(task_id)
    bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=256, camera_widths=256)
    try:
        if warmup_reset:
            env.reset()
        env.seed(1000 + episode)
        if legacy:  # LeRobot <= 0.4.2: the init state is set, then wiped by the hard reset
            env.set_init_state(init_states[episode % 50])
            env.reset()
        else:
            env.reset()
            env.set_init_state(init_states[episode % 50])
        for _ in range(10):
            obs, _, _, _ = env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
        frames, states = [raw_features(obs)], [env.get_sim_state()]
        for action in actions:
            obs, _, _, _ = env.step(action)
            frames.append(raw_features(obs))
            states.append(env.get_sim_state())
        return frames, states, task.language
    finally:
        env.close()


def wrapper_rollout(env: ve.LiberoEnv, episode: int, actions: np.ndarray):
    obs, info = env.reset(options={"episode": episode})
    frames, states = [obs], [env._sim.get_sim_state()]
    for action in actions:
        obs, _, _, _, info = env.step(action)
        frames.append(obs)
        states.append(env._sim.get_sim_state())
    return frames, states


def assert_same(wrapped: list[dict], raw: list[dict], sim_w: list, sim_r: list) -> None:
    assert len(wrapped) == len(raw)
    for i, (w, r) in enumerate(zip(wrapped, raw)):
        for key, value in r.items():
            assert w[key].dtype == value.dtype, (i, key)
            np.testing.assert_array_equal(w[key], value, err_msg=f"step {i} {key}")
        np.testing.assert_array_equal(sim_w[i], sim_r[i], err_msg=f"sim state at step {i}")


@pytest.mark.parametrize("suite", sorted(CASES))
def test_wrapper_matches_raw_libero(suite: str) -> None:
    task_id, episode = CASES[suite]
    actions = np.random.default_rng(0).uniform(-1, 1, (N_RANDOM_STEPS, 7)).astype(np.float32)
    raw_frames, raw_states, language = raw_rollout(suite, task_id, episode, actions)
    env = ve.make(suite, task_id)
    try:
        frames, states = wrapper_rollout(env, episode, actions)
    finally:
        env.close()
    assert frames[0]["task"] == language
    assert_same(frames, raw_frames, states, raw_states)


def test_fresh_env_protocol_matches_the_plain_recipe() -> None:
    """init_protocol="fresh-env": raw LIBERO built fresh, seeded, reset once (no LeRobot warm-up reset)."""
    task_id, episode = CASES["libero_spatial"]
    actions = np.random.default_rng(2).uniform(-1, 1, (2, 7)).astype(np.float32)
    raw_frames, raw_states, _ = raw_rollout("libero_spatial", task_id, episode, actions, warmup_reset=False)
    env = ve.make("libero_spatial", task_id, init_protocol="fresh-env")
    try:
        env.reset(options={"episode": episode + 1})  # a previous episode must not leak into the layout
        frames, states = wrapper_rollout(env, episode, actions)
    finally:
        env.close()
    assert_same(frames, raw_frames, states, raw_states)
    lerobot = raw_rollout("libero_spatial", task_id, episode, actions[:0])[0][0]["observation.images.image"]
    assert not np.array_equal(frames[0]["observation.images.image"], lerobot)  # the warm-up reset moves fixtures


def test_legacy_protocol_matches_raw_lerobot_042() -> None:
    suite, task_id, episode = "libero_spatial", 5, 4
    actions = np.random.default_rng(1).uniform(-1, 1, (2, 7)).astype(np.float32)
    raw_frames, raw_states, _ = raw_rollout(suite, task_id, episode, actions, legacy=True)
    env = ve.make(suite, task_id, init_protocol="lerobot-0.4.2")
    try:
        frames, states = wrapper_rollout(env, episode, actions)
        assert env._info["init_state"] is None
    finally:
        env.close()
    assert_same(frames, raw_frames, states, raw_states)
