"""Chunk latency of vlaworld against LeRobot's computation, in one process, at real SmolVLA size.

    python -m tests.support.time_vs_reference --batch 1 4 --repeats 3

The reference is tests/support/reference_smolvla.py: LeRobot 0.4.4's SmolVLA computation on transformers'
modules (dict KV cache grown by concatenation, cross-attention K/V re-projected at every denoising
step, cameras embedded one by one), the statement our parity tests check against. Both models get
the same random weights (ours loaded from the reference's LeRobot state dict) and the same inputs
(two 512² cameras, 48 tokens, chunk 50, 10 Euler steps), and their calls alternate, so a machine
whose speed drifts (shared CPUs) affects both alike. Prints JSON: median wall ms per chunk of each,
the ratio ours/reference, and the max |actions difference|.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from tests.support.reference_smolvla import ReferenceSmolVLA
from vlaworld.bench.stack import REAL_VLM_JSON, bench_config
from vlaworld.checkpoint.strict import load_strict
from vlaworld.models.flow_matching import PrefixInputs
from vlaworld.models.smolvla import SmolVLAModel


def build(seed: int = 0) -> tuple[ReferenceSmolVLA, SmolVLAModel, object]:
    from transformers import SmolVLMConfig

    config = bench_config("real")
    p = config.policy
    torch.manual_seed(seed)
    ref = ReferenceSmolVLA(
        SmolVLMConfig(**REAL_VLM_JSON), num_vlm_layers=p.num_vlm_layers, width_mult=p.expert_width_multiplier,
        chunk=p.chunk_size, max_state=p.max_state_dim, max_action=p.max_action_dim,
        n_every=p.self_attn_every_n_layers, cross=p.attention_mode == "cross_attn",
        num_expert_layers=p.num_expert_layers, num_steps=p.num_steps,
    ).eval()
    with torch.device("meta"):
        ours = config.architecture.build()
    load_strict(ours, ref.lerobot_state_dict(), source="reference state dict")
    return ref, ours.eval(), p


def inputs(p, bsz: int, seed: int = 1) -> tuple:
    g = torch.Generator().manual_seed(seed)
    size = p.resize_imgs_with_padding[0]
    images = [torch.rand(bsz, 3, size, size, generator=g) * 2 - 1 for _ in p.image_features]
    masks = [torch.ones(bsz, dtype=torch.bool) for _ in p.image_features]
    tokens = torch.randint(0, 1000, (bsz, p.tokenizer_max_length), generator=g)
    tok_masks = torch.ones(bsz, p.tokenizer_max_length, dtype=torch.bool)
    state = torch.randn(bsz, p.max_state_dim, generator=g)
    noise = torch.randn(bsz, p.chunk_size, p.max_action_dim, generator=g)
    return images, masks, tokens, tok_masks, state, noise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeats", type=int, default=3, help="timed calls of each model per batch size (after one warm-up)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ref, ours, policy = build()

    def run_ref(x):
        return ref.sample_actions(*x)

    def run_ours(x):
        images, masks, tokens, tok_masks, state, noise = x
        prefix = PrefixInputs(images=tuple(images), image_masks=tuple(masks), tokens=tokens, token_masks=tok_masks,
                              state=state)
        return ours.model.sample_actions(ours.model.encode_prefix(prefix), noise)

    out = {"threads": torch.get_num_threads(), "per_batch": {}}
    with torch.no_grad():
        for bsz in args.batch:
            x = inputs(policy, bsz)
            diff = (run_ours(x) - run_ref(x)).abs().max().item()  # also the warm-up
            times: dict[str, list[float]] = {"ours": [], "reference": []}
            for _ in range(args.repeats):
                for name, fn in (("ours", run_ours), ("reference", run_ref)):
                    t0 = time.perf_counter()
                    fn(x)
                    times[name].append(1000.0 * (time.perf_counter() - t0))
            med = {k: statistics.median(v) for k, v in times.items()}
            out["per_batch"][str(bsz)] = {"ours_ms": round(med["ours"], 1), "reference_ms": round(med["reference"], 1),
                                          "ratio": round(med["ours"] / med["reference"], 3),
                                          "max_abs_diff": diff, "samples_ms": times}
            print(f"B={bsz}: ours {med['ours']:.0f} ms, reference {med['reference']:.0f} ms", flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
