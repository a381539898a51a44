"""Timing helpers: warm up, repeat, synchronise, summarise.

GPU work is asynchronous, so a wall clock around a CUDA call measures the launch, not the work:
on CUDA every sample is bracketed by CUDA events and the stream is synchronised before reading them.
The first calls are dropped (lazy initialisation, autotuning, torch.compile), and the summary leads
with the median, which a noisy shared machine disturbs least.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True, kw_only=True)
class Stats:
    """Summary of repeated samples, in milliseconds."""

    median: float
    mean: float
    min: float
    max: float
    stdev: float  # sample standard deviation; 0.0 for a single sample
    n: int

    def as_dict(self, digits: int = 3) -> dict[str, Any]:
        return {k: round(v, digits) if isinstance(v, float) else v for k, v in asdict(self).items()}


def summarize(samples_ms: list[float]) -> Stats:
    """Median, mean, extremes and spread of a non-empty list of samples."""
    if not samples_ms:
        raise ValueError("summarize needs at least one sample")
    return Stats(
        median=statistics.median(samples_ms),
        mean=statistics.fmean(samples_ms),
        min=min(samples_ms),
        max=max(samples_ms),
        stdev=statistics.stdev(samples_ms) if len(samples_ms) > 1 else 0.0,
        n=len(samples_ms),
    )


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """Steady-state stats plus the cost of the first call (where compilation and capture happen).

    ``cpu_ms`` is the median CPU time of this process per timed call, all threads together: on a
    shared machine wall time includes waiting for cores, CPU time does not (on CUDA it is the host
    cost of launching the work).
    """

    stats: Stats
    first_call_ms: float
    cpu_ms: float

    def as_dict(self) -> dict[str, Any]:
        return self.stats.as_dict() | {"first_call_ms": round(self.first_call_ms, 3), "cpu_ms": round(self.cpu_ms, 3)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device | str) -> float:
    """Milliseconds one call of ``fn`` takes, device work included."""
    device = torch.device(device)
    _sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))
    t0 = time.perf_counter()
    fn()
    return 1000.0 * (time.perf_counter() - t0)


def measure(fn: Callable[[], Any], device: torch.device | str, *, warmup: int, repeats: int) -> Measurement:
    """Call ``fn`` once (timed apart), ``warmup - 1`` more times untimed, then ``repeats`` timed times."""
    if repeats < 1 or warmup < 1:
        raise ValueError(f"need warmup >= 1 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    first = time_call(fn, device)
    for _ in range(warmup - 1):
        time_call(fn, device)
    wall, cpu = [], []
    for _ in range(repeats):
        c0 = time.process_time()
        wall.append(time_call(fn, device))
        cpu.append(1000.0 * (time.process_time() - c0))
    return Measurement(stats=summarize(wall), first_call_ms=first, cpu_ms=statistics.median(cpu))
