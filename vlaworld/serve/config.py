"""The server's settings (torch- and websockets-free, so callers can build them without the extra)."""

from __future__ import annotations

from dataclasses import dataclass

from vlaworld.errors import UsageError


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    host: str = "0.0.0.0"
    port: int = 8000  # openpi's default; 0 lets the OS choose (PolicyServer.port tells which)
    window_ms: float = 5.0  # how long a batch waits for more requests once the first has arrived
    max_batch: int = 32  # rows per policy call at most
    max_message_mb: float = 256.0  # larger messages are refused (a 256² camera frame is 0.2 MB)

    def __post_init__(self) -> None:
        if self.window_ms < 0:
            raise UsageError(f"window_ms must be >= 0, got {self.window_ms}")
        if self.max_batch < 1:
            raise UsageError(f"max_batch must be >= 1, got {self.max_batch}")
        if not 0 <= self.port < 65536:
            raise UsageError(f"port must be in 0..65535, got {self.port}")
