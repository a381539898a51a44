"""The one base class of vlaworld's user-facing errors.

A ``VlaworldError`` says what was wrong with the user's input or environment and how to fix it; the
command-line tools print it as one line and exit with status 2. Anything else is a bug and keeps its
traceback. Subclasses also derive from the builtin that fits (ValueError, FileNotFoundError...), so
callers catching those keep working. Torch-free, importing only the standard library: every layer may raise these.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class VlaworldError(Exception):
    """A problem with the user's input or environment, stated with what to do about it."""


class UsageError(VlaworldError, ValueError):
    """A flag or argument value that cannot work; the message says which and what to pass instead."""


def one_line_errors(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate a CLI ``main``: a ``VlaworldError`` or ``OSError`` (disk full, file missing, port taken)
    is printed as ``PROG: error: MESSAGE`` with exit status 2; any other exception is a bug and raises
    with its traceback."""
    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except (VlaworldError, OSError) as exc:
                print(f"{prog}: error: {exc}", file=sys.stderr)
                return 2

        return run

    return wrap
