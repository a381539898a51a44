"""Serve a policy to other stacks: ``python -m vlaworld.serve`` and ``vlaworld.serve(policy, port=...)``.

A WebSocket server in openpi's protocol (an unmodified ``openpi-client`` works against it) that batches
requests from many connections into one policy call; each connection is an episode session with its own
world-frame history and noise generator (vlaworld.serve.session). Needs the ``serve`` extra
(``websockets``, ``msgpack``).

The package is callable, so ``vlaworld.serve(policy, port=8000)`` and ``from vlaworld.serve import serve``
are the same function: the module name is also the command's (``python -m vlaworld.serve``), and a
package attribute of that name would otherwise be shadowed by the subpackage once imported.
"""

from __future__ import annotations

import sys
import types

from vlaworld.serve.server import PolicyServer, ServeConfig, serve

__all__ = ["PolicyServer", "ServeConfig", "serve"]


class _CallableModule(types.ModuleType):
    __call__ = staticmethod(serve)  # vlaworld.serve(...) is serve(...), signature and all


sys.modules[__name__].__class__ = _CallableModule
