"""The WebSocket server: openpi's protocol in front of a batching engine, one episode session per connection.

Per connection: send the metadata, then answer each message in turn (a client waits for its reply before
it sends again, as openpi-client does). A bad message is answered with a text frame saying what was
wrong (openpi-client raises it as a RuntimeError) and the connection keeps serving; openpi's own server
closes the connection instead. ``GET /healthz`` answers 200 as openpi's does.
"""

from __future__ import annotations

import asyncio
import http
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection, serve as ws_serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as HttpRequest, Response as HttpResponse

from vlaworld.checkpoint import checkpoint_hash
from vlaworld.policy import Policy
from vlaworld.serve.batcher import Batcher
from vlaworld.serve.config import ServeConfig
from vlaworld.serve.engine import PolicyEngine, Row
from vlaworld.serve.metadata import build_metadata, observation_spec
from vlaworld.serve.observation import ObservationError, parse_request
from vlaworld.serve.session import Session, new_session_id
from vlaworld.serve.wire import WireError, packb, unpackb

log = logging.getLogger("vlaworld.serve")
HEALTH_PATH = "/healthz"


@dataclass(kw_only=True)
class ServerStats:
    connections: int = 0
    requests: int = 0  # observations answered or refused
    errors: int = 0  # requests answered with an error


class PolicyServer:
    """Serve one loaded policy. ``serve_forever()`` blocks; ``start()``/``stop()`` run it in a thread."""

    def __init__(self, policy: Policy, config: ServeConfig | None = None, *, policy_kind: str = "checkpoint") -> None:
        self.policy = policy
        self.config = config or ServeConfig()
        self.engine = PolicyEngine(policy)
        self.spec = observation_spec(policy)
        self.metadata = build_metadata(
            policy, self.spec, policy_kind=policy_kind, checkpoint_sha256=checkpoint_hash(policy.config.checkpoint),
            window_ms=self.config.window_ms, max_batch=self.config.max_batch,
        )
        self._metadata_bytes = packb(self.metadata)
        self.stats = ServerStats()
        self._open = 0  # connections now open
        self.port: int | None = None
        self._batcher: Batcher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def open_connections(self) -> int:
        """Connections open now (a batch closes early once each has asked)."""
        return self._open

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "") else self.config.host
        return f"ws://{host}:{self.port}"

    # ------------------------------------------------------------------ running
    async def run(self, ready: threading.Event | None = None) -> None:
        """Serve until ``stop()`` (or cancellation)."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._batcher = Batcher(self.engine, window_s=self.config.window_ms / 1e3, max_batch=self.config.max_batch,
                                open_connections=lambda: self._open)
        batching = asyncio.create_task(self._batcher.run())
        max_size = int(self.config.max_message_mb * 2**20)
        try:
            async with ws_serve(self._handle, self.config.host, self.config.port, compression=None,
                                max_size=max_size, process_request=_health) as server:
                self.port = server.sockets[0].getsockname()[1]
                log.info("serving %s on ws://%s:%d (health: GET /healthz)", self.policy.config.checkpoint,
                         self.config.host, self.port)
                if ready is not None:
                    ready.set()
                await self._stop.wait()
        finally:
            batching.cancel()
            await asyncio.gather(batching, return_exceptions=True)

    def serve_forever(self) -> None:
        asyncio.run(self.run())

    def start(self, timeout_s: float = 60.0) -> PolicyServer:
        """Serve from a background thread; returns once the port is bound."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def target() -> None:
            try:
                asyncio.run(self.run(ready))
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread below
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=target, name="vlaworld-serve", daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s) or failure:
            raise RuntimeError(f"the policy server did not start: {failure[0] if failure else 'timed out'}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ one connection
    async def _handle(self, ws: ServerConnection) -> None:
        self.stats.connections += 1
        self._open += 1
        session = Session(id=new_session_id(), frames_needed=self.spec.world_frames)
        try:
            await ws.send(self._metadata_bytes)
            prev_total_ms = None
            async for message in ws:
                received = time.perf_counter()
                reply, session = await self._answer(message, session, received)
                if isinstance(reply, dict) and "server_timing" in reply and prev_total_ms is not None:
                    reply["server_timing"]["prev_total_ms"] = prev_total_ms
                await ws.send(packb(reply) if isinstance(reply, dict) else reply)
                prev_total_ms = (time.perf_counter() - received) * 1e3
        except ConnectionClosed:
            pass  # the client left; its requests in flight were computed and dropped
        finally:
            self._open -= 1

    async def _answer(self, message: Any, session: Session, received: float) -> tuple[dict | str, Session]:
        """(reply, the session after it): a reply map, or an error text."""
        self.stats.requests += 1
        try:
            if isinstance(message, str):
                raise WireError("send msgpack in a binary frame (openpi-client's Packer), not text")
            request = parse_request(unpackb(message), self.spec)
            if request.reset:
                session = Session(id=request.session_id if request.session_id is not None else new_session_id(),
                                  frames_needed=self.spec.world_frames)
            elif request.session_id is not None and request.session_id != session.id:
                raise ObservationError(
                    f"session_id {request.session_id!r} is not this connection's session ({session.id!r}); a new "
                    "id starts a new episode: send it with 'reset': true"
                )
            if request.observation is None:
                return {"reset": True, "session": session.describe()}, session
            chunk = await self._batcher.submit(Row(session=session, request=request, received=received))
        except (WireError, ObservationError) as exc:
            self.stats.errors += 1
            return f"vlaworld.serve: bad request: {exc}", session
        except Exception as exc:  # noqa: BLE001 - the policy failed on this request: tell its client, keep serving
            self.stats.errors += 1
            log.exception("policy call failed")
            return f"vlaworld.serve: the policy failed on this request ({type(exc).__name__}: {exc})", session
        reply = {
            "actions": chunk.actions,
            "server_timing": {"infer_ms": chunk.infer_ms, "queue_ms": chunk.queue_ms, "batch_size": chunk.batch_size},
            "session": session.describe(),
            "memory": chunk.memory,
        }
        if request.reset:
            reply["reset"] = True
        return reply, session


def _health(connection: ServerConnection, request: HttpRequest) -> HttpResponse | None:
    if request.path == HEALTH_PATH:
        return connection.respond(http.HTTPStatus.OK, "OK\n")
    return None

