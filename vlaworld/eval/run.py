"""Run (or resume) a list of episodes into a run directory: the evaluator as a library.

``run_eval`` holds the run directory's lock, checks a resume against run.json, runs what is left through
the scheduler, appends each finished episode to episodes.jsonl and writes the summary. The command line
(``vlaworld.eval.cli``) and plans build its arguments; tests call it with stand-in envs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from vlaworld.eval.episode import EpisodeId, shard
from vlaworld.eval.lock import run_dir_lock
from vlaworld.eval.progress import Progress
from vlaworld.eval.results import (
    POLICY_ERROR,
    SUMMARY_JSON,
    EpisodeRecord,
    EpisodeWriter,
    RunInfo,
    check_resume,
    episodes_path,
    read_episodes,
    write_run_info,
)
from vlaworld.eval.scheduler import ChunkPolicy, RunStats, Scheduler, SchedulerConfig
from vlaworld.eval.shards import PER_RANK_FIELDS, ShardInfo, merge_if_complete, shard_config
from vlaworld.eval.summary import write_summary

# Fields of run.json's config that may change between invocations without changing any outcome.
RESUME_IGNORE = ("label",)


@contextlib.contextmanager
def cpu_shared_with_workers(device: str, n_envs: int) -> Iterator[int | None]:
    """Torch threads for a CPU policy: the cores the env workers leave, restored on exit.

    Oversubscription with the workers' render threads slowed a chunk ~60x on 2 cores. OMP_NUM_THREADS,
    when set, wins. Yields the thread count used (None when untouched).
    """
    if not device.startswith("cpu") or os.environ.get("OMP_NUM_THREADS"):
        yield None
        return
    import torch

    previous = torch.get_num_threads()
    threads = max(1, (os.cpu_count() or 1) - n_envs)
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("vlaworld", "torch", "numpy", "gymnasium"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_eval(
    *,
    out: str | Path,
    config: Mapping[str, Any],
    episodes: Sequence[EpisodeId],
    policy: ChunkPolicy,
    scheduler: SchedulerConfig,
    checkpoint_hash: str | None = None,
    sim_stack: Mapping[str, Any] | None = None,
    progress: bool | None = None,
    extra: Mapping[str, Any] | None = None,
    on_record: Callable[[EpisodeRecord], None] | None = None,
    shard_info: ShardInfo | None = None,
) -> tuple[list[EpisodeRecord], RunStats]:
    """Run (or resume) the episodes into ``out``; returns the records and this invocation's stats.

    Under a shard (torchrun), this rank runs its share into its own directory and the run is merged
    into ``out`` by whichever rank completes it (vlaworld.eval.shards); the records returned are the
    rank's.
    """
    if shard_info is None or not shard_info.active:
        return _run_part(Path(out), config, episodes, policy, scheduler, checkpoint_hash=checkpoint_hash,
                         sim_stack=sim_stack, progress=progress, extra=extra, on_record=on_record)
    check_resume(out, config, checkpoint_hash=checkpoint_hash, sim_stack=sim_stack,
                 ignore=(*RESUME_IGNORE, *PER_RANK_FIELDS))
    part = shard(episodes, shard_info.rank, shard_info.world_size)
    result = _run_part(shard_info.run_dir(out), shard_config(config, shard_info), part, policy, scheduler,
                       checkpoint_hash=checkpoint_hash, sim_stack=sim_stack, progress=progress, extra=extra,
                       on_record=on_record)
    merge_if_complete(out, config, episodes, shard_info.world_size, checkpoint_hash=checkpoint_hash,
                      sim_stack=sim_stack, extra=extra, ignore=RESUME_IGNORE)
    return result


def _run_part(
    out: Path,
    config: Mapping[str, Any],
    episodes: Sequence[EpisodeId],
    policy: ChunkPolicy,
    scheduler: SchedulerConfig,
    *,
    checkpoint_hash: str | None,
    sim_stack: Mapping[str, Any] | None,
    progress: bool | None,
    extra: Mapping[str, Any] | None,
    on_record: Callable[[EpisodeRecord], None] | None,
) -> tuple[list[EpisodeRecord], RunStats]:
    with run_dir_lock(out):  # a second evaluator on this directory stops here
        stored = check_resume(out, config, checkpoint_hash=checkpoint_hash, sim_stack=sim_stack, ignore=RESUME_IGNORE)
        if stored is None:
            write_run_info(out, RunInfo(config=config, checkpoint_hash=checkpoint_hash, versions=versions(),
                                        sim_stack=sim_stack or {}, extra=dict(extra or {})))
        elif stored.config.get("label") != config.get("label"):  # the one field a resume may change
            write_run_info(out, dataclasses.replace(stored, config={**stored.config, "label": config.get("label")}))
        wanted = {e.key for e in episodes}
        done = [r for r in read_episodes(out).records if r.key in wanted] if episodes_path(out).exists() else []
        # Infrastructure errors run again; a policy error (non-finite actions) is the policy's own outcome.
        finished = {r.key for r in done if r.error is None or r.extra.get("error_kind") == POLICY_ERROR}
        todo = [e for e in episodes if e.key not in finished]
        bar = Progress(len(episodes), done, enabled=progress)
        stats = RunStats()
        try:
            with EpisodeWriter(out) as writer:
                def sink(record: EpisodeRecord) -> None:
                    writer.append(record)
                    bar.update(record)
                    if on_record is not None:
                        on_record(record)

                if todo:
                    stats = Scheduler(scheduler, policy).run(todo, sink)
        finally:
            bar.close()
        records = [r for r in read_episodes(out).records if r.key in wanted]
        if not todo:  # nothing ran: keep the throughput of the run that did, if its summary is readable
            write_summary(out, records, throughput=_previous_throughput(out), notes=["All episodes were already finished."])
            return records, stats
        throughput = stats.throughput(scheduler.n_envs)
        if policy.world_encoder_calls is not None and stats.env_steps:
            throughput["world_encoder_calls_per_env_step"] = policy.world_encoder_calls / stats.env_steps
        notes = [f"Throughput counts this invocation only ({stats.episodes} episodes run, "
                 f"{len(done)} kept from before)."]
        write_summary(out, records, throughput=throughput, notes=notes)
        return records, stats


def _previous_throughput(out: Path) -> dict[str, Any]:
    """The throughput section of an existing summary.json; a derived file never blocks a resume."""
    try:
        doc = json.loads((out / SUMMARY_JSON).read_text(encoding="utf-8"))
        return dict(doc.get("throughput", {})) if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


