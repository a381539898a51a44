"""Success rate of the scripted libero_spatial expert, cameras off (cheap, no GPU).

    python tools/scripted_success.py --tasks 0,1,2 --episodes 20 [--out results.json]

Prints one line per episode and a JSON summary {task_id: {"n", "successes", "rate", "mean_steps"}}.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import vlaworld.envs as ve
from vlaworld.envs.scripted import ScriptedSpatialExpert

SUITE = "libero_spatial"


def run_episode(env: ve.LiberoEnv, expert: ScriptedSpatialExpert, episode: int) -> tuple[bool, int]:
    """One episode with the expert; returns (success, policy steps)."""
    env.reset(options={"episode": episode})
    expert.reset()
    while True:
        action = expert.act(env.privileged_state())
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return bool(info["is_success"]), int(info["steps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="0,1,2", help="comma-separated libero_spatial task ids")
    parser.add_argument("--episodes", type=int, default=20, help="episodes 0..N-1 per task")
    parser.add_argument("--out", default=None, help="write the JSON summary here too")
    args = parser.parse_args()

    summary: dict[str, dict[str, float]] = {}
    for task_id in (int(t) for t in args.tasks.split(",")):
        env = ve.make(SUITE, task_id, cameras=False)
        expert = ScriptedSpatialExpert()
        outcomes, steps = [], []
        for episode in range(args.episodes):
            start = time.perf_counter()
            success, n = run_episode(env, expert, episode)
            outcomes.append(success)
            steps.append(n)
            wall = time.perf_counter() - start
            print(f"task {task_id} episode {episode}: {'success' if success else 'failure'} "
                  f"in {n} steps ({wall:.1f} s)", flush=True)
        env.close()
        summary[str(task_id)] = {
            "n": len(outcomes),
            "successes": int(sum(outcomes)),
            "rate": float(np.mean(outcomes)),
            "mean_steps": float(np.mean(steps)),
        }
    text = json.dumps({"suite": SUITE, "per_task": summary}, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
