"""Shared test setup: headless rendering for MuJoCo, an offline hub, and the fixtures several files use.

The fixtures are session-scoped and read-only by convention: a test that changes files copies them first.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402 - after the environment: MuJoCo reads MUJOCO_GL when it is first imported

from tests.support.tiny_checkpoint import TinyFiles, TinyWorldFiles, write_tiny_files, write_tiny_world_files  # noqa: E402


@pytest.fixture(scope="session")
def tiny_smolvla(tmp_path_factory) -> TinyFiles:
    """A tiny smolvla ``pretrained_model/`` and its VLM directory (config + tokenizer)."""
    return write_tiny_files(tmp_path_factory.mktemp("tiny_smolvla"))


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> TinyWorldFiles:
    """A tiny smolvla_world ``pretrained_model/`` (gate 0.5), its VLM directory and its V-JEPA 2 directory."""
    return write_tiny_world_files(tmp_path_factory.mktemp("tiny_world"))


@pytest.fixture(scope="session")
def demo():
    """The built-in demo checkpoint's paths (written once into the user cache)."""
    from vlaworld.demo import ensure_demo

    return ensure_demo()


@pytest.fixture(scope="session")
def oracle_hf_home(tmp_path_factory):
    """An offline HF cache holding the tiny and real-size VLM configs the oracle cases name."""
    from tests.oracle import cases

    return cases.write_vlms(tmp_path_factory.mktemp("hf"), tmp_path_factory.mktemp("vlms"), real=True)
