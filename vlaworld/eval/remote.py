"""``--policy-server ws://HOST:PORT``: the evaluator's scheduler and results store with the policy behind a
server (``python -m vlaworld.serve``), so env workers run on CPU hosts and the policy on a GPU host.

Each running episode holds one connection, i.e. one session on the server. Its first request carries
``reset`` with ``session_id = noise_seed(episode, --seed)``: the seed of the generator the local
evaluator makes for that episode (vlaworld.eval.episode). The server draws the same numbers in the same
order (flow-matching noise per chunk, then random memory), so a served episode is the local episode:
bit-identical when each policy call is one row (server ``--max-batch 1``, local ``--max-batch 1``),
and otherwise equal up to the last bits that batched kernels change, as between local batch sizes.
The requests of all waiting workers are sent before any reply is read, so the server batches them.
Messages carry what the local evaluator passes to the policy: the boundary observation and the world
camera's frames for the encoder window. A retried episode resets its session: the same numbers again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vlaworld.errors import UsageError
from vlaworld.eval.episode import EpisodeId, noise_seed
from vlaworld.eval.policies import EpisodeTally
from vlaworld.eval.worker import ObservationNeeds
from vlaworld.serve.client import PolicyClient
from vlaworld.serve.errors import PolicyServerError

# Fields of run.json that a local run takes from the loaded policy; a served run takes them from the
# server's metadata, so the two record the same configuration.
METADATA_KEYS = ("features", "chunk_size", "n_action_steps", "policy", "config")


class RemoteChunkPolicy:
    """The scheduler's ChunkPolicy (vlaworld.eval.scheduler) for a policy behind a server."""

    min_batch = 1
    world_encoder_calls = None  # the server's encoder: counted there

    def __init__(self, url: str, *, seed: int, n_action_steps: int | None = None) -> None:
        self.url = url
        self.seed = seed
        first = PolicyClient(url)
        metadata = first.metadata
        missing = [k for k in METADATA_KEYS if k not in metadata]
        if missing:
            first.close()
            raise PolicyServerError(f"the server at {url} is not a vlaworld policy server (its metadata lacks "
                                    f"{missing}); run `python -m vlaworld.serve` there")
        self.metadata = metadata
        self.chunk_size = int(metadata["chunk_size"])
        self.n_action_steps = int(n_action_steps or metadata["n_action_steps"])
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise UsageError(f"--n-action-steps {self.n_action_steps} must be in 1..{self.chunk_size} (the served "
                             "policy's chunk size)")
        features = metadata["features"]
        env_names = {policy_name: env_name for env_name, policy_name in features.get("rename_map", {}).items()}
        frames = int(features["world_frames_needed"])
        camera = features["world_camera"]
        self.needs = ObservationNeeds(cameras=True, world_frames=frames,
                                      world_camera=env_names.get(camera, camera) if frames else None)
        self._idle: list[PolicyClient] = [first]
        self._clients: dict[EpisodeId, PolicyClient] = {}
        self._starting: set[EpisodeId] = set()  # episodes whose next request resets their session
        self._tally: dict[EpisodeId, EpisodeTally] = {}

    def run_fields(self) -> dict[str, Any]:
        """The policy fields of run.json, as ``vlaworld.eval.cli.build_policy`` records a local policy."""
        policy = dict(self.metadata["policy"])
        config = dict(self.metadata["config"])
        config["n_action_steps"] = policy["n_action_steps"] = self.n_action_steps  # as load_policy(n_action_steps=)
        return {**policy, "policy_config": config}

    def begin_episode(self, episode: EpisodeId) -> None:
        if episode not in self._clients:
            self._clients[episode] = self._idle.pop() if self._idle else PolicyClient(self.url)
        self._starting.add(episode)
        self._tally[episode] = EpisodeTally()

    def predict(self, episodes: Sequence[EpisodeId], observations: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        for episode, obs in zip(episodes, observations, strict=True):
            message = dict(obs)
            if episode in self._starting:
                message.update(reset=True, session_id=noise_seed(episode, self.seed))
            self._clients[episode].send(message)
        replies: list[dict[str, Any] | PolicyServerError] = []
        for episode in episodes:  # read every reply before raising: the connections stay in step
            try:
                replies.append(self._clients[episode].receive())
            except PolicyServerError as exc:
                replies.append(exc)
        errors = [r for r in replies if isinstance(r, PolicyServerError)]
        if errors:
            raise errors[0]
        out = []
        for episode, reply in zip(episodes, replies, strict=True):
            if episode in self._starting and reply.get("session", {}).get("seed") != noise_seed(episode, self.seed):
                raise PolicyServerError(f"the server at {self.url} did not seed episode {episode}'s session from its "
                                        f"id (reply: {reply.get('session')}); served noise would not be the episode's")
            self._starting.discard(episode)
            actions = np.asarray(reply["actions"], dtype=np.float32)[: self.n_action_steps]  # (n, action_dim)
            self._tally[episode].add(reply.get("memory") or {}, actions)
            out.append(actions)
        return out

    def end_episode(self, episode: EpisodeId) -> dict[str, Any]:
        client = self._clients.pop(episode, None)
        if client is not None:
            self._idle.append(client)
        self._starting.discard(episode)
        tally = self._tally.pop(episode, None)
        return tally.fields() if tally is not None else {}

    def close(self) -> None:
        for client in [*self._idle, *self._clients.values()]:
            client.close()
        self._idle, self._clients = [], {}
