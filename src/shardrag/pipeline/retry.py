"""Retries: exponential backoff with jitter, and which failures are worth one."""

from __future__ import annotations

import random
from dataclasses import dataclass

from shardrag.config import Settings
from shardrag.errors import InternalError, ShardragError


@dataclass(frozen=True)
class Retry:
    """``max_attempts`` deliveries, the n-th retry after ~``base * 2**(n-1)`` seconds.

    The delay is drawn from [d/2, d] ("equal jitter"): retries of many events that failed
    together spread out instead of hitting a recovering dependency at the same instant.
    """

    max_attempts: int = 5
    base_seconds: float = 0.5
    max_seconds: float = 30.0
    #: A delivery neither acked nor nak'd within this long is delivered again (a worker
    #: that died with it); it also bounds how long one batch of a stage may take.
    ack_wait: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Retry:
        """The policy the settings name (max_attempts, retry_*_seconds, ack_wait_seconds)."""
        return cls(
            settings.max_attempts,
            settings.retry_base_seconds,
            settings.retry_max_seconds,
            settings.ack_wait_seconds,
        )

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed delivery."""
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1))
        return random.uniform(ceiling / 2, ceiling)


def as_error(exc: BaseException) -> ShardragError:
    """The ``ShardragError`` to record for a failure (unexpected ones become internal)."""
    if isinstance(exc, ShardragError):
        return exc
    return InternalError(f"{type(exc).__name__}: {exc}")


def permanent(error: ShardragError) -> bool:
    """A failure a retry cannot fix: the input itself is refused (a 4xx)."""
    return error.status < 500
