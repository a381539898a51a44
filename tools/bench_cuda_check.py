"""Which GPU fast path disagrees with eager: compile only, CUDA graphs only, or both (tiny checkpoint).

    PYTHONPATH=. python tools/bench_cuda_check.py

Prints one JSON line per (dtype, memory mode, compile, cuda_graphs): the max-abs difference of
predict_chunk against the eager policy over three noise draws (the first call compiles/captures).
``--keep-times`` keeps every per-step time-embedding list alive: a test of the hypothesis that the
captured graph reads the time embeddings from memory the allocator hands out again after capture.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import vlaworld
from tests.tiny_checkpoint import libero_batch, write_tiny_vjepa, write_tiny_vlm, write_tiny_world_checkpoint


def keep_time_embeddings_alive() -> list:
    """Patch VLAFlowMatching.time_embeddings so its results are never freed (diagnostic only)."""
    from vlaworld.models.flow_matching import VLAFlowMatching

    kept: list = []
    original = VLAFlowMatching.time_embeddings

    def keeping(self, times, bsz, device):
        out = original(self, times, bsz, device)
        kept.append(out)
        return out

    VLAFlowMatching.time_embeddings = keeping
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep-times", action="store_true")
    ap.add_argument("--only-graphs", action="store_true", help="skip the compile-only rows")
    args = ap.parse_args()
    if args.keep_times:
        keep_time_embeddings_alive()
    root = Path(tempfile.mkdtemp(prefix="cudacheck-"))
    vlm, vj, ckpt = write_tiny_vlm(root / "vlm"), write_tiny_vjepa(root / "vj"), write_tiny_world_checkpoint(root / "w")
    batch = libero_batch()
    for dtype in ("float32", None):
        for memory in ("none", "pred"):
            common = dict(vlm=vlm, world_encoder=vj, device="cuda", dtype=dtype, memory=memory)
            eager = vlaworld.load_policy(ckpt, **common)
            for compile_, graphs in ((True, False), (False, True), (True, True)):
                if args.only_graphs and not graphs:
                    continue
                fast = vlaworld.load_policy(ckpt, compile=compile_, cuda_graphs=graphs, **common)
                diffs = []
                for seed in range(3):
                    noise = torch.randn(2, 6, 10, generator=torch.Generator().manual_seed(seed))
                    diffs.append((eager.predict_chunk(batch, noise=noise) - fast.predict_chunk(batch, noise=noise))
                                 .abs().max().item())
                print(json.dumps({"dtype": dtype or "lerobot", "memory": memory, "compile": compile_,
                                  "cuda_graphs": graphs, "keep_times": args.keep_times,
                                  "max_abs_diff": diffs}), flush=True)


if __name__ == "__main__":
    main()
