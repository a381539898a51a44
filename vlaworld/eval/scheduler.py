"""The parent side of the evaluator: a global episode queue feeding N env worker processes.

- Slot refill: a worker that finishes an episode takes the next (task, episode) from the queue at
  once; nobody waits for the slowest episode of a batch.
- Batching: every policy call takes all workers currently waiting for a chunk (mixed tasks). While
  the policy computes, the other workers keep stepping the actions they already have, so inference
  overlaps simulation; when it returns, everyone who became ready meanwhile forms the next batch.
- Transfers stay lean: a worker sends an observation only at a chunk boundary (and only the entries
  the policy reads, see worker.ObservationNeeds); the parent sends n_action_steps actions at once.
- Faults: a worker that raises or dies is replaced by a fresh process and its episode is retried once
  from the start (its generator is re-created from identity, so the retry is the episode itself); a
  second failure becomes an ``error`` record, which never counts as a policy failure.

Results leave through ``on_record`` as soon as an episode finishes, so the caller can flush them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

import numpy as np

from vlaworld.envs.constants import N_INIT_STATES, SEED_BASE
from vlaworld.errors import UsageError, VlaworldError
from vlaworld.eval.episode import EpisodeId
from vlaworld.eval.results import INFRASTRUCTURE_ERROR, POLICY_ERROR, EpisodeRecord
from vlaworld.eval.worker import (
    WORLD_TRACE_KEY,
    Actions,
    ChunkRequest,
    EpisodeDone,
    ObservationNeeds,
    StartEpisode,
    WorkerFailed,
    WorkerSpec,
    worker_main,
)

MAX_ATTEMPTS = 2  # SPEC §8: an episode whose worker failed is retried once, then recorded as an error
JOIN_TIMEOUT_S = 10.0  # how long a stopping worker may take to close its simulator before it is killed
# A worker must answer each message (env build + reset, or one chunk of steps) within this time, else it
# is treated as hung (EGL readPixels hangs are known on H100/H200: reference/users_and_perf.md §0.3).
# Normal answers take seconds (build 4 s + reset 3.4 s; 50 camera steps 7.5 s); 600 s is for loaded hosts.
WORKER_TIMEOUT_S = 600.0


class WorkersBroken(VlaworldError, RuntimeError):
    """Episodes fail in the workers before any episode could finish: the setup is broken (GL, install,
    env factory), not one episode. Nothing is recorded for them, so a re-run after the fix runs them."""


class ChunkPolicy(Protocol):
    """What the scheduler drives: per-episode state lives in the policy, keyed by episode identity."""

    needs: ObservationNeeds
    n_action_steps: int
    min_batch: int  # rows a call needs (2 for the 'shuffle' memory mode); the scheduler waits for them
    world_encoder_calls: int | None  # V-JEPA clips encoded so far in this process; None: none counted here

    def begin_episode(self, episode: EpisodeId) -> None:
        """A (re)started episode: create its generator and any per-episode state."""

    def predict(self, episodes: Sequence[EpisodeId], observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        """One [n <= n_action_steps, action_dim] array per row, for a batch of boundary observations."""

    def end_episode(self, episode: EpisodeId) -> dict[str, Any]:
        """Forget the episode; returns extra fields for its record (e.g. memory stats).

        A policy whose ``needs.world_trace`` is set is called as ``end_episode(episode, last)`` after a
        finished episode, ``last`` holding the world-camera frames after its last chunk boundary.
        """

    def close(self) -> None:
        """Release what the policy holds outside this process (a served policy's connections)."""


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    n_envs: int
    env_factory: Callable[..., Any]  # top-level function, pickled by reference into the workers
    max_steps: int | None = None
    init_protocol: str = "lerobot-0.4.4"
    video_dir: str | None = None
    videos_per_task: int = 0  # record the first K episodes (by index) of every task
    # Rows per policy call; None = every waiting worker. 1 makes each row's float math independent of
    # its neighbours (batched kernels differ from single-row ones in the last bits), at a cost in speed.
    max_batch: int | None = None
    worker_timeout_s: float = WORKER_TIMEOUT_S
    start_method: str = "forkserver" if sys.platform.startswith("linux") else "spawn"

    def __post_init__(self) -> None:
        if self.n_envs < 1:
            raise UsageError(f"--n-envs must be >= 1, got {self.n_envs}")
        if self.max_batch is not None and self.max_batch < 1:
            raise UsageError(f"--max-batch must be >= 1, got {self.max_batch}")
        if self.start_method not in ("forkserver", "spawn"):
            raise ValueError("workers start with 'forkserver' or 'spawn' (fork would share GL/CUDA state)")


@dataclass(kw_only=True)
class RunStats:
    """Counters of this invocation (not of resumed episodes), for the summary's throughput section."""

    episodes: int = 0
    env_steps: int = 0
    wall_s: float = 0.0
    sim_s: float = 0.0  # summed over workers
    policy_calls: int = 0
    policy_rows: int = 0
    policy_s: float = 0.0
    rendered_steps: int = 0
    worker_restarts: int = 0
    errors: int = 0
    policy_errors: int = 0  # episodes stopped for non-finite actions
    # Per worker process: seconds from its start to its first answer (process start-up, env build, the
    # first reset). Paid once per process (a worker changing task builds again); it dominates short runs.
    setup_s: list[float] = field(default_factory=list)
    # Env steps and wall seconds of the episodes that were not their worker's first (those carry the set-up).
    later_steps: int = 0
    later_wall_s: float = 0.0

    def steady_rate(self, n_envs: int) -> float | None:
        """Env steps/s of n_envs set-up workers kept busy: a long run's rate, without the set-ups and the
        idle tail that dominate a short one (None until some worker finished a second episode)."""
        return n_envs * self.later_steps / self.later_wall_s if self.later_wall_s > 0 else None

    def throughput(self, n_envs: int) -> dict[str, float]:
        wall = max(self.wall_s, 1e-9)
        return {
            "episodes": self.episodes,
            "wall_s": round(self.wall_s, 3),
            "episodes_per_s": self.episodes / wall,
            "env_steps": self.env_steps,
            "env_steps_per_s": self.env_steps / wall,
            "n_envs": n_envs,
            "policy_calls": self.policy_calls,
            "mean_batch": self.policy_rows / self.policy_calls if self.policy_calls else 0.0,
            "policy_s": round(self.policy_s, 3),
            "sim_s_per_env_step": self.sim_s / self.env_steps if self.env_steps else 0.0,
            "rendered_fraction": self.rendered_steps / max(self.env_steps + self.episodes, 1),
            "worker_restarts": self.worker_restarts,
            "worker_setup_s_mean": round(sum(self.setup_s) / len(self.setup_s), 3) if self.setup_s else 0.0,
            "steady_env_steps_per_s": self.steady_rate(n_envs),
        }


@dataclass(kw_only=True)
class _Slot:
    index: int
    process: Any
    conn: Connection
    episode: EpisodeId | None = None
    started: float = 0.0
    sent_at: float = 0.0  # when the worker got its last message (watchdog)
    steps: int = 0
    waiting: ChunkRequest | None = None
    spawned: float = field(default_factory=time.perf_counter)
    answered: bool = False  # has the worker answered anything yet (its set-up is over)
    finished: int = 0  # episodes this worker process completed


@dataclass(kw_only=True)
class _State:
    queue: deque[EpisodeId]
    on_record: Callable[[EpisodeRecord], None]
    attempts: dict[EpisodeId, int] = field(default_factory=dict)
    task_text: dict[tuple[str, int], str] = field(default_factory=dict)  # for error records
    stats: RunStats = field(default_factory=RunStats)


class Scheduler:
    """Runs a list of episodes on N worker processes with one policy; see the module docstring."""

    def __init__(self, config: SchedulerConfig, policy: ChunkPolicy) -> None:
        self.config = config
        self.policy = policy
        self._ctx = mp.get_context(config.start_method)
        self._spec = WorkerSpec(
            env_factory=config.env_factory, n_action_steps=policy.n_action_steps, needs=policy.needs,
            max_steps=config.max_steps, init_protocol=config.init_protocol, video_dir=config.video_dir,
            render_threads=render_threads(config.n_envs),
        )
        self._slots: list[_Slot] = []

    # ------------------------------------------------------------------------------ workers
    def _spawn(self, index: int) -> _Slot:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=worker_main, args=(child_end, self._spec),
                                    name=f"vlaworld-env-{index}", daemon=True)
        process.start()
        child_end.close()  # so the parent sees EOF when the worker dies
        return _Slot(index=index, process=process, conn=parent_end)

    def _stop(self, slot: _Slot, *, kill: bool) -> None:
        if not kill:
            try:
                slot.conn.send(None)
            except (BrokenPipeError, ConnectionResetError, OSError):
                kill = True
        if kill and slot.process.is_alive():
            slot.process.kill()
        slot.process.join(JOIN_TIMEOUT_S)
        if slot.process.is_alive():
            slot.process.kill()
            slot.process.join()
        slot.conn.close()

    def close(self) -> None:
        """Stop all workers (also after an exception or Ctrl-C in the parent)."""
        for slot in self._slots:
            self._stop(slot, kill=slot.episode is not None)
        self._slots = []

    # ------------------------------------------------------------------------------ main loop
    def run(self, episodes: Sequence[EpisodeId], on_record: Callable[[EpisodeRecord], None]) -> RunStats:
        """Run every episode once (retrying worker faults once); records go to on_record as they finish."""
        state = _State(queue=deque(episodes), on_record=on_record)
        t0 = time.perf_counter()
        n = min(self.config.n_envs, len(episodes))
        self._slots = [self._spawn(i) for i in range(n)]
        try:
            for slot in self._slots:
                self._assign(slot, state)
            while any(s.episode is not None for s in self._slots):
                self._receive(state)
                self._infer(state)
        finally:
            state.stats.wall_s = time.perf_counter() - t0
            self.close()
        return state.stats

    def _assign(self, slot: _Slot, state: _State) -> None:
        if not state.queue:
            return
        episode = state.queue.popleft()
        state.attempts[episode] = state.attempts.get(episode, 0) + 1
        self.policy.begin_episode(episode)
        video = self.config.video_dir is not None and episode.episode < self.config.videos_per_task
        slot.episode, slot.started, slot.steps, slot.waiting = episode, time.perf_counter(), 0, None
        slot.sent_at = slot.started
        try:
            slot.conn.send(StartEpisode(suite=episode.suite, task_id=episode.task_id,
                                        episode=episode.episode, video=video))
        except (BrokenPipeError, ConnectionResetError):
            self._failed(slot, state, "worker process exited before it could start the episode")

    def _receive(self, state: _State) -> None:
        """Block until some worker reports, then take every message already available (max batching)."""
        busy = [s for s in self._slots if s.episode is not None and s.waiting is None]
        if not busy:
            return
        deadline = min(s.sent_at for s in busy) + self.config.worker_timeout_s
        wait([s.conn for s in busy] + [s.process.sentinel for s in busy],
             timeout=max(deadline - time.perf_counter(), 0.0))
        now = time.perf_counter()
        for slot in busy:
            try:
                if not slot.conn.poll():
                    if not slot.process.is_alive():
                        raise EOFError
                    if now - slot.sent_at > self.config.worker_timeout_s:
                        self._failed(slot, state, f"worker hung: no reply in {self.config.worker_timeout_s:g} s "
                                     "(killed); see --worker-timeout")
                    continue
                message = slot.conn.recv()
            except (EOFError, ConnectionResetError, OSError) as exc:
                slot.process.join(1.0)
                code = slot.process.exitcode
                self._failed(slot, state, f"worker process died (exit code {code}, {type(exc).__name__}) "
                             "during the episode")
                continue
            self._handle(slot, message, state)

    def _handle(self, slot: _Slot, message: object, state: _State) -> None:
        if not slot.answered:
            slot.answered = True
            state.stats.setup_s.append(time.perf_counter() - slot.spawned)
        if isinstance(message, ChunkRequest):
            state.stats.env_steps += message.steps - slot.steps
            slot.steps = message.steps
            slot.waiting = message
        elif isinstance(message, EpisodeDone):
            state.stats.env_steps += message.steps - slot.steps
            state.stats.sim_s += message.sim_s
            state.stats.rendered_steps += message.rendered_steps
            state.stats.episodes += 1
            wall_s = time.perf_counter() - slot.started
            if slot.finished:
                state.stats.later_steps += message.steps
                state.stats.later_wall_s += wall_s
            slot.finished += 1
            episode = slot.episode
            state.task_text[(episode.suite, episode.task_id)] = message.task
            if message.world_trace is not None:
                extra = dict(self.policy.end_episode(episode, {WORLD_TRACE_KEY: message.world_trace}))
            else:
                extra = dict(self.policy.end_episode(episode))
            extra.update(attempts=state.attempts[episode], rendered_steps=message.rendered_steps)
            if message.video is not None:
                extra["video"] = message.video
            state.on_record(EpisodeRecord(
                suite=episode.suite, task_id=episode.task_id, task=message.task, episode=episode.episode,
                seed=message.seed,
                init_state=message.init_state if message.init_state is not None else episode.episode % N_INIT_STATES,
                success=message.success, steps=message.steps, wall_s=round(wall_s, 4),
                error=None, extra=extra,
            ))
            slot.episode = None
            self._assign(slot, state)
        elif isinstance(message, WorkerFailed):
            self._failed(slot, state, message.traceback)
        else:
            raise TypeError(f"unexpected message {type(message).__name__} from worker {slot.index}")

    def _failed(self, slot: _Slot, state: _State, error: str) -> None:
        """Replace the worker; retry its episode once, else record the error (not a policy failure)."""
        episode = slot.episode
        print(f"vlaworld.eval: worker {slot.index} failed on episode {episode} "
              f"(attempt {state.attempts.get(episode, 0)}):\n{error}", file=sys.stderr)
        self._stop(slot, kill=True)
        fresh = self._spawn(slot.index)
        self._slots[self._slots.index(slot)] = fresh
        state.stats.worker_restarts += 1
        if episode is not None:
            self.policy.end_episode(episode)
            if state.attempts[episode] < MAX_ATTEMPTS:
                state.queue.appendleft(episode)
            elif state.stats.episodes == 0:
                raise WorkersBroken(
                    f"episode {episode} failed {state.attempts[episode]} times before any episode could finish, "
                    f"so the workers themselves look broken (no result was recorded). Calling the evaluator "
                    f"from your own script? Workers re-import it: guard the call with "
                    f"`if __name__ == \"__main__\":` (stdin scripts cannot work). Last error:\n{error}"
                )
            else:
                state.stats.errors += 1
                task = state.task_text.get((episode.suite, episode.task_id), "")
                state.on_record(_error_record(episode, task, error, state.attempts[episode],
                                              time.perf_counter() - slot.started))
        self._assign(fresh, state)

    def _policy_error(self, slot: _Slot, state: _State, task: str, nonfinite: int, n_actions: int) -> None:
        """The policy produced non-finite actions: record the episode as a policy error, unstepped, and go on."""
        episode = slot.episode
        extra = dict(self.policy.end_episode(episode))
        extra.update(attempts=state.attempts[episode], error_kind=POLICY_ERROR, nonfinite_actions=nonfinite)
        state.stats.policy_errors += 1
        error = (f"the policy produced {nonfinite} non-finite action(s) among the {n_actions} of the chunk at "
                 f"step {slot.steps}; they were not sent to the simulator and the episode was stopped. Check the "
                 "checkpoint's weights and normalisation stats.")
        state.on_record(_error_record(episode, task, error, state.attempts[episode],
                                      time.perf_counter() - slot.started, steps=slot.steps, extra=extra))
        slot.episode = None
        self._assign(slot, state)  # the worker starts the next episode over the abandoned one

    def _infer(self, state: _State) -> None:
        """Policy calls over every worker waiting for a chunk (mixed tasks), max_batch rows at a time."""
        waiting = [s for s in self._slots if s.waiting is not None]
        stepping = any(s.episode is not None and s.waiting is None for s in self._slots)
        if len(waiting) < self.policy.min_batch and stepping:
            return  # a stepping worker will soon wait too; the policy pads when none is left
        size = self.config.max_batch or max(len(waiting), 1)
        for start in range(0, len(waiting), size):
            self._infer_batch(waiting[start : start + size], state)

    def _infer_batch(self, group: list[_Slot], state: _State) -> None:
        t0 = time.perf_counter()
        chunks = self.policy.predict([s.episode for s in group], [s.waiting.observation for s in group])
        state.stats.policy_s += time.perf_counter() - t0
        state.stats.policy_calls += 1
        state.stats.policy_rows += len(group)
        for slot, chunk in zip(group, chunks, strict=True):
            task = str(slot.waiting.observation.get("task", ""))
            slot.waiting = None
            slot.sent_at = time.perf_counter()
            actions = np.ascontiguousarray(chunk[: self.policy.n_action_steps], dtype=np.float32)
            nonfinite = int((~np.isfinite(actions)).any(axis=1).sum())
            if nonfinite:  # never stepped: the simulator would turn NaN into a "failure"
                self._policy_error(slot, state, task, nonfinite, len(actions))
                continue
            try:
                slot.conn.send(Actions(actions=actions))
            except (BrokenPipeError, ConnectionResetError):
                pass  # its death shows up as EOF in the next _receive


def render_threads(n_envs: int) -> int:
    """Software-GL render threads per worker: the cores shared out (see worker.py, Threads)."""
    return max(1, (os.cpu_count() or 1) // n_envs)


def _error_record(episode: EpisodeId, task: str, error: str, attempts: int, wall_s: float, *, steps: int = 0,
                  extra: dict[str, Any] | None = None) -> EpisodeRecord:
    """A failed episode: success False but error set, so no success rate counts it. ``extra`` (with its
    ``error_kind``) defaults to an infrastructure failure's."""
    return EpisodeRecord(
        suite=episode.suite, task_id=episode.task_id, task=task, episode=episode.episode,
        seed=SEED_BASE + episode.episode, init_state=episode.episode % N_INIT_STATES,
        success=False, steps=steps, wall_s=round(wall_s, 4), error=error,
        extra={"attempts": attempts, "error_kind": INFRASTRUCTURE_ERROR} if extra is None else extra,
    )
