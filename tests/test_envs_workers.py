"""Process hygiene: an env made in a parent runs in forked and spawned workers; exit is quiet.

Each scenario runs in a fresh interpreter, as an evaluator would: a pytest process that already
rendered could not fork safely (llvmpipe's threads do not survive fork), which is the point.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import vlaworld.envs as ve

pytestmark = pytest.mark.libero

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(ve.__file__))))

WORKERS = textwrap.dedent(
    """
    import multiprocessing as mp, sys
    import numpy as np
    import vlaworld.envs as ve

    def episode_start(env):
        obs, info = env.reset(options={"episode": 2})
        obs, *_ = env.step(np.zeros(7, np.float32))
        env.close()
        return obs["observation.state"], int(obs["observation.images.image"].sum())

    if __name__ == "__main__":
        env = ve.make("libero_goal", 1)  # built here, simulated only in the workers
        results = {}
        for method in ("fork", "spawn"):
            with mp.get_context(method).Pool(1) as pool:
                results[method] = pool.apply(episode_start, (env,))
        assert env._sim is None and "OpenGL" not in sys.modules, "the parent must not touch GL"
        np.testing.assert_array_equal(results["fork"][0], results["spawn"][0])
        assert results["fork"][1] == results["spawn"][1] > 0
        print("ok")
    """
)

UNCLOSED = textwrap.dedent(
    """
    import vlaworld.envs as ve
    env = ve.make("libero_spatial", 0)
    env.reset()
    print("ok")  # exits without close(): raw robosuite prints EGL errors at teardown here
    """
)


def run_script(code: str, tmp_path) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)


def test_env_made_in_parent_runs_in_fork_and_spawn_workers(tmp_path) -> None:
    done = run_script(WORKERS, tmp_path)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_exit_without_close_is_quiet(tmp_path) -> None:
    done = run_script(UNCLOSED, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "EGL" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr[-3000:]
