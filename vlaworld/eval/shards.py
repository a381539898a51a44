"""One evaluation split across processes, GPUs or nodes (SPEC §11), without a collective library.

``torchrun --nproc-per-node G [--nnodes ...] -m vlaworld.eval ...`` starts G copies; each reads its
rank from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE), runs every
WORLD_SIZE-th episode of the list (episode.shard) on its own GPU, and writes a complete run directory
of its own, ``RUN_DIR/shards/rankNNN/`` (run.json with the shard, episodes.jsonl, summary), so each
rank resumes on its own. Whichever rank finishes and finds every shard complete merges them into
``RUN_DIR/episodes.jsonl``, ``run.json`` and the summary; the merge is idempotent and written by
atomic renames, so two ranks finishing together write the same files. Episode identity alone seeds
an episode, so the merged results equal a one-process run. Nodes need a shared RUN_DIR.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlaworld.errors import UsageError
from vlaworld.eval.episode import EpisodeId
from vlaworld.eval.results import (
    SUMMARY_JSON,
    EpisodeRecord,
    EpisodeWriter,
    RunInfo,
    check_resume,
    episodes_path,
    read_episodes,
    write_run_info,
)
from vlaworld.eval.summary import write_summary

SHARDS_DIR = "shards"
# Each rank runs on its own GPU (cuda:LOCAL_RANK), so the run-level record may differ in these fields.
PER_RANK_FIELDS = ("device", "policy_config.device")


@dataclass(frozen=True, kw_only=True)
class ShardInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise UsageError(f"RANK={self.rank} must be in 0..WORLD_SIZE-1={self.world_size - 1}")
        if not 0 <= self.local_rank < self.local_world_size:
            raise UsageError(f"LOCAL_RANK={self.local_rank} must be below LOCAL_WORLD_SIZE={self.local_world_size}")

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def run_dir(self, run_dir: str | Path) -> Path:
        """This rank's own run directory (the run directory itself when not sharded)."""
        run_dir = Path(run_dir)
        return run_dir / SHARDS_DIR / f"rank{self.rank:03d}" if self.active else run_dir

    def device(self, device: str) -> str:
        """One GPU per rank: 'cuda' becomes 'cuda:LOCAL_RANK'; explicit indices and 'cpu' are kept."""
        return f"cuda:{self.local_rank}" if self.active and device == "cuda" else device


def from_env(environ: Mapping[str, str] = os.environ) -> ShardInfo:
    """The shard torchrun (or a launcher setting the same variables) assigned to this process."""
    def get(name: str, default: int) -> int:
        value = environ.get(name)
        try:
            return default if value in (None, "") else int(value)
        except ValueError as exc:
            raise UsageError(f"environment variable {name}={value!r} must be an integer") from exc

    world = get("WORLD_SIZE", 1)
    return ShardInfo(rank=get("RANK", 0), world_size=world, local_rank=get("LOCAL_RANK", 0),
                     local_world_size=get("LOCAL_WORLD_SIZE", 1))


def shard_config(config: Mapping[str, Any], shard: ShardInfo) -> dict[str, Any]:
    """A rank's run.json config: the run's, plus which shard (so a changed world size is refused)."""
    return {**config, "shard": {"rank": shard.rank, "world_size": shard.world_size}}


def merge_if_complete(
    run_dir: str | Path,
    config: Mapping[str, Any],
    episodes: Sequence[EpisodeId],
    world_size: int,
    *,
    checkpoint_hash: str | None = None,
    sim_stack: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    ignore: Sequence[str] = (),
) -> bool:
    """Merge every rank's results into run_dir once all episodes are done; False if some are missing."""
    run_dir = Path(run_dir)
    wanted = {e.key for e in episodes}
    records: dict[tuple[str, int, int], EpisodeRecord] = {}
    throughputs: list[dict[str, Any]] = []
    for rank in range(world_size):
        part = ShardInfo(rank=rank, world_size=world_size).run_dir(run_dir)
        if not episodes_path(part).is_file():
            return False
        for record in read_episodes(part).records:
            if record.key in wanted:
                records.setdefault(record.key, record)
        if (part / SUMMARY_JSON).is_file():
            throughputs.append(json.loads((part / SUMMARY_JSON).read_text(encoding="utf-8")).get("throughput", {}))
    if set(records) != wanted:
        return False
    check_resume(run_dir, config, checkpoint_hash=checkpoint_hash, sim_stack=sim_stack,
                 ignore=(*ignore, *PER_RANK_FIELDS))
    write_run_info(run_dir, RunInfo(config=config, checkpoint_hash=checkpoint_hash, sim_stack=sim_stack or {},
                                    extra={**(extra or {}), "merged_from_shards": world_size}))
    ordered = [records[e.key] for e in episodes]
    tmp = run_dir / f".episodes.merge.{os.getpid()}.jsonl"
    with EpisodeWriter(tmp) as writer:
        for record in ordered:
            writer.append(record)
    os.replace(tmp, episodes_path(run_dir))
    write_summary(run_dir, ordered, throughput=_combined(throughputs),
                  notes=[f"Merged from {world_size} shards under {SHARDS_DIR}/; throughput sums the ranks' "
                         "last invocations over the longest of their wall times."])
    return True


def _combined(throughputs: list[dict[str, Any]]) -> dict[str, float]:
    if not throughputs:
        return {}
    wall = max(float(t.get("wall_s", 0.0)) for t in throughputs) or 1e-9
    steps = sum(int(t.get("env_steps", 0)) for t in throughputs)
    eps = sum(int(t.get("episodes", 0)) for t in throughputs)
    return {"ranks": len(throughputs), "episodes": eps, "wall_s": round(wall, 3), "episodes_per_s": eps / wall,
            "env_steps": steps, "env_steps_per_s": steps / wall,
            "n_envs": sum(int(t.get("n_envs", 0)) for t in throughputs)}
