"""Headless OpenGL selection for MuJoCo, decided before anything imports mujoco or PyOpenGL.

`mujoco` picks its GL backend from MUJOCO_GL at import time and PyOpenGL fixes its platform from
PYOPENGL_PLATFORM at import time, so the choice cannot be changed afterwards in a process. We
therefore probe in a short child process (never creating a GL context here) and export the result
in the environment, which worker processes inherit without probing again.
"""

from __future__ import annotations

import os
import subprocess
import sys

from vlaworld.errors import VlaworldError

# Tried in order when MUJOCO_GL is unset: EGL (Mesa llvmpipe or a GPU driver), then OSMesa.
BACKENDS: tuple[str, ...] = ("egl", "osmesa")
_PROBE_TIMEOUT_S = 60.0
# Creates and frees one tiny context: the smallest thing that fails the way a real env would.
_PROBE = "import mujoco; c = mujoco.GLContext(16, 16); c.make_current(); c.free()"
_INSTALL_HINT = (
    "Install a headless OpenGL: EGL (Debian/Ubuntu: apt-get install libegl1 libgl1-mesa-dri; "
    "conda: conda install -c conda-forge mesalib libglvnd) or OSMesa (apt-get install libosmesa6), "
    "then retry, or set MUJOCO_GL yourself (egl, osmesa or glx)."
)


class HeadlessGLError(VlaworldError, RuntimeError):
    """No headless OpenGL backend works in this environment."""


def _gl_modules_imported() -> list[str]:
    # robosuite picks its GL context class at import; PyOpenGL fixes its platform at import. A bare
    # `import mujoco` is harmless: robosuite creates its contexts through its own modules.
    return [m for m in ("OpenGL", "robosuite") if m in sys.modules]


def probe_backend(backend: str) -> str | None:
    """Try `backend` in a child process; return None if it works, else the child's error text."""
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return f"timed out after {_PROBE_TIMEOUT_S:.0f} s"
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"


def configure_headless_gl() -> str:
    """Choose the GL backend for this process and its children; return it ("egl", "osmesa", ...).

    A MUJOCO_GL set by the user is kept (PYOPENGL_PLATFORM follows it when unset). Otherwise EGL is
    probed, then OSMesa; the first that works is exported. Raises HeadlessGLError naming what to
    install when none works, or when mujoco was already imported without a backend chosen.
    """
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen:
        if chosen in BACKENDS:
            os.environ.setdefault("PYOPENGL_PLATFORM", chosen)
        return chosen
    imported = _gl_modules_imported()
    if imported:
        raise HeadlessGLError(
            f"{', '.join(imported)} was imported before the GL backend was chosen, so MUJOCO_GL can no "
            "longer take effect. Call vlaworld.envs.configure_headless_gl() (or set MUJOCO_GL=egl) "
            "before importing robosuite, OpenGL or libero.libero.envs."
        )
    errors = {}
    for backend in BACKENDS:
        error = probe_backend(backend)
        if error is None:
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
        errors[backend] = error
    tried = "; ".join(f"{b}: {e}" for b, e in errors.items())
    raise HeadlessGLError(f"No headless OpenGL backend works ({tried}). {_INSTALL_HINT}")
