"""A closed loop of ``lerobot-eval`` 0.4.4 on LIBERO, replayed bit for bit through vlaworld's public API.

LeRobot runs its own ``rollout()`` (vector env of 2 episodes, its policy, processors and LIBERO env
processor) on a checkpoint it wrote, with the flow-matching noise of chunk k drawn from seed 100 + k.
vlaworld then runs the same episodes with ``vlaworld.envs.make`` and ``policy.act`` on a batch of the
same two episodes: every action and every state must be identical (not close: one ulp of state grows
to 3e-2 of action within 30 steps), and so must the last images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vlaworld
from tests.support import lerobot_layout as layout
from tests.oracle import Request, oracle_threads, python_044, run, write_hf_cache
from tests.oracle.cases import stats
from tests.support.tiny_checkpoint import VLM_REPO
from vlaworld import envs
from tests.support.tiny_models import TEST_SCHEDULE
from vlaworld import debug

pytestmark = [pytest.mark.slow, pytest.mark.libero, pytest.mark.oracle]

SUITE, TASKS, EPISODES, STEPS, NOISE_SEED = "libero_spatial", (0, 1), 2, 30, 100
INPUTS, OUTPUTS = layout.features()  # LIBERO's two 256² cameras, state 8, action 7
CONFIG = dict(  # the debug size with the tests' schedule; fp32 (transformers 4.57's shifted ids)
    **TEST_SCHEDULE, **debug.POLICY_FIELDS, vlm_model_name=VLM_REPO, device="cpu",
    input_features=INPUTS, output_features=OUTPUTS, load_vlm_weights=False,
)


def replay(ckpt, task_id: int) -> dict[str, np.ndarray]:
    """The same episodes through vlaworld: one env per episode, one batched act() per step."""
    policy = vlaworld.load_policy(ckpt, numerics="lerobot-0.4")
    n = policy.config.n_action_steps
    lib = [envs.make(SUITE, task_id, max_steps=STEPS) for _ in range(EPISODES)]
    obs = [env.reset(options={"episode": e})[0] for e, env in enumerate(lib)]
    actions, states = [], []
    try:
        for step in range(STEPS):
            batch = {k: np.stack([o[k] for o in obs]) for k in obs[0] if k != "task"}
            batch["task"] = [o["task"] for o in obs]
            noise = None
            if step % n == 0:
                g = torch.Generator().manual_seed(NOISE_SEED + step // n)
                noise = torch.randn(EPISODES, CONFIG["chunk_size"], CONFIG["max_action_dim"], generator=g)
            action = policy.act(batch, noise=noise)
            actions.append(action)
            states.append(batch["observation.state"])
            obs = [env.step(action[i])[0] for i, env in enumerate(lib)]
    finally:
        for env in lib:
            env.close()
    cameras = {k: v for k, v in batch.items() if k.startswith("observation.images.")}  # the last step's
    return {"actions": np.stack(actions, 1), "states": np.stack(states, 1), "last": cameras}


@pytest.fixture(scope="module")
def lerobot_rollouts(tmp_path_factory):
    python = python_044()
    hf = tmp_path_factory.mktemp("hf")
    write_hf_cache(hf, VLM_REPO, debug.write_vlm(tmp_path_factory.mktemp("vlm") / "vlm"))
    ckpt = tmp_path_factory.mktemp("ckpt") / "pretrained_model"
    save = Request("save_policy", {"dir": str(ckpt), "config": CONFIG, "seed": 21, "stats": stats()})
    rollouts = [Request("rollout", {"dir": str(ckpt), "suite": SUITE, "task_id": t, "n_envs": EPISODES,
                                    "steps": STEPS, "start_seed": 1000, "noise_seed": NOISE_SEED}) for t in TASKS]
    results = run(python, [save, *rollouts], hf_home=hf, extra_env={"MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"})
    return hf, ckpt, {t: results[1 + i] for i, t in enumerate(TASKS)}


@pytest.mark.parametrize("task_id", TASKS)
def test_closed_loop_replays_lerobot_eval_044_bit_for_bit(lerobot_rollouts, monkeypatch, task_id):
    hf, ckpt, results = lerobot_rollouts
    meta, ref = results[task_id]
    assert meta["seeds"] == [1000, 1001]
    monkeypatch.setenv("HF_HOME", str(hf))
    with oracle_threads():
        ours = replay(ckpt, task_id)
    np.testing.assert_array_equal(ours["states"], ref["states"].numpy())
    np.testing.assert_array_equal(ours["actions"], ref["actions"].numpy())
    for key, images in ours["last"].items():  # uint8 HWC here, float CHW / 255 in LeRobot
        expected = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        assert torch.equal(expected, ref[f"last/{key}"]), key
