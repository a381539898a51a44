"""Which GPU fast path disagrees with eager: compile only, CUDA graphs only, or both (the demo checkpoint).

    python tools/bench_cuda_check.py

Prints one JSON line per (dtype, memory mode, compile, cuda_graphs): the max-abs difference of
predict_chunk against the eager policy over three noise draws (the first call compiles/captures).
``--keep-times`` keeps every per-step time-embedding list alive: a test of the hypothesis that the
captured graph reads the time embeddings from memory the allocator hands out again after capture.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import vlaworld
from vlaworld.demo import CAMERAS, ensure_demo


def libero_batch(bsz: int = 2, seed: int = 0) -> dict:
    """Random LIBERO-shaped observations (256² cameras, 8-dim state) in the demo's feature names."""
    rng = np.random.default_rng(seed)
    batch: dict = {c: rng.integers(0, 256, (bsz, 256, 256, 3), dtype=np.uint8) for c in CAMERAS}
    batch["observation.state"] = rng.standard_normal((bsz, 8)).astype(np.float32)
    batch["task"] = ["pick up the black bowl and place it on the plate"] * bsz
    return batch


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
    demo = ensure_demo()
    vlm, vj, ckpt = demo.vlm, demo.world_encoder, demo.ckpt
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
                    shape = (2, eager.config.chunk_size, eager.config.max_action_dim)
                    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
                    diffs.append((eager.predict_chunk(batch, noise=noise) - fast.predict_chunk(batch, noise=noise))
                                 .abs().max().item())
                print(json.dumps({"dtype": dtype or "lerobot", "memory": memory, "compile": compile_,
                                  "cuda_graphs": graphs, "keep_times": args.keep_times,
                                  "max_abs_diff": diffs}), flush=True)


if __name__ == "__main__":
    main()
