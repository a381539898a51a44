"""What a worker sends the policy under lazy rendering equals what rendering every camera every step gives.

Drives the worker's episode logic (worker._Episode) on a real LIBERO env with a world policy's needs
(boundary cameras plus the world camera's last W frames), and compares every chunk request with a
reference rollout of the same actions that renders both cameras on every step.
"""

from __future__ import annotations

import numpy as np
import pytest

import vlaworld.envs as ve
from vlaworld.eval.worker import ObservationNeeds, Render, StartEpisode, WorkerSpec, _Episode, render_needed

pytestmark = pytest.mark.libero

SUITE, TASK, EPISODE = "libero_spatial", 1, 3
N, W, CHUNKS = 4, 3, 3
WORLD_CAMERA = "observation.images.image"
CAMERA_KEYS = ("observation.images.image", "observation.images.image2")


def test_consumed_observations_equal_full_rendering() -> None:
    needs = ObservationNeeds(cameras=True, world_frames=W, world_camera=WORLD_CAMERA)
    spec = WorkerSpec(env_factory=ve.make, n_action_steps=N, needs=needs)
    actions = np.random.default_rng(5).uniform(-0.5, 0.5, (N * CHUNKS, 7)).astype(np.float32)
    env = ve.make(SUITE, TASK)
    try:
        env.set_render(True)
        full = [env.reset(options={"episode": EPISODE})[0]]
        full += [env.step(action)[0] for action in actions]

        episode = _Episode(env, spec, StartEpisode(suite=SUITE, task_id=TASK, episode=EPISODE))
        requests = [episode.request(episode.reset())]
        for k in range(CHUNKS):
            obs, ended = episode.step(actions[k * N : (k + 1) * N])
            assert not ended
            requests.append(episode.request(obs))
    finally:
        env.close()

    for k, request in enumerate(requests):
        t = k * N
        assert request.steps == t
        sent = request.observation
        np.testing.assert_array_equal(sent["observation.state"], full[t]["observation.state"])
        for key in CAMERA_KEYS:
            np.testing.assert_array_equal(sent[key], full[t][key], err_msg=f"{key} at boundary {t}")
        window = [full[max(i, 0)][WORLD_CAMERA] for i in range(t - W + 1, t + 1)]  # repeat-padded at the start
        np.testing.assert_array_equal(sent["observation.world_frames"], np.stack(window), err_msg=f"window at {t}")
    plan = [render_needed(t, N, needs) for t in range(N * CHUNKS + 1)]
    assert episode.rendered == sum(r is not Render.NONE for r in plan)
    assert Render.WORLD in plan  # the one-camera renders were exercised
