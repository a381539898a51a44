"""The bytes on the wire: msgpack with openpi's numpy extension, so ``openpi-client`` reads and writes it.

openpi-client (``openpi_client.msgpack_numpy``) encodes a numpy array as a msgpack map
``{b"__ndarray__": True, b"data": <raw bytes>, b"dtype": dtype.str, b"shape": shape}`` and a numpy
scalar as ``{b"__npgeneric__": True, b"data": value, b"dtype": dtype.str}``; object, void and complex
dtypes are refused (no pickle, ever). This module writes and reads exactly that, and turns anything
malformed into a ``WireError`` the server can answer with, instead of an exception in the connection.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

_ARRAY = b"__ndarray__"
_SCALAR = b"__npgeneric__"
_REFUSED_KINDS = ("V", "O", "c")  # void, object (would need pickle), complex: as openpi-client


class WireError(ValueError):
    """A message that is not msgpack in openpi's numpy encoding."""


def _encode(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in _REFUSED_KINDS:
        raise WireError(f"cannot send numpy dtype {obj.dtype} (object, void and complex are not portable)")
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        return {_ARRAY: True, b"data": arr.tobytes(), b"dtype": arr.dtype.str, b"shape": list(arr.shape)}
    if isinstance(obj, np.generic):
        return {_SCALAR: True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot encode {type(obj).__name__} as msgpack")


def _decode(obj: dict) -> Any:
    if _ARRAY in obj:
        try:
            dtype = np.dtype(obj[b"dtype"])
            if dtype.kind in _REFUSED_KINDS:
                raise WireError(f"array dtype {dtype} is refused (object, void and complex are not portable)")
            shape = tuple(int(n) for n in obj[b"shape"])
            return np.ndarray(buffer=obj[b"data"], dtype=dtype, shape=shape)  # read-only view of the message
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(f"malformed numpy array in the message: {exc}") from exc
    if _SCALAR in obj:
        try:
            dtype = np.dtype(obj[b"dtype"])
            if dtype.kind in _REFUSED_KINDS:
                raise WireError(f"scalar dtype {dtype} is refused")
            return dtype.type(obj[b"data"])
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(f"malformed numpy scalar in the message: {exc}") from exc
    return obj


def packb(obj: Any) -> bytes:
    """Python / numpy values -> one msgpack message."""
    return msgpack.packb(obj, default=_encode)


def unpackb(data: bytes | bytearray | memoryview) -> Any:
    """One msgpack message -> Python / numpy values (arrays are read-only views of ``data``)."""
    try:
        return msgpack.unpackb(data, object_hook=_decode)
    except WireError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise WireError(f"not a msgpack message ({type(exc).__name__}: {exc})") from exc
