"""The privileged scripted expert solves a fixed libero_spatial episode, with cameras off."""

from __future__ import annotations

import numpy as np
import pytest

import vlaworld.envs as ve
from vlaworld.envs.scripted import ScriptedSpatialExpert

pytestmark = pytest.mark.libero


def test_scripted_expert_succeeds_on_fixed_episode() -> None:
    env = ve.make("libero_spatial", 0, cameras=False, privileged_info=True)
    expert = ScriptedSpatialExpert()
    try:
        obs, info = env.reset(options={"episode": 0})
        assert not obs["observation.images.image"].any()  # nothing rendered
        expert.reset()
        terminated = truncated = False
        while not (terminated or truncated):
            action = expert.act(info["privileged"])  # the cross-process path: state travels in info
            assert action.shape == (7,) and action.dtype == np.float32 and np.abs(action).max() <= 1.0
            obs, reward, terminated, truncated, info = env.step(action)
        assert terminated and info["is_success"] and reward == 1.0
        assert info["steps"] < 150
    finally:
        env.close()
