"""The served path: requests/s and latency percentiles for 1, 4, 16 clients of ``python -m vlaworld.serve``
on the demo policy, against calling the same policy in-process.

Every request is what the evaluator sends at a chunk boundary (two 256² cameras, the 8-d state, the task,
the world camera's last m+T−1 frames), one unbatched sample; every reply a whole chunk. The in-process
rows/s of one call on n stacked samples is the ceiling that batching n clients can reach. The server runs
in its own process with the same torch thread count as the in-process call; each client is a thread with
its own connection (session), sending its next request as soon as its reply arrives. Latency is the
client's round trip; ``mean_batch`` is the rows per policy call the replies report.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CAMERAS = ("observation.images.image", "observation.images.image2")
IMAGE = (256, 256, 3)


@dataclass(frozen=True, kw_only=True)
class ServedBenchConfig:
    clients: tuple[int, ...] = (1, 4, 16)
    requests: int = 20  # timed requests per client (after one untimed warm-up request each)
    window_ms: float = 5.0
    max_batch: int = 32
    threads: int = 1  # torch threads, in-process and in the server process


def request(world_frames: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    obs: dict[str, Any] = {k: rng.integers(0, 256, IMAGE, dtype=np.uint8) for k in CAMERAS}
    obs["observation.state"] = rng.standard_normal(8).astype(np.float32)
    obs["task"] = "pick up the black bowl between the plate and the ramekin and place it on the plate"
    if world_frames:
        obs["observation.world_frames"] = rng.integers(0, 256, (world_frames, *IMAGE), dtype=np.uint8)
    return obs


def percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1e3
    return {"p50": round(float(np.percentile(ms, 50)), 2), "p90": round(float(np.percentile(ms, 90)), 2),
            "p99": round(float(np.percentile(ms, 99)), 2), "mean": round(float(ms.mean()), 2), "n": int(ms.size)}


def _serve_demo(port: Any, stop: Any, threads: int, window_ms: float, max_batch: int) -> None:
    """The server process: the demo policy behind PolicyServer until ``stop`` is set."""
    import torch

    from vlaworld.demo import ensure_demo
    from vlaworld.load import load_policy
    from vlaworld.serve.config import ServeConfig
    from vlaworld.serve.server import PolicyServer

    torch.set_num_threads(threads)
    paths = ensure_demo()
    policy = load_policy(paths.ckpt, vlm=paths.vlm, world_encoder=paths.world_encoder)
    with PolicyServer(policy, ServeConfig(host="127.0.0.1", port=0, window_ms=window_ms, max_batch=max_batch),
                      policy_kind="demo") as server:
        port.put(server.port)
        stop.wait()


def _in_process(config: ServedBenchConfig) -> tuple[dict[str, Any], int]:
    import torch

    from vlaworld.demo import ensure_demo
    from vlaworld.load import load_policy

    paths = ensure_demo()
    policy = load_policy(paths.ckpt, vlm=paths.vlm, world_encoder=paths.world_encoder)
    obs = request(policy.world_frames_needed)
    batch = {k: v[None] for k, v in obs.items() if k != "task"} | {"task": [obs["task"]]}
    generator = torch.Generator().manual_seed(0)
    policy.predict_chunk(batch, generators=[generator])  # warm-up
    samples = []
    for _ in range(config.requests):
        t0 = time.perf_counter()
        policy.predict_chunk(batch, generators=[generator])
        samples.append(time.perf_counter() - t0)
    batched = {}  # the ceiling batching can reach: rows/s of one in-process call on n stacked samples
    for n in sorted({n for n in config.clients if n > 1}):
        rows = {k: np.repeat(v, n, axis=0) if k != "task" else v * n for k, v in batch.items()}
        policy.predict_chunk(rows)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            policy.predict_chunk(rows)
            times.append(time.perf_counter() - t0)
        batched[str(n)] = round(n / float(np.median(times)), 2)
    return {"requests_per_s": round(len(samples) / sum(samples), 2), "latency_ms": percentiles(samples),
            "batched_rows_per_s": batched}, policy.world_frames_needed


def _clients(url: str, n: int, config: ServedBenchConfig, obs: dict[str, Any]) -> dict[str, Any]:
    from vlaworld.serve.client import PolicyClient

    clients = [PolicyClient(url) for _ in range(n)]
    latencies: list[list[float]] = [[] for _ in range(n)]
    batches: list[int] = []
    start = threading.Barrier(n + 1)

    def work(i: int) -> None:
        client = clients[i]
        client.infer({**obs, "reset": True, "session_id": i})  # warm-up, untimed
        start.wait()
        for _ in range(config.requests):
            t0 = time.perf_counter()
            reply = client.infer(obs)
            latencies[i].append(time.perf_counter() - t0)
            batches.append(int(reply["server_timing"]["batch_size"]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for c in clients:
        c.close()
    flat = [x for per in latencies for x in per]
    return {"requests": len(flat), "requests_per_s": round(len(flat) / wall, 2), "latency_ms": percentiles(flat),
            "mean_batch": round(sum(batches) / len(batches), 2)}


def served_part(config: ServedBenchConfig, log: Callable[[str], None]) -> dict[str, Any]:
    from vlaworld.serve.wire import packb

    log(f"in-process predict_chunk, batch 1 ({config.requests} calls, {config.threads} torch threads)")
    baseline, world_frames = _in_process(config)
    obs = request(world_frames)
    ctx = mp.get_context("spawn")
    port, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve_demo, args=(port, stop, config.threads, config.window_ms, config.max_batch),
                         name="vlaworld-bench-server", daemon=True)
    server.start()
    try:
        url = f"ws://127.0.0.1:{port.get(timeout=300)}"
        rows = {}
        for n in config.clients:
            log(f"served: {n} client(s) x {config.requests} requests")
            row = _clients(url, n, config, obs)
            row["vs_in_process"] = round(row["requests_per_s"] / baseline["requests_per_s"], 3)
            rows[str(n)] = row
    finally:
        stop.set()
        server.join(60)
        if server.is_alive():
            server.kill()
    return {
        "policy": "demo", "torch_threads": config.threads, "window_ms": config.window_ms, "max_batch": config.max_batch,
        "request": {"cameras": list(CAMERAS), "image": list(IMAGE), "world_frames": world_frames,
                    "bytes": len(packb(obs))},
        "in_process": baseline, "clients": rows,
        "note": "requests/s over all clients; latency = client round trip; in_process = predict_chunk on one sample "
                "(batched_rows_per_s: on n stacked samples, the most batching can give)",
    }
