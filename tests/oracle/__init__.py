"""Calling the real LeRobot from the tests: a side environment per generation, a harness, references.

- LeRobot 0.4.4 (transformers 4.57.6) lives in ``$VLAWORLD_ORACLE_DIR/lerobot-0.4.4`` (default
  ``<repo>/.oracle``), built by ``tests/oracle/setup.sh`` (``.ci/run`` builds it). Tests call it live.
- LeRobot 0.6.1 needs Python >= 3.12 and torch < 2.12, for which only multi-GB CUDA builds exist on the
  registry: its references were made once by ``tests/oracle/make_refs_061.py`` with the real LeRobot 0.6.1
  and are committed under ``tests/oracle/refs/lerobot-0.6.1`` (checkpoint configs and processors as it
  wrote them, a digest of its weights, its outputs).

Without the 0.4.4 environment the oracle tests skip, saying how to build it; with
``VLAWORLD_REQUIRE_ORACLE=1`` (CI) they fail instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
REFS_061 = HERE / "refs" / "lerobot-0.6.1"
TIMEOUT_S = 1800
# CPU bf16 matrix products depend on torch's thread count (a real-size bf16 chunk moves by 1.6e-2 between
# 1 and 2 threads): the oracle and the tests compute with the same count.
THREADS = 2


@contextlib.contextmanager
def oracle_threads() -> Iterator[None]:
    """torch's thread count set to the oracle's for the block, then given back."""
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def oracle_dir() -> Path:
    return Path(os.environ.get("VLAWORLD_ORACLE_DIR", REPO / ".oracle"))


def python_044() -> Path:
    """The LeRobot 0.4.4 environment's interpreter; skips (or fails, in CI) when it is not built."""
    env = oracle_dir() / "lerobot-0.4.4"
    if (env / ".complete").is_file():
        return env / "bin" / "python"
    message = f"LeRobot 0.4.4 oracle environment not built at {env}: run tests/oracle/setup.sh"
    if os.environ.get("VLAWORLD_REQUIRE_ORACLE"):
        pytest.fail(message)
    pytest.skip(message)


def write_hf_cache(root: Path, repo_id: str, files: Path) -> Path:
    """Put ``files`` in a Hugging Face hub cache under ``root`` as snapshot of ``repo_id`` (refs/main)."""
    repo = root / "hub" / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    snapshot = repo / "snapshots" / revision
    shutil.copytree(files, snapshot, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


@dataclass
class Request:
    """One harness command: JSON arguments, and tensors passed as safetensors files named by their key."""

    command: str
    args: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


def run(
    python: Path,
    requests: list[Request],
    *,
    hf_home: Path | None = None,
    extra_env: dict[str, str] | None = None,
    torchvision_stub: bool = True,
) -> list[tuple[dict, dict[str, torch.Tensor]]]:
    """Run harness commands in one oracle process (LeRobot's imports take ~10 s, paid once).

    ``torchvision_stub``: put the import-only torchvision first on the path (the 0.4.4 environment has no
    torchvision; an environment with a working one passes False). Returns, per request, its JSON
    response and the tensors it wrote to its ``out`` file (if any).
    """
    with tempfile.TemporaryDirectory(prefix="oracle-") as tmp:
        work = Path(tmp)
        batch = []
        for i, req in enumerate(requests):
            args = dict(req.args)
            for name, group in req.tensors.items():
                path = work / f"{i}-{name}.safetensors"
                save_file({k: v.contiguous() for k, v in group.items()}, path)
                args[name] = str(path)
            args |= {"command": req.command, "response": str(work / f"{i}-response.json"),
                     "out": str(work / f"{i}-out.safetensors"), "threads": THREADS}
            batch.append(args)
        (work / "request.json").write_text(json.dumps({"command": "batch", "requests": batch}))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env |= {
            "PYTHONPATH": f"{HERE / 'shim'}{os.pathsep}{HERE}" if torchvision_stub else str(HERE),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            **({"HF_HOME": str(hf_home)} if hf_home is not None else {}),
            **(extra_env or {}),
        }
        proc = subprocess.run(
            [str(python), str(HERE / "harness.py"), str(work / "request.json")],
            cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"oracle run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
            )
        results = []
        for args in batch:
            out = Path(args["out"])
            results.append((json.loads(Path(args["response"]).read_text()), load_file(out) if out.is_file() else {}))
        return results
