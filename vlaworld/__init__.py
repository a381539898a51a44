"""vlaworld: LeRobot SmolVLA policies (and their V-JEPA 2 world modality) in pure PyTorch, on LIBERO.

The policy API is imported lazily, so the torch-free parts (``vlaworld.eval.compare``,
``vlaworld.envs``) import without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlaworld.load import load_policy
    from vlaworld.policy import Policy
    from vlaworld.serve import serve

__all__ = ["Policy", "load_policy", "serve"]


def __getattr__(name: str) -> Any:
    if name == "load_policy":
        from vlaworld.load import load_policy

        return load_policy
    if name == "Policy":
        from vlaworld.policy import Policy

        return Policy
    if name == "serve":  # the callable subpackage (needs the 'serve' extra): vlaworld.serve(policy, port=P)
        import vlaworld.serve

        return vlaworld.serve
    raise AttributeError(f"module 'vlaworld' has no attribute {name!r}")
