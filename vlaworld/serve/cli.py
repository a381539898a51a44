"""``python -m vlaworld.serve``: serve a policy over openpi's WebSocket protocol.

    python -m vlaworld.serve --ckpt DIR|demo [--port 8000] [--memory MODE] [--device cuda] [--compile]

Clients: ``openpi_client.websocket_client_policy.WebsocketClientPolicy(host, port)``, or the evaluator
(``python -m vlaworld.eval ... --policy-server ws://HOST:PORT``). Stop with Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from vlaworld.errors import one_line_errors
from vlaworld.config.world import MEMORY_MODES, WORLD_PREPROCESS_MODES
from vlaworld.config.numerics import DEFAULT_PROFILE, PROFILES

DTYPES = ("float32", "bfloat16", "float16")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m vlaworld.serve", description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", default="demo", help="LeRobot pretrained_model/ directory, or 'demo' (the built-in "
                    "tiny random-weight smolvla_world policy; the default)")
    ap.add_argument("--host", default="0.0.0.0", help="interface to listen on (default all)")
    ap.add_argument("--port", type=int, default=8000, help="TCP port (default %(default)s, openpi's; 0: any free one)")
    ap.add_argument("--memory", choices=[m for m in MEMORY_MODES if m != "shuffle"],
                    help="world memory rollout mode (default: the checkpoint's)")
    ap.add_argument("--device", default="auto", help="torch device: auto (CUDA if present), cpu, cuda, cuda:1, ...")
    ap.add_argument("--dtype", choices=DTYPES, help="cast the whole policy (default: each part as LeRobot runs it)")
    ap.add_argument("--numerics", choices=PROFILES, default=DEFAULT_PROFILE,
                    help="the LeRobot generation whose actions to reproduce (default %(default)s)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the hot steps (batches padded to powers of 2)")
    ap.add_argument("--cuda-graphs", action="store_true", help="replay the denoising loop from a CUDA graph (opt-in)")
    ap.add_argument("--n-action-steps", type=int, help="reported in the metadata (default: the checkpoint's); "
                    "every reply carries the whole chunk")
    ap.add_argument("--vlm", help="local SmolVLM directory (config + tokenizer), else the offline HF cache")
    ap.add_argument("--world-encoder", help="local V-JEPA 2 directory, else the offline HF cache")
    ap.add_argument("--world-preprocess", choices=WORLD_PREPROCESS_MODES, default="default",
                    help="V-JEPA input: as the training latents were made (default) or the plugin's (legacy)")
    ap.add_argument("--stats", help="normalisation stats file replacing the checkpoint's")
    ap.add_argument("--window-ms", type=float, default=5.0,
                    help="how long a batch waits for more requests after the first (default %(default)s ms)")
    ap.add_argument("--max-batch", type=int, default=32, help="rows per policy call at most (default %(default)s); "
                    "1 makes every reply's float math independent of other clients'")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    return ap


@one_line_errors("vlaworld.serve")  # bad input or environment: one line; bugs keep their traceback
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        import websockets  # noqa: F401 - the optional extra, checked before minutes of loading
        import msgpack  # noqa: F401
    except ImportError as exc:
        print(f"vlaworld.serve: error: {exc.name} is missing; install the extra: pip install 'vlaworld[serve]'",
              file=sys.stderr)
        return 2
    import torch

    from vlaworld.load import load_policy
    from vlaworld.serve.config import ServeConfig
    from vlaworld.serve.server import PolicyServer

    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt, vlm, world, kind = args.ckpt, args.vlm, args.world_encoder, "checkpoint"
    if ckpt == "demo":
        from vlaworld.demo import ensure_demo

        paths = ensure_demo()
        ckpt, vlm, world, kind = str(paths.ckpt), vlm or str(paths.vlm), world or str(paths.world_encoder), "demo"
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    config = ServeConfig(host=args.host, port=args.port, window_ms=args.window_ms, max_batch=args.max_batch)
    policy = load_policy(ckpt, device=device, dtype=args.dtype, memory=args.memory,
                                  numerics=args.numerics, n_action_steps=args.n_action_steps,
                                  compile=args.compile, vlm=vlm, world_encoder=world, stats=args.stats,
                                  world_preprocess=args.world_preprocess, cuda_graphs=args.cuda_graphs)
    server = PolicyServer(policy, config, policy_kind=kind)
    print(f"vlaworld.serve: {kind} policy {ckpt} loaded on {device} (pid {os.getpid()})", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        return 0
    return 0
