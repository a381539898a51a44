"""Find model files that LeRobot checkpoints reference but do not contain, without any network call.

LeRobot reads the VLM's ``config.json`` and tokenizer (``vlm_model_name``) and the world encoder
(``world_vision_model_name``) from the Hugging Face hub at load time. vlaworld looks, in order, in the
directory the user gave, then in the local Hugging Face cache (offline), and otherwise stops with an
error that names the repo id, the flag to pass and the download command.
"""

from __future__ import annotations

import os
from pathlib import Path

from vlaworld.errors import VlaworldError


class ModelFilesNotFound(VlaworldError, FileNotFoundError):
    """A referenced model (VLM, tokenizer or world encoder) is not available locally."""


def hf_cache_dir() -> Path:
    """The hub cache root, following Hugging Face's environment variables."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def cached_snapshot(repo_id: str, required: tuple[str, ...]) -> Path | None:
    """The cache snapshot of ``repo_id`` holding all ``required`` files (``refs/main`` first)."""
    root = hf_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    snaps = root / "snapshots"
    if not snaps.is_dir():
        return None
    candidates = []
    ref = root / "refs" / "main"
    if ref.is_file():
        candidates.append(snaps / ref.read_text().strip())
    candidates += sorted((p for p in snaps.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    for snap in candidates:
        if all((snap / name).exists() for name in required):
            return snap
    return None


def find_model_dir(
    repo_id: str,
    explicit: str | os.PathLike | None,
    required: tuple[str, ...],
    flag: str,
    what: str,
) -> Path:
    """Resolve the local directory holding ``required`` files of ``repo_id``.

    ``explicit`` (from ``flag``) wins and must contain the files; then the offline HF cache.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        missing = [name for name in required if not (path / name).exists()]
        if missing:
            raise ModelFilesNotFound(
                f"{flag} {path} does not contain {', '.join(missing)} needed for the {what} "
                f"({repo_id}). Point {flag} at a directory in Hugging Face layout, e.g. a snapshot "
                f"made with: huggingface-cli download {repo_id} --local-dir DIR"
            )
        return path
    snap = cached_snapshot(repo_id, required)
    if snap is not None:
        return snap
    raise ModelFilesNotFound(
        f"The {what} '{repo_id}' was not found locally (looked in {flag} and the Hugging Face cache "
        f"{hf_cache_dir()}; vlaworld never downloads at run time). On a machine with internet run:\n"
        f"    huggingface-cli download {repo_id}\n"
        f"then copy the cache or pass {flag} DIR pointing at the downloaded files ({', '.join(required)})."
    )
