"""The one base class of vlaworld's user-facing errors.

A ``VlaworldError`` says what was wrong with the user's input or environment and how to fix it; the
command-line tools print it as one line and exit with status 2. Anything else is a bug and keeps its
traceback. Subclasses also derive from the builtin that fits (ValueError, FileNotFoundError...), so
callers catching those keep working. Torch-free and import-free: every layer may raise these.
"""

from __future__ import annotations


class VlaworldError(Exception):
    """A problem with the user's input or environment, stated with what to do about it."""


class UsageError(VlaworldError, ValueError):
    """A flag or argument value that cannot work; the message says which and what to pass instead."""
