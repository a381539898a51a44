"""vlaworld: LeRobot SmolVLA policies (and their V-JEPA 2 world modality) in pure PyTorch, on LIBERO."""

from vlaworld.load import load_policy
from vlaworld.policy import Policy

__all__ = ["Policy", "load_policy"]
