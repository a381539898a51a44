"""Single-process cost of the LIBERO env: construction, reset, step with and without cameras.

    python tools/measure_env.py --suite libero_spatial --task 0 --steps 30

Prints JSON, medians over repeats: wall time and process CPU time (all threads; llvmpipe renders
with several). On a shared machine the CPU time is the better per-core cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import vlaworld.envs as ve


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def raw_baseline(bddl_file: str, actions: np.ndarray) -> dict[str, float]:
    """Raw LIBERO steps in the same process, with and without camera observations, for reference."""
    from libero.libero.envs import OffScreenRenderEnv

    out = {}
    for cameras in (True, False):
        raw = OffScreenRenderEnv(
            bddl_file_name=bddl_file, camera_heights=256, camera_widths=256, use_camera_obs=cameras
        )
        raw.seed(1000)
        raw.reset()
        steps = [timed(lambda a=action: raw.step(a)) for action in actions]
        raw.close()
        tag = "cameras" if cameras else "no_cameras"
        out[f"raw_step_ms_{tag}"] = 1000 * statistics.median(s[0] for s in steps)
        out[f"raw_step_cpu_ms_{tag}"] = 1000 * statistics.median(s[1] for s in steps)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="libero_spatial")
    parser.add_argument("--task", type=int, default=0)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per camera setting")
    parser.add_argument("--resets", type=int, default=3)
    args = parser.parse_args()

    env = ve.make(args.suite, args.task)
    ve.configure_headless_gl()  # not part of the construction cost
    construct, construct_cpu = timed(env._simulator)  # OffScreenRenderEnv(...): model compile + GL context
    actions = np.random.default_rng(0).uniform(-1, 1, (args.steps, 7)).astype(np.float32)
    result: dict[str, object] = {
        "suite": args.suite, "task": args.task, "construct_s": construct, "construct_cpu_s": construct_cpu
    }
    for cameras in (True, False):
        env.set_render(cameras)
        resets = [timed(lambda e=e: env.reset(options={"episode": e})) for e in range(args.resets)]
        steps = []
        for action in actions:
            steps.append(timed(lambda a=action: env.step(a)))
        tag = "cameras" if cameras else "no_cameras"
        result[f"reset_s_{tag}"] = statistics.median(r[0] for r in resets)
        result[f"reset_cpu_s_{tag}"] = statistics.median(r[1] for r in resets)
        result[f"step_ms_{tag}"] = 1000 * statistics.median(s[0] for s in steps)
        result[f"step_cpu_ms_{tag}"] = 1000 * statistics.median(s[1] for s in steps)
    env.close()
    result.update(raw_baseline(env.task.bddl_file, actions))
    result["stack"] = ve.simulator_stack()["versions"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
