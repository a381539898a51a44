"""Cheap stand-ins for the evaluator's tests: an env with LiberoEnv's interface and a chunk policy.

StandinEnv: a point moving towards a per-task goal; it succeeds within reach, truncates at max_steps.
Images are tiny and encode the observation index (t % 250 + 1), all-zero when cameras are off, so the
policy can check that every frame it reads was rendered and is the right one. ``textured`` images also
depend on the position and the episode (so world latents differ between episodes and follow the
actions), and ``frame_dir`` keeps every rendered first-camera frame of an episode for independent checks. Faults (raise or hard
exit at a given step, a given number of times across processes) exercise the worker restarts.

StandinPolicy: actions from the state plus each episode's own generator noise, so outcomes depend
on the noise and a batching or seeding bug shows up as a changed result.

``python -m tests.support.standins OUT ...`` runs the evaluator on them (the kill test's subprocess).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlaworld.eval.episode import EpisodeId, chunk_noise, episode_generator, episode_list
from vlaworld.eval.worker import ObservationNeeds

IMG = 8
IMAGE_KEYS = ("observation.images.image", "observation.images.image2")
DEFAULT_MAX_STEPS = 40
REACH = 0.15


@dataclass(frozen=True)
class _Task:
    language: str


@dataclass(frozen=True, kw_only=True)
class Fault:
    task_id: int
    episode: int
    mode: str  # "raise" (exception -> WorkerFailed), "exit" (os._exit: the process dies) or "hang"
    times: int = 1  # fail on the first `times` attempts
    at_step: int = 3


class StandinEnv:
    def __init__(self, suite: str, task_id: int, *, max_steps: int | None, cameras: bool,
                 faults: Sequence[Fault], marker_dir: str | None, step_sleep: float,
                 textured: bool = False, frame_dir: str | None = None) -> None:
        self.textured, self.frame_dir = textured, frame_dir
        self.suite, self.task_id = suite, task_id
        self.task = _Task(language=f"standin task {task_id}")
        self.max_steps = max_steps or DEFAULT_MAX_STEPS
        self.set_render(cameras)
        self.faults = faults
        self.marker_dir = marker_dir
        self.step_sleep = step_sleep
        self.goal = np.random.default_rng([7, task_id]).uniform(-1, 1, 3)

    def set_render(self, cameras: bool | Sequence[str]) -> None:
        """As LiberoEnv.set_render: all, none, or the named cameras (unknown names are an error)."""
        chosen = set(IMAGE_KEYS) if cameras is True else set() if cameras is False else set(cameras)
        if not chosen <= set(IMAGE_KEYS):
            raise ValueError(f"unknown cameras {sorted(chosen - set(IMAGE_KEYS))}")
        self.cameras = frozenset(chosen)

    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None):
        self.episode = int((options or {}).get("episode", 0))
        self.p = np.random.default_rng([task_seed(self.task_id), self.episode % 50]).uniform(-1, 1, 3)
        self.t = 0
        self.info = {"is_success": False, "episode": self.episode, "seed": 1000 + self.episode,
                     "init_state": self.episode % 50, "steps": 0}
        self._log("start")
        self.frames: list[np.ndarray] = []
        return self._obs(), dict(self.info)

    def _image(self, key: str) -> np.ndarray:
        if key not in self.cameras:
            return np.zeros((IMG, IMG, 3), np.uint8)
        img = np.full((IMG, IMG, 3), self.t % 250 + 1, np.uint8)
        if self.textured:  # pixel [0, 0] keeps the index; the rest follows the position and the episode
            grid = np.arange(IMG * IMG * 3, dtype=np.float64).reshape(IMG, IMG, 3)
            texture = 128 + 100 * np.sin(grid * (0.3 + 0.05 * self.episode) + 4 * self.p.sum() + 3 * self.p[0])
            img[1:] = texture[1:].astype(np.uint8)
        if key == IMAGE_KEYS[0] and self.frame_dir is not None:
            self.frames.append(img.copy())
        return img

    def _obs(self) -> dict[str, Any]:
        obs: dict[str, Any] = {k: self._image(k) for k in IMAGE_KEYS}
        obs["observation.state"] = np.concatenate([self.p, self.goal, [0.0, 0.0]]).astype(np.float32)
        obs["task"] = self.task.language
        return obs

    def step(self, action: np.ndarray):
        self.t += 1
        self._maybe_fail()
        if self.step_sleep:
            time.sleep(self.step_sleep)
        self.p = self.p + 0.1 * np.clip(np.asarray(action, np.float64)[:3], -1, 1)
        success = bool(np.linalg.norm(self.p - self.goal) < REACH)
        truncated = not success and self.t >= self.max_steps
        self.info.update(is_success=success, steps=self.t)
        obs = self._obs()
        if success or truncated:
            self._log("end")
            if self.frame_dir is not None:
                np.save(Path(self.frame_dir) / f"frames_{self.task_id}_{self.episode}.npy", np.stack(self.frames))
        return obs, float(success), success, truncated, dict(self.info)

    def _maybe_fail(self) -> None:
        for fault in self.faults:
            if (fault.task_id, fault.episode, fault.at_step) != (self.task_id, self.episode, self.t):
                continue
            marker = Path(self.marker_dir) / f"fault_{self.task_id}_{self.episode}"
            count = int(marker.read_text()) if marker.exists() else 0
            if count >= fault.times:
                continue
            marker.write_text(str(count + 1))
            if fault.mode == "exit":
                os._exit(3)
            if fault.mode == "hang":
                time.sleep(3600)
            raise RuntimeError(f"standin fault in task {self.task_id} episode {self.episode}")

    def _log(self, what: str) -> None:
        if self.marker_dir is not None:
            with open(Path(self.marker_dir) / "timeline.txt", "a") as f:
                f.write(f"{os.getpid()} {what} {self.task_id} {self.episode} {time.monotonic():.6f}\n")

    def privileged_state(self) -> dict[str, Any]:
        return {"p": self.p.copy(), "goal": self.goal.copy()}

    def close(self) -> None:
        pass


def task_seed(task_id: int) -> int:
    return 11 + task_id


@dataclass(frozen=True, kw_only=True)
class StandinFactory:
    """Picklable env factory with vlaworld.envs.make's signature."""

    faults: tuple[Fault, ...] = ()
    marker_dir: str | None = None
    step_sleep: float = 0.0
    textured: bool = False
    frame_dir: str | None = None

    def __call__(self, suite: str, task_id: int, *, init_protocol: str, max_steps: int | None,
                 cameras: bool, privileged_info: bool) -> StandinEnv:
        return StandinEnv(suite, task_id, max_steps=max_steps, cameras=cameras, faults=self.faults,
                          marker_dir=self.marker_dir, step_sleep=self.step_sleep, textured=self.textured,
                          frame_dir=self.frame_dir)


class StandinPolicy:
    """ChunkPolicy: steer to the goal in the state, plus identity-seeded noise; checks what it reads."""

    chunk_size = 6
    n_action_steps = 4
    min_batch = 1
    world_encoder_calls = None
    needs = ObservationNeeds(cameras=True, world_frames=2, world_camera=IMAGE_KEYS[0])

    def __init__(self, seed: int = 0, noise_scale: float = 1.5, predict_sleep: float = 0.0) -> None:
        self.seed, self.noise_scale, self.predict_sleep = seed, noise_scale, predict_sleep
        self.generators: dict[EpisodeId, Any] = {}
        self.batches: list[tuple[EpisodeId, ...]] = []

    def begin_episode(self, episode: EpisodeId) -> None:
        self.generators[episode] = episode_generator(episode, self.seed)

    def predict(self, episodes: Sequence[EpisodeId], observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        self.batches.append(tuple(episodes))
        time.sleep(self.predict_sleep)  # a slow model: workers become ready meanwhile and get batched
        noise = chunk_noise([self.generators[e] for e in episodes], self.chunk_size, 7).numpy()
        out = []
        for obs, eps in zip(observations, noise, strict=True):
            t = int(obs["observation.images.image"][0, 0, 0]) - 1  # the image encodes the obs index
            assert t >= 0, "the policy read a frame that was not rendered"
            assert int(obs["observation.images.image2"][0, 0, 0]) - 1 == t, "second camera not rendered"
            frames = obs["observation.world_frames"][:, 0, 0, 0].astype(int) - 1
            assert frames.tolist() == [max(t - 1, 0), t], f"world frames {frames} at observation {t}"
            state = np.asarray(obs["observation.state"], np.float64)
            steer = np.clip(3.0 * (state[3:6] - state[:3]), -1, 1)
            actions = np.zeros((self.chunk_size, 7), np.float32)
            actions[:, :3] = steer + self.noise_scale * eps[:, :3]
            out.append(actions)
        return out

    def end_episode(self, episode: EpisodeId) -> dict[str, Any]:
        self.generators.pop(episode, None)
        return {}

    def close(self) -> None:
        pass


def raw_keys(run_dir: str | Path) -> Counter:
    """Episode identities as written in episodes.jsonl, duplicates included (the reader hides them)."""
    lines = (Path(run_dir) / "episodes.jsonl").read_text().splitlines()
    return Counter((r["suite"], r["task_id"], r["episode"]) for r in map(json.loads, lines))


def outcomes(records) -> dict:
    """What must not depend on the schedule: per-episode outcome, seeds, and what was rendered."""
    return {r.key: (r.success, r.steps, r.seed, r.init_state, r.error, r.extra.get("rendered_steps")) for r in records}


def run_standin(out: str | Path, *, n_envs: int, tasks: Sequence[int], episodes: int, seed: int = 0,
                factory: StandinFactory | None = None, policy: StandinPolicy | None = None,
                max_batch: int | None = None, worker_timeout_s: float = 600.0, progress: bool | None = False,
                shard_info=None, device: str = "cpu"):
    """The evaluator on stand-ins: returns (records, stats) of run_eval."""
    from vlaworld.eval.run import run_eval
    from vlaworld.eval.scheduler import SchedulerConfig

    eps = episode_list("standin", tasks, episodes)
    config = {"suite": "standin", "tasks": list(tasks), "episodes": episodes, "seed": seed, "policy": "standin",
              "memory": None, "device": device}
    return run_eval(out=out, config=config, episodes=eps, policy=policy or StandinPolicy(seed=seed),
                    scheduler=SchedulerConfig(n_envs=n_envs, env_factory=factory or StandinFactory(),
                                              max_batch=max_batch, worker_timeout_s=worker_timeout_s),
                    progress=progress, shard_info=shard_info)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--n-envs", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=2)
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--step-sleep", type=float, default=0.0)
    ap.add_argument("--marker-dir", help="write the episode timeline (worker pids) here")
    args = ap.parse_args()
    from vlaworld.eval.shards import from_env

    run_standin(args.out, n_envs=args.n_envs, tasks=range(args.tasks), episodes=args.episodes,
                factory=StandinFactory(step_sleep=args.step_sleep, marker_dir=args.marker_dir),
                shard_info=from_env())  # RANK / WORLD_SIZE as torchrun sets them


if __name__ == "__main__":
    main()
