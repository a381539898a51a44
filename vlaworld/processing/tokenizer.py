"""Task-prompt tokenisation with the VLM's own ``tokenizer.json`` (the ``tokenizers`` library only).

LeRobot calls ``AutoTokenizer(vlm_model_name)(task + "\\n", max_length=48, truncation=True,
padding=pad_language_to, padding_side="right")``. The fast tokenizer behind that is the same
``tokenizer.json`` pipeline run here; the settings transformers adds on top (pad token, truncation
side, ``add_bos_token``-style special tokens live in the JSON's post-processor) come from
``tokenizer_config.json`` and ``special_tokens_map.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from vlaworld.checkpoint.files import CheckpointError, inside
from vlaworld.checkpoint.hub import find_model_dir
from vlaworld.checkpoint.processors import PREPROCESSOR, ProcessorSpec
from vlaworld.config import PolicyConfig


@dataclass(frozen=True, kw_only=True)
class TokenizerSettings:
    max_length: int = 48
    padding: str = "longest"  # or "max_length"
    padding_side: str = "right"
    truncation: bool = True
    append_newline: bool = True


class TaskTokenizer:
    """Turns task strings into (ids [B,L] long, mask [B,L] bool) exactly as LeRobot's pipeline does."""

    def __init__(self, directory: str | Path, settings: TokenizerSettings) -> None:
        directory = Path(directory)
        self.directory = directory  # the files read (run.json fingerprints them)
        self.settings = settings
        self._tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        cfg = _read_json(directory / "tokenizer_config.json")
        special = _read_json(directory / "special_tokens_map.json")
        pad = _token_text(cfg.get("pad_token")) or _token_text(special.get("pad_token"))
        if pad is None:
            raise CheckpointError(f"{directory} defines no pad token (tokenizer_config.json pad_token)")
        pad_id = self._tok.token_to_id(pad)
        if pad_id is None:
            raise CheckpointError(f"pad token {pad!r} of {directory} is not in its vocabulary")
        self.pad_id = pad_id
        self._tok.no_padding()
        self._tok.no_truncation()
        if settings.truncation:
            side = cfg.get("truncation_side", "right")
            self._tok.enable_truncation(settings.max_length, direction=side)
        if settings.padding not in ("longest", "max_length"):
            raise CheckpointError(f"tokenizer padding={settings.padding!r}: expected 'longest' or 'max_length'")
        self._tok.enable_padding(
            direction=settings.padding_side,
            pad_id=pad_id,
            pad_token=pad,
            length=settings.max_length if settings.padding == "max_length" else None,
        )

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def __call__(self, tasks: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(tasks, str) or not all(isinstance(t, str) for t in tasks):
            raise TypeError("batch['task'] must be a list of strings, one per batch row")
        if self.settings.append_newline:
            tasks = [t if t.endswith("\n") else t + "\n" for t in tasks]
        enc = self._tok.encode_batch(tasks)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.bool)
        return ids, mask


def task_tokenizer(
    processors: ProcessorSpec, config: PolicyConfig, vlm_dir: Path, *, explicit_vlm: bool, ckpt_dir: Path
) -> TaskTokenizer:
    """The checkpoint's tokenizer: settings from its saved tokenizer step (lerobot >= 0.4) or its config
    (older); files from the checkpoint's own tokenizer artifacts (lerobot >= 0.6), else the VLM's."""
    spec = processors.tokenizer
    if spec is None:
        return TaskTokenizer(vlm_dir, TokenizerSettings(max_length=config.tokenizer_max_length,
                                                        padding=config.pad_language_to))
    settings = TokenizerSettings(
        max_length=spec.max_length, padding=spec.padding, padding_side=spec.padding_side,
        truncation=spec.truncation, append_newline=processors.appends_newline,
    )
    if spec.local_dir is not None:
        local = inside(ckpt_dir, str(spec.local_dir), f"{ckpt_dir}/{PREPROCESSOR}.json tokenizer artifacts")
        if (local / "tokenizer.json").is_file():
            return TaskTokenizer(local, settings)
    directory = vlm_dir
    if spec.tokenizer_name and spec.tokenizer_name != config.vlm_model_name and not explicit_vlm:
        directory = find_model_dir(spec.tokenizer_name, None, ("tokenizer.json",), "--vlm", "tokenizer")
    return TaskTokenizer(directory, settings)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _token_text(tok: object) -> str | None:
    """tokenizer_config stores special tokens as a string or as an AddedToken dict."""
    if isinstance(tok, dict):
        return tok.get("content")
    return tok if isinstance(tok, str) else None
