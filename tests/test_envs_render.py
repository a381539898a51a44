"""The render hook: skipping camera renders changes neither physics nor later frames (SPEC §10)."""

from __future__ import annotations

import numpy as np
import pytest

import vlaworld.envs as ve

pytestmark = pytest.mark.libero

SUITE, TASK, EPISODE = "libero_spatial", 4, 2  # task 4 has a drawer: LIBERO's reset history matters
N_STEPS = 8
FIRST_RENDERED = 5  # steps 1..4 skip rendering, 5..8 render again


@pytest.fixture(scope="module")
def env():
    env = ve.make(SUITE, TASK)
    yield env
    env.close()


def rollout(env: ve.LiberoEnv, actions: np.ndarray, render_from: int) -> tuple[list[dict], list[np.ndarray]]:
    """Reset, then step; cameras are rendered at reset iff render_from == 0, and from step render_from on."""
    env.set_render(render_from == 0)
    obs, _ = env.reset(options={"episode": EPISODE})
    frames, states = [obs], [env._sim.get_sim_state()]
    for i, action in enumerate(actions, start=1):
        env.set_render(i >= render_from)
        obs, *_ = env.step(action)
        frames.append(obs)
        states.append(env._sim.get_sim_state())
    return frames, states


def test_skipped_renders_are_invisible(env: ve.LiberoEnv) -> None:
    actions = np.random.default_rng(3).uniform(-1, 1, (N_STEPS, 7)).astype(np.float32)
    full, full_states = rollout(env, actions, render_from=0)
    lazy, lazy_states = rollout(env, actions, render_from=FIRST_RENDERED)
    for i in range(N_STEPS + 1):
        np.testing.assert_array_equal(full_states[i], lazy_states[i], err_msg=f"physics differs at step {i}")
        np.testing.assert_array_equal(full[i]["observation.state"], lazy[i]["observation.state"])
        for camera in ("observation.images.image", "observation.images.image2"):
            if i >= FIRST_RENDERED:
                np.testing.assert_array_equal(full[i][camera], lazy[i][camera], err_msg=f"{camera} at step {i}")
            else:
                assert not lazy[i][camera].any(), f"{camera} should be blank at step {i}"
                assert full[i][camera].any()


def test_reset_renders_first_frame_when_cameras_on(env: ve.LiberoEnv) -> None:
    env.set_render(True)
    first, _ = env.reset(options={"episode": EPISODE})
    env.set_render(False)
    blank, _ = env.reset(options={"episode": EPISODE})
    env.set_render(True)
    assert not blank["observation.images.image"].any()
    np.testing.assert_array_equal(first["observation.state"], blank["observation.state"])
    again, _ = env.reset(options={"episode": EPISODE})
    np.testing.assert_array_equal(first["observation.images.image"], again["observation.images.image"])


def test_episode_does_not_depend_on_env_history(env: ve.LiberoEnv) -> None:
    """The module env has run this episode several times, with cameras toggled: a fresh env agrees."""
    env.set_render(True)
    used, _ = env.reset(options={"episode": EPISODE})
    fresh_env = ve.make(SUITE, TASK)
    try:
        fresh, _ = fresh_env.reset(options={"episode": EPISODE})
        np.testing.assert_array_equal(env._sim.get_sim_state(), fresh_env._sim.get_sim_state())
    finally:
        fresh_env.close()
    for key in ("observation.images.image", "observation.images.image2", "observation.state"):
        np.testing.assert_array_equal(used[key], fresh[key])


def test_one_camera_renders_alone(env: ve.LiberoEnv) -> None:
    """set_render with camera names renders those (bit-identical to full rendering) and blanks the rest."""
    actions = np.random.default_rng(4).uniform(-1, 1, (3, 7)).astype(np.float32)
    full, _ = rollout(env, actions, render_from=0)
    env.set_render(("observation.images.image",))
    assert env.cameras == {"observation.images.image"}
    first, _ = env.reset(options={"episode": EPISODE})
    partial = [first] + [env.step(action)[0] for action in actions]
    env.set_render(True)
    for i, obs in enumerate(partial):
        np.testing.assert_array_equal(obs["observation.images.image"], full[i]["observation.images.image"])
        assert not obs["observation.images.image2"].any(), f"the wrist camera rendered at step {i}"
    with pytest.raises(ValueError, match="Unknown camera"):
        env.set_render(("observation.images.wrist",))
