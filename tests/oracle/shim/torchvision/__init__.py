"""Import-only stand-in for torchvision in the LeRobot 0.4.4 oracle environment.

LeRobot imports torchvision at module level (datasets/utils.py, datasets/transforms.py) on the way to
SmolVLA, which never calls it. PyPI's torchvision is built against CUDA torch and cannot load beside the
CPU torch the oracle shares with vlaworld ("operator torchvision::nms does not exist"). Any use raises.
"""

__version__ = "0+oracle-stub"


def __getattr__(name):
    raise AttributeError(f"torchvision is not installed in the oracle environment (asked for torchvision.{name})")
