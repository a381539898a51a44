"""Episode identity, the episode list of a run, and the randomness that derives from identity alone.

An episode is (suite, task_id, episode index). The env derives its seed (1000 + e) and init state
(e % 50) from it; here we derive the rest: a per-episode ``torch.Generator`` seeded from a stable hash
of (suite, task, episode, --seed), which draws that episode's flow-matching noise, one
``[chunk_size, max_action_dim]`` tensor per chunk in order, and feeds the random memory modes. Nothing
depends on which worker ran the episode, which batch it shared or who its neighbours were, so every
configuration sees the same episodes and comparisons are paired (SPEC §8).

The hash is sha256 over a canonical text (not Python's ``hash``, which is salted per process).
torch is imported only where a generator is made, so env workers never import it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vlaworld.errors import UsageError

if TYPE_CHECKING:
    import torch

# Generator seeds are taken from the first 8 bytes of the digest, masked to 63 bits so that every
# torch version accepts them (manual_seed takes a signed 64-bit integer on some builds).
_SEED_MASK = (1 << 63) - 1
_HASH_VERSION = "vlaworld-episode-noise-v1"  # bump if the derivation ever changes (recorded in run.json)


@dataclass(frozen=True, kw_only=True, order=True)
class EpisodeId:
    """(suite, task_id, episode): the identity every random choice of an episode derives from."""

    suite: str
    task_id: int
    episode: int

    @property
    def key(self) -> tuple[str, int, int]:
        """The results store's key (vlaworld.eval.results.EpisodeKey)."""
        return (self.suite, self.task_id, self.episode)

    def __str__(self) -> str:
        return f"{self.suite}:{self.task_id}:{self.episode}"


def noise_seed(episode: EpisodeId, seed: int) -> int:
    """Stable 63-bit generator seed for an episode under the run's ``--seed``."""
    text = f"{_HASH_VERSION}|{episode.suite}|{episode.task_id}|{episode.episode}|{int(seed)}"
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & _SEED_MASK


def episode_generator(episode: EpisodeId, seed: int, device: str = "cpu") -> torch.Generator:
    """A fresh generator for the episode; create it at the episode start (and again on a retry)."""
    import torch

    generator = torch.Generator(device=device)
    generator.manual_seed(noise_seed(episode, seed))
    return generator


def chunk_noise(generators: Sequence[torch.Generator], chunk_size: int, max_action_dim: int) -> torch.Tensor:
    """[B, chunk_size, max_action_dim] float32: each row drawn from its own episode's generator."""
    from vlaworld.processing.noise import per_row_normal  # torch: only for neural policies

    device = generators[0].device if generators else "cpu"
    return per_row_normal((len(generators), chunk_size, max_action_dim), list(generators), device)


NOISE_DERIVATION = {
    "hash": f"sha256('{_HASH_VERSION}|suite|task_id|episode|seed')[:8] little-endian & (2**63-1)",
    "noise": "torch.randn((chunk_size, max_action_dim), generator=episode_generator) per chunk, in order",
}


# ----------------------------------------------------------------------------- task lists

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_tasks(text: str, n_tasks: int) -> tuple[int, ...]:
    """'0-9', '0,3,5-7' or 'all' -> sorted unique task ids, each checked against the suite's size."""
    text = text.strip()
    if text == "all":
        return tuple(range(n_tasks))
    ids: set[int] = set()
    for part in text.split(","):
        m = _RANGE.match(part.strip())
        if m is None:
            raise UsageError(f"--tasks {text!r}: {part!r} is not a task id or range; use e.g. '0-9' or '0,3,5-7'")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise UsageError(f"--tasks {text!r}: range {part!r} is empty (write low-high)")
        ids.update(range(lo, hi + 1))
    bad = sorted(i for i in ids if i >= n_tasks)
    if bad:
        raise UsageError(f"--tasks {text!r}: task ids {bad} do not exist; the suite has tasks 0..{n_tasks - 1}")
    return tuple(sorted(ids))


def episode_list(suite: str, tasks: Iterable[int], n_episodes: int) -> list[EpisodeId]:
    """Task-major order: all episodes of task 0, then task 1, ... (workers mostly keep their env)."""
    if n_episodes < 1:
        raise UsageError(f"--episodes must be >= 1, got {n_episodes}")
    return [EpisodeId(suite=suite, task_id=t, episode=e) for t in tasks for e in range(n_episodes)]


def shard(episodes: Sequence[EpisodeId], rank: int, world_size: int) -> list[EpisodeId]:
    """Rank ``rank``'s share of the episode list (SPEC §11): every world_size-th episode, by position.

    Deterministic and disjoint; the union over ranks is the whole list. Outcomes do not depend on the
    shard (identity alone seeds an episode), so merged shards equal a one-process run.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} must be in 0..{world_size - 1}")
    return list(episodes[rank::world_size])
