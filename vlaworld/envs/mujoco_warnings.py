"""MuJoCo's warnings go to the log, never to ``MUJOCO_LOG.TXT`` in the working directory.

Without a user handler MuJoCo prints a warning and also appends it to ``MUJOCO_LOG.TXT`` in whatever
directory the process runs in (engine_util_errmem.c ``mju_warning``): a NaN action wrote that file into
the user's project. The handler replaces both with one logged line.
"""

from __future__ import annotations

import logging

log = logging.getLogger("vlaworld.envs.mujoco")
_installed = False


def _warn(message: str) -> None:
    log.warning("MuJoCo: %s", message)


def route_mujoco_warnings() -> None:
    """Install the handler once per process (MuJoCo's hook is process-wide)."""
    global _installed
    if not _installed:
        import mujoco

        mujoco.set_mju_user_warning(_warn)
        _installed = True
