"""Named-config lookup shared by the model files' ``CONFIGS`` tables."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def lookup(table: Mapping[str, T], name: str, kind: str) -> T:
    """``table[name]``; an unknown name is a KeyError that lists the known ones and the closest match."""
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown {kind} config {name!r}; known: {', '.join(table)}.{hint}")
    return table[name]
