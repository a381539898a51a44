"""Single-process cost of the LIBERO env: construction, reset, step with and without cameras.

    python tools/measure_env.py --suite libero_spatial --task 0 --steps 30

Prints JSON (seconds; medians over repeats). One process = one core's worth of simulation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import vlaworld.envs as ve


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="libero_spatial")
    parser.add_argument("--task", type=int, default=0)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per camera setting")
    parser.add_argument("--resets", type=int, default=3)
    args = parser.parse_args()

    env = ve.make(args.suite, args.task)
    ve.configure_headless_gl()  # not part of the construction cost
    construct = timed(env._simulator)  # OffScreenRenderEnv(...): model compile + GL context
    actions = np.random.default_rng(0).uniform(-1, 1, (args.steps, 7)).astype(np.float32)
    result: dict[str, object] = {"suite": args.suite, "task": args.task, "construct_s": construct}
    for cameras in (True, False):
        env.set_render(cameras)
        resets = [timed(lambda e=e: env.reset(options={"episode": e})) for e in range(args.resets)]
        steps = []
        for action in actions:
            steps.append(timed(lambda a=action: env.step(a)))
        tag = "cameras" if cameras else "no_cameras"
        result[f"reset_s_{tag}"] = statistics.median(resets)
        result[f"step_ms_{tag}"] = 1000 * statistics.median(steps)
    env.close()
    result["stack"] = ve.simulator_stack()["versions"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
