"""Reading the files checkpoints and model directories are made of, with errors that name the file.

A truncated download, a pickle renamed to ``.safetensors`` or a stray edit to a JSON file surfaced as a
20-line library traceback that never said which file; here each is one ``CheckpointError`` with the
path and what to do. Paths that a checkpoint's own files name (processor state files, tokenizer
artifacts) must stay inside the checkpoint directory, so that nothing outside it is read (or escapes
the run's fingerprint).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from vlaworld.errors import VlaworldError


class CheckpointError(VlaworldError, ValueError):
    """A checkpoint file that cannot be read or does not match its model; the message says what to fix."""


def read_json(path: Path, *, expect: type = dict) -> Any:
    """A JSON file's content, which must be an ``expect`` (a dict by default)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); restore the file from its source.") from exc
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path} is not a UTF-8 text file ({exc}).") from exc
    if not isinstance(value, expect):
        raise CheckpointError(f"{path} must hold a JSON {'object' if expect is dict else expect.__name__}, "
                              f"got {type(value).__name__}.")
    return value


@contextmanager
def open_safetensors(path: Path, device: str = "cpu") -> Iterator[Any]:
    """``safe_open`` whose failures (truncated, not safetensors) say which file and what to do."""
    try:
        with safe_open(str(path), framework="pt", device=device) as handle:
            yield handle
    except SafetensorError as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc}); it may be truncated or not safetensors at all. "
            "Download or copy it again (vlaworld never reads pickled weights)."
        ) from exc


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, dtypes as stored."""
    with open_safetensors(path) as f:
        return {key: f.get_tensor(key) for key in f.keys()}


def inside(root: Path, name: str, what: str) -> Path:
    """``root / name``, refused when ``name`` is absolute or climbs out of ``root`` (``../``, symlinks)."""
    path = root / name
    if Path(name).is_absolute() or not path.resolve().is_relative_to(root.resolve()):
        raise CheckpointError(
            f"{what} names {name!r}, which is outside the checkpoint directory {root}; a checkpoint may only "
            "refer to its own files. Copy the file into the checkpoint and name it relative to it."
        )
    return path


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fingerprint(files: Mapping[str, Path]) -> dict[str, str]:
    """sha256 of each named file that exists (name -> hex), read once: what a run's results depend on."""
    return {name: sha256_file(path) for name, path in sorted(files.items()) if path.is_file()}
