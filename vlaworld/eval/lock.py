"""An advisory lock on a run directory, held for the whole run (SPEC §8).

Two evaluators on one ``--out`` both ran every episode, and two started together with different settings
both passed the resume check and interleaved their records under one ``run.json``. The second one now
stops at once, saying who holds the directory. The lock is ``flock`` on ``RUN_DIR/.lock``: the kernel
drops it when its process ends, however it ends, so a run killed with SIGKILL leaves nothing that blocks
the next one; the holder's description it left in the file is reported as taken over.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from vlaworld.errors import VlaworldError

LOCK_FILE = ".lock"


class RunDirLocked(VlaworldError, RuntimeError):
    """Another evaluator holds the run directory."""


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block; RunDirLocked at once if another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirLocked(
                f"{run_dir} is in use by another evaluator ({_describe(_read(fd))}); wait for it to finish, stop "
                "it, or pass another --out"
            ) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            warnings.warn(f"{run_dir}: this filesystem does not support locks ({exc.strerror}); make sure no "
                          "other evaluator writes to this run directory", stacklevel=3)
        stale = _read(fd)
        if stale:
            warnings.warn(f"{run_dir}: took over the lock of a run that ended without releasing it "
                          f"({_describe(stale)})", stacklevel=3)
        _write(fd, {"pid": os.getpid(), "host": socket.gethostname(), "argv": sys.argv,
                    "since_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a normal end leaves the file empty: nothing to report as taken over
    finally:
        os.close(fd)  # releases the flock


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 1 << 16)
    try:
        value = json.loads(data) if data else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"note": "unreadable holder description"}
    return value if isinstance(value, dict) else {}


def _write(fd: int, holder: dict) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(holder).encode())
    os.fsync(fd)


def _describe(holder: dict) -> str:
    if not holder:
        return "no description"
    argv = " ".join(holder.get("argv") or [])
    return (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since_utc')}"
            + (f": {argv}" if argv else ""))
