"""Dynamic batching across connections: fewer policy calls than requests, each session's actions what it
gets alone (its own generator and frame history), and no client can stall the others."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

from tests.support.serve_support import count_calls, load_demo, max_abs, observation
from vlaworld.serve import PolicyServer, ServeConfig
from vlaworld.serve.client import PolicyClient
from vlaworld.serve.engine import PolicyEngine, Row
from vlaworld.serve.metadata import observation_spec
from vlaworld.serve.observation import parse_request
from vlaworld.serve.session import Session

N_CLIENTS = 4
ROUNDS = 3


@pytest.fixture(scope="module")
def demo_policy():
    return load_demo()


def run_clients(server: PolicyServer, n: int, rounds: int, together: bool) -> list[list[np.ndarray]]:
    """n sessions (ids 100+i), each sending `rounds` observations: all at once, or one client after another
    (each then alone on the server: a connection is open only while its client works)."""
    out: list[list[np.ndarray]] = [[] for _ in range(n)]
    barrier = threading.Barrier(n)

    def work(i: int) -> None:
        with PolicyClient(server.url) as client:
            for r in range(rounds):
                message = observation(10 * i + r)
                if r == 0:
                    message |= {"reset": True, "session_id": 100 + i}
                if together:
                    barrier.wait()
                out[i].append(client.infer(message)["actions"])
            if together:
                barrier.wait()  # nobody leaves early (an open connection is one the batch may wait for)

    if together:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    else:
        for i in range(n):
            work(i)
            deadline = time.monotonic() + 30
            while server.open_connections:  # the server has seen the close: the next client is alone
                assert time.monotonic() < deadline, "the server never saw a client close its connection"
                time.sleep(0.01)
    return out


def test_concurrent_sessions_share_policy_calls_and_keep_their_own_numbers():
    policy = load_demo()
    sizes = count_calls(policy)
    # A long window: the batch closes when every open connection has asked (or max_batch), not by time.
    with PolicyServer(policy, ServeConfig(host="127.0.0.1", port=0, window_ms=2000, max_batch=N_CLIENTS)) as srv:
        alone = run_clients(srv, N_CLIENTS, ROUNDS, together=False)
        assert sizes == [1] * (N_CLIENTS * ROUNDS)
        sizes.clear()
        together = run_clients(srv, N_CLIENTS, ROUNDS, together=True)
    requests = N_CLIENTS * ROUNDS
    assert sum(sizes) == requests and len(sizes) < requests, f"policy calls {sizes} for {requests} requests"
    assert max(sizes) > 1
    # Per-session generators: a batched row gets its own noise, so its actions are its solo actions up to
    # the last bits that batched kernels change (~2e-7 on this CPU); another session's noise moves them by O(1).
    diff = max_abs([a for s in alone for a in s], [a for s in together for a in s])
    print(f"policy calls {sizes}; max |batched - alone| {diff:.3g}")
    assert diff < 1e-5
    assert max_abs(alone[0], alone[1]) > 1e-2


def test_single_row_calls_are_bit_identical_whatever_the_other_clients_do():
    policy = load_demo()
    sizes = count_calls(policy)
    with PolicyServer(policy, ServeConfig(host="127.0.0.1", port=0, max_batch=1)) as srv:
        alone = run_clients(srv, 3, 2, together=False)
        together = run_clients(srv, 3, 2, together=True)
    assert set(sizes) == {1}
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(np.stack(a), np.stack(b))


def test_a_stalled_or_vanished_client_does_not_hold_up_the_others(demo_policy):
    with PolicyServer(demo_policy, ServeConfig(host="127.0.0.1", port=0, window_ms=50)) as srv:
        # Stalled: a client that connected and sent half of a frame, then nothing.
        stalled = PolicyClient(srv.url)
        stalled._ws.socket.sendall(b"\x82\xfe\x10\x00" + b"\x00" * 4 + b"\x00" * 100)  # 4096-byte frame, 100 sent
        # Vanished: a client that sent a request and closed before its reply.
        gone = PolicyClient(srv.url)
        gone.send(observation(1))
        gone._ws.socket.shutdown(socket.SHUT_RDWR)
        gone._ws.socket.close()
        # Silent: connected, never asks (it counts as open, so batches wait out the window for it: 50 ms).
        silent = PolicyClient(srv.url)
        with PolicyClient(srv.url) as ok:
            for i in range(3):
                assert ok.infer(observation(i))["actions"].shape == (50, 7)
        assert srv.stats.errors == 0
        silent.close()
        stalled._ws.socket.close()


class FaultyPolicy:
    """The real demo policy, made to raise on one task text (a fault the checks cannot foresee)."""

    def __init__(self, policy) -> None:
        self.policy = policy

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def predict_chunk(self, batch, noise=None, memory=None, generators=None):
        if "poison" in batch["task"]:
            raise RuntimeError("poisoned task")
        return self.policy.predict_chunk(batch, noise=noise, memory=memory, generators=generators)


def test_a_failing_row_gets_the_error_and_its_batch_neighbours_their_chunks(demo_policy):
    engine = PolicyEngine(FaultyPolicy(demo_policy))
    spec = observation_spec(engine.policy)
    sessions = [Session(id=i, frames_needed=spec.world_frames) for i in range(3)]
    texts = ["fine", "poison", "fine too"]
    rows = [Row(session=s, request=parse_request({**observation(i), "task": t}, spec), received=0.0)
            for i, (s, t) in enumerate(zip(sessions, texts))]
    results = engine.run(rows)
    assert isinstance(results[1], RuntimeError) and "poisoned" in str(results[1])
    assert [s.chunks for s in sessions] == [1, 0, 1]  # the failed request left its session as it was
    assert engine.stats.policy_calls == 2 and engine.stats.failed_calls == 2  # the batch, then row 1 alone
    for i in (0, 2):  # each neighbour's chunk is what it gets alone, from a fresh session with its id
        solo = PolicyEngine(demo_policy).run([Row(session=Session(id=i, frames_needed=spec.world_frames), request=rows[i].request,
                              received=0.0)])[0]
        np.testing.assert_array_equal(results[i].actions, solo.actions)
        assert results[i].batch_size == 1  # recomputed alone after the batch failed
    # The failed session's generator was rolled back: its next request draws the first chunk's noise.
    again = engine.run([Row(session=sessions[1], request=parse_request(observation(1), spec), received=0.0)])[0]
    fresh = PolicyEngine(demo_policy).run([Row(session=Session(id=1, frames_needed=spec.world_frames),
                                              request=parse_request(observation(1), spec), received=0.0)])[0]
    np.testing.assert_array_equal(again.actions, fresh.actions)


@pytest.mark.parametrize("memory", ["random", "zero", "none"])
def test_memory_modes_are_served_from_the_session_generator(memory):
    """Random memory draws from the session's generator after the noise, as the local evaluator does."""
    import torch

    from vlaworld.eval.episode import chunk_noise

    policy = load_demo(memory=memory)
    engine = PolicyEngine(policy)
    spec = observation_spec(policy)
    rows = [Row(session=Session(id=7 + i, frames_needed=spec.world_frames),
                request=parse_request(observation(i), spec), received=0.0) for i in range(2)]
    served = engine.run(rows)
    generators = [torch.Generator().manual_seed(7 + i) for i in range(2)]
    batch = {k: np.stack([observation(i)[k] for i in range(2)]) for k in observation(0) if k != "task"}
    batch["task"] = [observation(0)["task"]] * 2
    noise = chunk_noise(generators, policy.config.chunk_size, policy.config.max_action_dim)
    local = policy.predict_chunk(batch, noise=noise, generators=generators if memory == "random" else None)
    np.testing.assert_array_equal(np.stack([r.actions for r in served]), local.numpy())


def test_compiled_policies_get_power_of_two_batches_and_padding_rows_are_dropped(demo_policy):
    from vlaworld.processing.padding import compiled_batch_size

    assert [compiled_batch_size(n) for n in (1, 2, 3, 5, 16, 17)] == [1, 2, 4, 8, 16, 32]
    spec = observation_spec(demo_policy)
    rows = lambda: [Row(session=Session(id=50 + i, frames_needed=spec.world_frames),  # noqa: E731
                        request=parse_request(observation(i), spec), received=0.0) for i in range(3)]
    plain = PolicyEngine(demo_policy).run(rows())
    padded_engine = PolicyEngine(demo_policy)
    padded_engine.compiled = True  # as with compile=True, without minutes of compilation on this CPU
    sizes = count_calls(demo_policy)
    padded = padded_engine.run(rows())
    del demo_policy.predict_chunk  # the module's policy again without the counter
    assert sizes == [4] and [c.batch_size for c in padded] == [3, 3, 3]
    assert max_abs([c.actions for c in plain], [c.actions for c in padded]) < 1e-5
