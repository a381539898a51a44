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


@pytest.mark.parametrize("trace", [False, True], ids=["lazy", "diagnostics_trace"])
def test_consumed_observations_equal_full_rendering(trace: bool) -> None:
    """With ``world_trace`` (--diagnostics) the world camera also renders at every step: the same observations
    are sent, plus every step's world frame exactly once, in order."""
    needs = ObservationNeeds(cameras=True, world_frames=W, world_camera=WORLD_CAMERA, world_trace=trace)
    spec = WorkerSpec(env_factory=ve.make, n_action_steps=N, needs=needs)
    actions = np.random.default_rng(5).uniform(-0.5, 0.5, (N * CHUNKS + 1, 7)).astype(np.float32)
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
        episode.step(actions[N * CHUNKS :])  # one step past the last boundary: its frame comes with the end
        done = episode.done()
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
    plan = [render_needed(t, N, needs) for t in range(N * CHUNKS + 2)]
    assert episode.rendered == sum(r is not Render.NONE for r in plan)
    assert Render.WORLD in plan  # the one-camera renders were exercised
    assert (Render.NONE in plan) != trace
    if trace:
        sent = np.concatenate([r.observation["observation.world_trace"] for r in requests] + [done.world_trace])
        np.testing.assert_array_equal(sent, np.stack([o[WORLD_CAMERA] for o in full]))
    else:
        assert done.world_trace is None and all("observation.world_trace" not in r.observation for r in requests)
