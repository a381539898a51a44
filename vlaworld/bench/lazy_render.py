"""Simulation cost per env step with renders only where consumed vs rendering every step.

The evaluator's workers render every camera on step t only when the policy will read that
observation (chunk boundaries), and only the world camera for the world encoder's other frames (the
m+T−2 steps before a boundary): ``vlaworld.eval.worker.render_needed``. This drives one LIBERO env
through the same schedule (``LiberoEnv.set_render``) and through an every-step schedule, on the same
episode and the same actions, and reports the mean step cost of each. Memory modes differ only in W
(frames the world encoder needs), so each distinct schedule is simulated once and shared by the modes
that use it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import vlaworld.envs as ve
from vlaworld.eval.worker import ObservationNeeds, Render, render_argument, render_needed
from vlaworld.config.world import MEMORY_MODES
from vlaworld.world.memory import LATENT_MODES

WORLD_CAMERA = "observation.images.image"


@dataclass(frozen=True, kw_only=True)
class LazyRenderConfig:
    n_action_steps: int = 10
    steps: int = 30  # env steps timed per schedule (after the reset)
    window: int = 4  # m of the LIBERO world checkpoints (latent_suffix m4)
    context: int = 4  # T
    suite: str = "libero_spatial"
    task: int = 0
    episode: int = 0
    seed: int = 0


def world_frames(mode: str, cfg: LazyRenderConfig) -> int:
    """W = m+T−1 frames before a boundary in the modes that encode latents, else 0."""
    return cfg.window + cfg.context - 1 if mode in LATENT_MODES else 0


def schedule(cfg: LazyRenderConfig, w: int | None) -> list[Render]:
    """What steps 1..steps render; ``w=None`` means every camera on every step."""
    if w is None:
        return [Render.ALL] * cfg.steps
    needs = ObservationNeeds(cameras=True, world_frames=w, world_camera=WORLD_CAMERA if w else None)
    return [render_needed(t, cfg.n_action_steps, needs) for t in range(1, cfg.steps + 1)]


def _time_schedule(env: Any, flags: list[Render], actions: np.ndarray, episode: int) -> list[float]:
    env.set_render(True)
    env.reset(options={"episode": episode})
    out = []
    for flag, action in zip(flags, actions):
        env.set_render(render_argument(flag, WORLD_CAMERA))
        t0 = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        out.append(1000.0 * (time.perf_counter() - t0))
        if terminated or truncated:
            raise RuntimeError("the episode ended inside the timed window; use fewer steps")
    return out


def lazy_render_table(cfg: LazyRenderConfig, modes: Sequence[str] = MEMORY_MODES) -> dict[str, Any]:
    """{"full_step_ms", "per_mode": {mode: {world_frames, rendered_fraction, step_ms, speedup}}, ...}."""
    env = ve.make(cfg.suite, cfg.task)
    rng = np.random.default_rng(cfg.seed)
    actions = rng.uniform(-0.3, 0.3, (cfg.steps, 7)).astype(np.float32)
    actions[:, 6] = -1.0  # gripper open
    try:
        full = _time_schedule(env, schedule(cfg, None), actions, cfg.episode)
        by_w: dict[int, tuple[list[Render], list[float]]] = {}
        for mode in modes:
            w = world_frames(mode, cfg)
            if w not in by_w:
                flags = schedule(cfg, w)
                by_w[w] = (flags, _time_schedule(env, flags, actions, cfg.episode))
    finally:
        env.close()
    full_ms = float(np.mean(full))

    def median_of(kind: Render) -> float | None:
        times = [t for (flags, ts) in by_w.values() for t, f in zip(ts, flags) if f is kind]
        times += full if kind is Render.ALL else []
        return round(float(np.median(times)), 3) if times else None

    per_mode = {}
    for mode in modes:
        flags, times = by_w[world_frames(mode, cfg)]
        mean = float(np.mean(times))
        per_mode[mode] = {
            "world_frames": world_frames(mode, cfg),
            "rendered_fraction": sum(f is not Render.NONE for f in flags) / len(flags),  # any camera
            "world_camera_only_fraction": sum(f is Render.WORLD for f in flags) / len(flags),
            "step_ms": round(mean, 3), "speedup": round(full_ms / mean, 3),
        }
    return {
        "n_action_steps": cfg.n_action_steps, "steps": cfg.steps, "suite": cfg.suite, "task": cfg.task,
        "full_step_ms": round(full_ms, 3),
        "median_step_ms_rendered": median_of(Render.ALL),
        "median_step_ms_world_camera_only": median_of(Render.WORLD),
        "median_step_ms_skipped": median_of(Render.NONE),
        "per_mode": per_mode,
    }
