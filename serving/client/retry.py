"""Retrying with exponential backoff, on UNAVAILABLE (HTTP 503) only."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from serving.client.errors import UnavailableError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a request that got UNAVAILABLE / HTTP 503.

    UNAVAILABLE means the request was not processed (server starting, overloaded batch
    queue, connection refused), so sending it again is safe. Every other error, including
    DEADLINE_EXCEEDED, is raised at once: repeating it would give the same answer or double
    the server's load.

    The n-th retry waits a random time in ``[d/2, d]`` with
    ``d = min(max_backoff, initial_backoff * multiplier ** (n - 1))`` (jitter spreads out
    clients that failed together).

    Example:
        >>> policy = RetryPolicy(retries=2, initial_backoff=0.0)
        >>> calls = []
        >>> def flaky():
        ...     calls.append(1)
        ...     if len(calls) < 3:
        ...         raise UnavailableError("warming up")
        ...     return "ok"
        >>> policy.call(flaky), len(calls)
        ('ok', 3)
    """

    retries: int = 3
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and multiplier >= 1")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return random.uniform(ceiling / 2, ceiling)

    def call(self, function: Callable[..., T], *args: object, **kwargs: object) -> T:
        """``function(*args, **kwargs)``, retried on :class:`UnavailableError`."""
        retry = 0
        while True:
            try:
                return function(*args, **kwargs)
            except UnavailableError:
                retry += 1
                if retry > self.retries:
                    raise
                self.sleep(self.delay(retry))
