"""Serve a policy to other stacks: ``python -m vlaworld.serve`` and ``vlaworld.serve(policy, port=...)``.

A WebSocket server in openpi's protocol (an unmodified ``openpi-client`` works against it) that batches
requests from many connections into one policy call; each connection is an episode session with its own
world-frame history and noise generator (vlaworld.serve.session). The server needs the ``serve`` extra
(``websockets``, ``msgpack``); importing this package does not, so the evaluator can name its errors.

The package is callable: ``vlaworld.serve(policy, port=8000)`` is ``vlaworld.serve.serve(policy,
port=8000)``. The command (``python -m vlaworld.serve``) and the function share the name, and once the
subpackage is imported, ``vlaworld.serve`` is the subpackage: so the subpackage is what gets called.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from vlaworld.serve.config import ServeConfig
from vlaworld.serve.errors import PolicyServerError

if TYPE_CHECKING:
    from vlaworld.policy import Policy
    from vlaworld.serve.server import PolicyServer

__all__ = ["PolicyServer", "PolicyServerError", "ServeConfig", "serve"]


def serve(policy: Policy, *, host: str = "0.0.0.0", port: int = 8000, window_ms: float = 5.0, max_batch: int = 32,
          policy_kind: str = "checkpoint") -> None:
    """Serve a loaded ``vlaworld.Policy`` over openpi's WebSocket protocol until interrupted (blocks).

    ``window_ms``: how long a batch waits for more requests after the first; ``max_batch``: rows per
    policy call at most (1: every reply's float math is independent of other clients'); ``policy_kind``
    is what the metadata reports the evaluator should record (``checkpoint`` or ``demo``).
    """
    from vlaworld.serve.server import PolicyServer

    config = ServeConfig(host=host, port=port, window_ms=window_ms, max_batch=max_batch)
    PolicyServer(policy, config, policy_kind=policy_kind).serve_forever()


def __getattr__(name: str) -> Any:
    if name == "PolicyServer":
        from vlaworld.serve.server import PolicyServer

        return PolicyServer
    raise AttributeError(f"module 'vlaworld.serve' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    __call__ = staticmethod(serve)  # vlaworld.serve(...) is serve(...), signature and all


sys.modules[__name__].__class__ = _CallableModule
