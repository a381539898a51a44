"""An env worker process: runs episodes the parent hands it, one chunk of actions at a time.

The simulator (and its GL context) is created here, inside the worker, never in the policy process
(SPEC §7: GL and CUDA in one process crash on H100/H200). The protocol over one duplex pipe:

  parent -> worker   StartEpisode(episode, video)   reset; reply ChunkRequest (or EpisodeDone)
                     Actions([n, 7])                step them; reply ChunkRequest at the next chunk
                                                    boundary, or EpisodeDone when the episode ends
                     None                           exit
  worker -> parent   ChunkRequest(obs)              only the entries the policy reads
                     EpisodeDone(...)               outcome of the episode
                     WorkerFailed(traceback)        an exception escaped; the worker then exits

Render only what is consumed (SPEC §10). Observation t (after t policy steps) is read at a chunk
boundary (t % n_action_steps == 0), with every camera; world policies also read the world camera's
frames of the W - 1 observations before it. So step t renders all cameras at a boundary, only the
world camera when 0 < (-t) % n_action_steps < W, nothing otherwise, and everything on every step of
a recorded video episode (render_needed); with diagnostics (``world_trace``) the world camera at every
step, each frame sent once with the next request or the episode's end. Skipped renders do not change later images
(LiberoEnv.set_render). The worker never imports the policy; it imports torch only for the state's
axis-angle, which must be LeRobot's own float32 torch arithmetic (vlaworld.envs.observation).

Threads: software GL (Mesa llvmpipe) starts one render thread per core in every worker by default;
with N workers and a CPU policy that oversubscribes the cores, and spinning threads then starve one
another (measured on 2 cores: 5.4 s per tiny-policy chunk instead of 0.08 s). Each worker therefore
gets LP_NUM_THREADS = cores // N unless the user set it.
"""

from __future__ import annotations

import enum
import os
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from vlaworld.config import IMAGE_PREFIX, STATE_KEY, TASK_KEY, WORLD_FRAMES_KEY

WORLD_TRACE_KEY = "observation.world_trace"  # --diagnostics: the world camera at every step since the last request
PRIVILEGED_KEY = "privileged"


@dataclass(frozen=True, kw_only=True)
class ObservationNeeds:
    """What a policy reads at a chunk boundary; the worker renders and sends exactly this."""

    cameras: bool  # observation.images.* of the boundary observation
    privileged: bool = False  # simulator state (scripted experts), sent under "privileged"
    world_frames: int = 0  # W: last W frames of `world_camera`, oldest first, repeat-padded at the start
    world_camera: str | None = None
    # --diagnostics: the world camera rendered at every step and sent as WORLD_TRACE_KEY (each step's frame
    # once, in order: with the request that follows it, or with EpisodeDone after the last boundary)
    world_trace: bool = False

    def __post_init__(self) -> None:
        if self.world_frames < 0:
            raise ValueError(f"world_frames must be >= 0, got {self.world_frames}")
        if (self.world_frames or self.world_trace) and not self.world_camera:
            raise ValueError("world_frames > 0 or world_trace needs world_camera (the feature name of the encoded camera)")


@dataclass(frozen=True, kw_only=True)
class WorkerSpec:
    """Everything a worker needs to build envs and run episodes; pickled once at process start."""

    env_factory: Callable[..., Any]  # vlaworld.envs.make or a stand-in with its signature (top-level function)
    n_action_steps: int
    needs: ObservationNeeds
    max_steps: int | None = None
    init_protocol: str = "lerobot-0.4.4"
    video_dir: str | None = None
    render_threads: int | None = None  # LP_NUM_THREADS for software GL (llvmpipe), unless already set


@dataclass(frozen=True, kw_only=True)
class StartEpisode:
    suite: str
    task_id: int
    episode: int
    video: bool = False


@dataclass(frozen=True, kw_only=True)
class Actions:
    actions: np.ndarray  # [n, action_dim] float32, n <= n_action_steps


@dataclass(frozen=True, kw_only=True)
class ChunkRequest:
    observation: dict[str, Any]
    steps: int  # policy steps taken so far in this episode


@dataclass(frozen=True, kw_only=True)
class EpisodeDone:
    task: str
    seed: int
    init_state: int | None  # None under the lerobot-0.4.2 protocol (init state discarded)
    success: bool
    steps: int
    sim_s: float  # seconds spent inside env.reset / env.step
    rendered_steps: int  # observations rendered with cameras (reset included)
    video: str | None = None
    world_trace: np.ndarray | None = None  # [n, H, W, 3]: world-camera frames after the last request (diagnostics)


@dataclass(frozen=True, kw_only=True)
class WorkerFailed:
    traceback: str


class Render(enum.IntEnum):
    """Which cameras observation t must carry; falsy when none."""

    NONE = 0
    WORLD = 1  # only the world camera (a frame of the world encoder's window)
    ALL = 2  # every camera (a chunk boundary the policy reads, or a recorded video frame)


def render_argument(render: Render, world_camera: str | None) -> bool | tuple[str, ...]:
    """``LiberoEnv.set_render``'s argument for a render plan entry."""
    return (world_camera,) if render is Render.WORLD else render is Render.ALL


def render_needed(t: int, n_action_steps: int, needs: ObservationNeeds) -> Render:
    """The cameras observation t (after t policy steps) must carry (module docstring)."""
    before_boundary = (-t) % n_action_steps  # steps until the next chunk boundary (0: t is one)
    if before_boundary == 0 and needs.cameras:
        return Render.ALL
    if before_boundary < needs.world_frames or needs.world_trace:
        return Render.WORLD
    return Render.NONE


class _Episode:
    """One running episode inside the worker: env, render schedule, world-frame history, video."""

    def __init__(self, env: Any, spec: WorkerSpec, start: StartEpisode) -> None:
        self.env, self.spec, self.start = env, spec, start
        self.frames: deque[np.ndarray] = deque(maxlen=max(spec.needs.world_frames, 1))
        self.trace: list[np.ndarray] = []  # world-camera frames not yet sent (needs.world_trace)
        self.recorder = None
        if start.video:
            from vlaworld.envs.video import EpisodeRecorder

            self.recorder = EpisodeRecorder()
        self.steps = 0
        self.sim_s = 0.0
        self.rendered = 0
        self.info: dict[str, Any] = {}

    def _render_for(self, t: int) -> Render:
        needs = self.spec.needs
        render = Render.ALL if self.recorder is not None else render_needed(t, self.spec.n_action_steps, needs)
        self.env.set_render(render_argument(render, needs.world_camera))
        return render

    def _seen(self, obs: dict[str, Any], rendered: Render) -> None:
        self.rendered += bool(rendered)
        if rendered and self.spec.needs.world_frames:
            self.frames.append(obs[self.spec.needs.world_camera])
        if self.spec.needs.world_trace:
            self.trace.append(np.array(obs[self.spec.needs.world_camera], copy=True))
        if self.recorder is not None:
            self.recorder.add(obs)

    def reset(self) -> dict[str, Any]:
        rendered = self._render_for(0)
        t0 = time.perf_counter()
        obs, self.info = self.env.reset(options={"episode": self.start.episode})
        self.sim_s += time.perf_counter() - t0
        self._seen(obs, rendered)
        return obs

    def step(self, actions: np.ndarray) -> tuple[dict[str, Any], bool]:
        """Step the actions in order; stop early when the episode ends. Returns (last obs, ended)."""
        obs: dict[str, Any] = {}
        for action in actions:
            rendered = self._render_for(self.steps + 1)
            t0 = time.perf_counter()
            obs, _, terminated, truncated, self.info = self.env.step(action)
            self.sim_s += time.perf_counter() - t0
            self.steps += 1
            self._seen(obs, rendered)
            if terminated or truncated:
                return obs, True
        return obs, False

    def request(self, obs: dict[str, Any]) -> ChunkRequest:
        """The boundary observation, reduced to what the policy reads."""
        needs = self.spec.needs
        out: dict[str, Any] = {STATE_KEY: obs[STATE_KEY], TASK_KEY: obs[TASK_KEY]}
        if needs.cameras:
            out.update({k: v for k, v in obs.items() if k.startswith(IMAGE_PREFIX)})
        if needs.privileged:
            out[PRIVILEGED_KEY] = self.env.privileged_state()
        if needs.world_frames:
            frames = list(self.frames)
            frames = [frames[0]] * (needs.world_frames - len(frames)) + frames  # repeat-pad at the start
            out[WORLD_FRAMES_KEY] = np.stack(frames)  # [W, H, W, 3] uint8, oldest first
        if needs.world_trace:
            out[WORLD_TRACE_KEY] = self._take_trace()
        return ChunkRequest(observation=out, steps=self.steps)

    def _take_trace(self) -> np.ndarray:
        frames, self.trace = self.trace, []
        return np.stack(frames)  # [n, H, W, 3] uint8, oldest first

    def done(self) -> EpisodeDone:
        success = bool(self.info.get("is_success", False))
        video = None
        if self.recorder is not None and self.spec.video_dir is not None:
            s = self.start
            directory = os.path.join(self.spec.video_dir, f"{s.suite}_task{s.task_id:02d}")
            video = self.recorder.write(directory, f"episode_{s.episode:04d}", success)
        return EpisodeDone(
            task=self.env.task.language, seed=int(self.info["seed"]), init_state=self.info.get("init_state"),
            success=success, steps=self.steps, sim_s=self.sim_s, rendered_steps=self.rendered, video=video,
            world_trace=self._take_trace() if self.spec.needs.world_trace else None,
        )


class _EnvCache:
    """Keeps the env of the last task: the queue is task-major, so a worker mostly stays on one task."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.key: tuple[str, int] | None = None
        self.env: Any = None

    def get(self, suite: str, task_id: int) -> Any:
        if self.key != (suite, task_id):
            self.close()
            self.env = self.spec.env_factory(
                suite, task_id, init_protocol=self.spec.init_protocol, max_steps=self.spec.max_steps,
                cameras=self.spec.needs.cameras, privileged_info=False,
            )
            self.key = (suite, task_id)
        return self.env

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
        self.env, self.key = None, None


def _serve(conn: Connection, spec: WorkerSpec) -> None:
    envs = _EnvCache(spec)
    episode: _Episode | None = None
    try:
        while True:
            message = conn.recv()
            if message is None:
                return
            if isinstance(message, StartEpisode):
                episode = _Episode(envs.get(message.suite, message.task_id), spec, message)
                conn.send(episode.request(episode.reset()))
            elif isinstance(message, Actions):
                if episode is None:
                    raise RuntimeError("Actions received with no episode running: parent protocol error")
                obs, ended = episode.step(message.actions)
                if ended:
                    conn.send(episode.done())
                    episode = None
                else:
                    conn.send(episode.request(obs))
            else:
                raise TypeError(f"unknown message {type(message).__name__} from the parent")
    finally:
        envs.close()


def worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """Process entry point. Exceptions stop here: reported to the parent with their traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it stops us)
    if spec.render_threads is not None:  # before the first reset creates the GL context
        os.environ.setdefault("LP_NUM_THREADS", str(spec.render_threads))
    try:
        _serve(conn, spec)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent is gone (killed or finished): nothing to report to
    except Exception:  # noqa: BLE001 - the process boundary: record and report, never swallow
        try:
            conn.send(WorkerFailed(traceback=traceback.format_exc()))
        except (BrokenPipeError, ConnectionResetError, EOFError):
            return
    finally:
        conn.close()
