"""Errors a caller of the server may catch without importing the server (no ``websockets`` needed)."""

from vlaworld.errors import VlaworldError


class PolicyServerError(VlaworldError, RuntimeError):
    """The server could not be reached, closed the connection, or refused a request."""
