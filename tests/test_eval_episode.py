"""Episode identity and the randomness derived from it; task lists; shards; the render schedule."""

from __future__ import annotations

import pytest
import torch

from vlaworld.eval.episode import (
    EpisodeId,
    chunk_noise,
    episode_generator,
    episode_list,
    noise_seed,
    parse_tasks,
    shard,
)
from vlaworld.eval.worker import ObservationNeeds, Render, render_needed


def ep(task: int, episode: int, suite: str = "libero_spatial") -> EpisodeId:
    return EpisodeId(suite=suite, task_id=task, episode=episode)


def test_noise_seed_is_stable_and_distinct() -> None:
    # Pinned: changing the derivation silently would unpair every stored run.
    assert noise_seed(ep(0, 0), 0) == noise_seed(ep(0, 0), 0)
    assert noise_seed(ep(3, 17), 0) == 9003062849674235295
    seeds = {noise_seed(ep(t, e, s), k) for t in range(3) for e in range(5) for s in ("a", "b") for k in (0, 1)}
    assert len(seeds) == 3 * 5 * 2 * 2
    assert all(0 <= s < 2**63 for s in seeds)


def test_row_noise_does_not_depend_on_batch_or_neighbours() -> None:
    a, b, c = ep(0, 1), ep(2, 5), ep(1, 0, "libero_goal")
    alone = chunk_noise([episode_generator(a, 0)], 5, 4)
    g = {e: episode_generator(e, 0) for e in (a, b, c)}
    batched = chunk_noise([g[b], g[a], g[c]], 5, 4)
    assert alone.shape == (1, 5, 4) and batched.shape == (3, 5, 4)
    assert torch.equal(batched[1], alone[0])
    # Chunks follow each other within an episode: the second chunk is the next draw of the same stream.
    second = chunk_noise([g[a]], 5, 4)[0]
    ref = episode_generator(a, 0)
    torch.randn((5, 4), generator=ref)
    assert torch.equal(second, torch.randn((5, 4), generator=ref))
    assert not torch.equal(chunk_noise([episode_generator(a, 1)], 5, 4), alone)  # --seed matters


def test_parse_tasks() -> None:
    assert parse_tasks("0-9", 10) == tuple(range(10))
    assert parse_tasks("all", 3) == (0, 1, 2)
    assert parse_tasks("5,0-2,2", 10) == (0, 1, 2, 5)
    with pytest.raises(ValueError, match="do not exist"):
        parse_tasks("8-10", 10)
    with pytest.raises(ValueError, match="not a task id"):
        parse_tasks("a-b", 10)
    with pytest.raises(ValueError, match="empty"):
        parse_tasks("3-1", 10)


def test_episode_list_and_shards() -> None:
    eps = episode_list("libero_spatial", (0, 2), 3)
    assert [(e.task_id, e.episode) for e in eps] == [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1), (2, 2)]
    shards = [shard(eps, r, 4) for r in range(4)]
    assert sorted(e for s in shards for e in s) == sorted(eps)
    assert sum(len(s) for s in shards) == len(eps)


@pytest.mark.parametrize(
    ("n", "w", "cameras", "every_camera", "world_camera_only"),
    [
        (10, 0, True, [0, 10, 20], []),  # plain policy: boundaries only
        (10, 4, True, [0, 10, 20], [7, 8, 9, 17, 18, 19]),  # world: the 3 frames before a boundary, one camera
        (1, 0, True, list(range(21)), []),
        (10, 0, False, [], []),  # scripted: never
        (3, 5, True, list(range(0, 21, 3)), [t for t in range(21) if t % 3]),  # window longer than a chunk
        (10, 2, False, [], [0, 9, 10, 19, 20]),  # world frames without the boundary cameras
    ],
)
def test_render_schedule(n: int, w: int, cameras: bool, every_camera: list[int], world_camera_only: list[int]) -> None:
    needs = ObservationNeeds(cameras=cameras, world_frames=w, world_camera="observation.images.image" if w else None)
    plan = [render_needed(t, n, needs) for t in range(21)]
    assert [t for t, r in enumerate(plan) if r is Render.ALL] == every_camera
    assert [t for t, r in enumerate(plan) if r is Render.WORLD] == world_camera_only
    assert all(bool(r) == (r is not Render.NONE) for r in plan)


def test_world_camera_in_env_names() -> None:
    """A checkpoint that renames env cameras gets its world frames from the env's camera."""
    from vlaworld.eval.policies import env_feature

    rename = {"observation.images.image": "observation.images.top"}  # env name -> checkpoint name
    assert env_feature(rename, "observation.images.top") == "observation.images.image"
    assert env_feature({}, "observation.images.image") == "observation.images.image"
