"""The whole Euler loop as one CUDA graph: small VLAs are launch-bound, so replaying ~10×16 layers of
kernels from one graph is what brings a chunk from hundreds of launches to one.

A graph is captured per (batch, prefix length, with/without memory) shape on first use; each call
copies the chunk's prefix cache, noise and memory into the captured (static) buffers and replays.
The prefix pass itself (run once per chunk) stays outside the graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlaworld.models.expert import PrefixCache
from vlaworld.models.flow_matching import PrefixState, VLAFlowMatching, euler_times

WARMUP_STEPS = 2  # eager runs on a side stream before capture (lets lazy inits and autotuning happen)


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    prefix: PrefixState
    noise: torch.Tensor
    memory: torch.Tensor | None
    times: list[torch.Tensor]  # captured inputs too: freed, their memory would be reused under the graph
    out: torch.Tensor


def _clone_state(p: PrefixState) -> PrefixState:
    c = p.cache
    cache = PrefixCache(
        keys={i: t.clone() for i, t in c.keys.items()},
        values={i: t.clone() for i, t in c.values.items()},
        cross_keys={i: t.clone() for i, t in c.cross_keys.items()},
        cross_values={i: t.clone() for i, t in c.cross_values.items()},
        prefix_len=c.prefix_len,
    )
    return PrefixState(cache=cache, pad_mask=p.pad_mask.clone(), suffix_positions=p.suffix_positions.clone(),
                       full_mask=p.full_mask.clone())


def _copy_state(dst: PrefixState, src: PrefixState) -> None:
    for name in ("keys", "values", "cross_keys", "cross_values"):
        d, s = getattr(dst.cache, name), getattr(src.cache, name)
        for i in d:
            d[i].copy_(s[i])
    dst.pad_mask.copy_(src.pad_mask)
    dst.suffix_positions.copy_(src.suffix_positions)
    dst.full_mask.copy_(src.full_mask)


class CudaGraphSampler:
    """Drop-in for ``head.sample_actions`` on CUDA, replaying a captured Euler loop."""

    def __init__(self, head: VLAFlowMatching) -> None:
        self.head = head
        self._graphs: dict[tuple, _Captured] = {}

    @torch.no_grad()
    def __call__(self, prefix: PrefixState, noise: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        if noise.device.type != "cuda":
            raise ValueError("CudaGraphSampler needs CUDA tensors; use head.sample_actions on other devices")
        key = (noise.shape[0], prefix.pad_mask.shape[1], memory is None)
        cap = self._graphs.get(key) or self._capture(prefix, noise, memory, key)
        _copy_state(cap.prefix, prefix)
        cap.noise.copy_(noise)
        if memory is not None:
            cap.memory.copy_(memory)
        cap.graph.replay()
        return cap.out.clone()

    def _capture(self, prefix: PrefixState, noise: torch.Tensor, memory: torch.Tensor | None, key: tuple) -> _Captured:
        head = self.head
        static_prefix = _clone_state(prefix)
        static_noise = noise.clone()
        static_memory = None if memory is None else memory.clone()
        times = head.time_embeddings(euler_times(head.cfg.num_steps), noise.shape[0], noise.device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_STEPS):
                head.sample_actions(static_prefix, static_noise, static_memory, times)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = head.sample_actions(static_prefix, static_noise, static_memory, times)
        cap = _Captured(graph=graph, prefix=static_prefix, noise=static_noise, memory=static_memory, times=times,
                        out=out)
        self._graphs[key] = cap
        return cap
