"""Dynamic batching: requests from all connections that arrive within a short window share one call.

The window opens when a request arrives and the policy thread is free: the batch then waits up to
``window_s`` for more requests, until ``max_batch`` are there, or until every open connection has
asked (a client waits for its reply before asking again, so nobody else can join: a lone client
never waits). Requests that arrive while the policy
computes are waiting already, so the next batch takes them at once. The policy runs in one thread of
its own, so the event loop keeps reading and writing every connection meanwhile: a slow or dead
client only ever holds its own connection's coroutine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from vlaworld.serve.engine import Chunk, PolicyEngine, Row


class Batcher:
    def __init__(self, engine: PolicyEngine, *, window_s: float, max_batch: int,
                 open_connections: Callable[[], int] = lambda: 0) -> None:
        if window_s < 0 or max_batch < 1:
            raise ValueError(f"batching needs window >= 0 and max_batch >= 1, got {window_s} s, {max_batch}")
        self.engine = engine
        self.window_s = window_s
        self.max_batch = max_batch
        self.open_connections = open_connections
        self._queue: asyncio.Queue[tuple[Row, asyncio.Future]] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlaworld-policy")

    async def submit(self, row: Row) -> Chunk:
        """Queue a row and wait for its chunk (raises the exception its request caused)."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((row, future))
        return await future

    async def run(self) -> None:
        """Form batches and run them, forever (cancel the task to stop)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                items = [await self._queue.get()]
                deadline = items[0][0].received + self.window_s  # perf_counter clock, as Row.received
                while len(items) < self.max_batch and len(items) < max(self.open_connections(), 1):
                    if not self._queue.empty():
                        items.append(self._queue.get_nowait())
                        continue
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    getter = asyncio.ensure_future(self._queue.get())
                    await asyncio.wait({getter}, timeout=remaining)
                    if getter.cancel():  # still waiting: the window closed (the item stays queued)
                        break
                    items.append(getter.result())
                live = [(row, fut) for row, fut in items if not fut.cancelled()]
                if not live:
                    continue
                try:
                    results = await loop.run_in_executor(self._executor, self.engine.run, [row for row, _ in live])
                except Exception as exc:  # noqa: BLE001 - an engine bug: every waiting request hears of it
                    results = [exc] * len(live)
                for (_, future), result in zip(live, results):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._executor.shutdown(wait=True, cancel_futures=True)
