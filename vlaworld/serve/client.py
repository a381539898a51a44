"""A synchronous client for a policy server (vlaworld's, or any server in openpi's protocol).

What ``openpi_client.WebsocketClientPolicy`` does, plus a separate ``send`` and ``receive``: a caller
with many sessions (the evaluator, the benchmark) sends every request first and then reads the
replies, so the server can batch them. Errors say what failed and where.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from vlaworld.serve.errors import PolicyServerError
from vlaworld.serve.wire import WireError, packb, unpackb


class PolicyClient:
    """One connection = one episode session on the server. ``metadata`` is the server's first message."""

    def __init__(self, url: str, *, open_timeout_s: float = 30.0) -> None:
        self.url = url
        self._stack = contextlib.ExitStack()  # connect() is a context manager (websockets >= 17 warns otherwise)
        try:
            self._ws: ClientConnection = self._stack.enter_context(
                connect(url, compression=None, max_size=None, open_timeout=open_timeout_s))
            self.metadata: dict[str, Any] = unpackb(self._ws.recv(timeout=open_timeout_s))
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed, WireError) as exc:
            self._stack.close()
            raise PolicyServerError(
                f"cannot reach a policy server at {url} ({type(exc).__name__}: {exc}); start one there with "
                "`python -m vlaworld.serve --ckpt DIR --port PORT` and check the address, port and firewall"
            ) from exc

    def send(self, message: Mapping[str, Any]) -> None:
        try:
            self._ws.send(packb(dict(message)))
        except ConnectionClosed as exc:
            raise PolicyServerError(f"the policy server at {self.url} closed the connection ({exc})") from exc

    def receive(self) -> dict[str, Any]:
        """The reply to the oldest request sent; a text frame from the server is its error message."""
        try:
            reply = self._ws.recv()
        except ConnectionClosed as exc:
            raise PolicyServerError(f"the policy server at {self.url} closed the connection ({exc})") from exc
        if isinstance(reply, str):
            raise PolicyServerError(f"the policy server at {self.url} refused the request: {reply}")
        return unpackb(reply)

    def infer(self, message: Mapping[str, Any]) -> dict[str, Any]:
        self.send(message)
        return self.receive()

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
