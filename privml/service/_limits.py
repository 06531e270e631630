"""What one server process allows: sizes, rates, times, and slowing down token guessers.

The counters live in each worker process: with ``workers=2`` a principal gets up
to twice the rate. They protect the server from floods and guessing; budgets and
access are decided in the vault's database, shared by every worker.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from ..exceptions import ConfigurationError
from ..vault._replies import MAX_BODY_BYTES

__all__ = ["FailureThrottle", "Limits", "RateLimiter"]


@dataclass(frozen=True)
class Limits:
    """A server's limits.

    Attributes
    ----------
    max_body_bytes : int
        Largest request body (an encrypted batch and its public context are the
        largest); a larger one is refused (413) before it is read.
    max_rows : int
        Most rows in one response to a read; larger reads come in pages.
    rate : float
        Requests per second each principal may make, on average (per worker).
    burst : int
        Requests a principal may make at once before ``rate`` applies.
    timeout : float
        Seconds a request may run before the client is told to retry (503).
        A release that finishes after that keeps its answer for the retry.
    training_timeout : float
        The same for server-side DP-SGD runs.
    failures_before_delay : int
        Failed authentications from one address (in ``failure_window`` seconds)
        before each further attempt from it is delayed, doubling up to 5 s.
    failure_window : float
        Seconds over which failed authentications are counted.
    in_flight : int
        Requests of one principal running at once (per worker); more are refused (429).
    frame_cache_bytes : int
        Memory for decrypted dataset versions kept between releases (each version
        is read and decrypted once, its keys still checked at every read).
    max_reply_bytes : int
        Largest answer to a release (at most 64 MiB, what a stored reply holds). A
        larger one is refused after its charge, and the refusal is stored as the
        request's answer, so a retry with the same request id gets it again.

    Examples
    --------
    >>> Limits(rate=5).burst
    100
    """

    max_body_bytes: int = 64 * 2**20
    max_rows: int = 250_000
    rate: float = 200.0
    burst: int = 100
    timeout: float = 60.0
    training_timeout: float = 900.0
    failures_before_delay: int = 5
    failure_window: float = 60.0
    frame_cache_bytes: int = 256 * 2**20
    in_flight: int = 16
    max_reply_bytes: int = 64 * 2**20

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_rows",
            "burst",
            "failures_before_delay",
            "frame_cache_bytes",
            "in_flight",
            "max_reply_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"Limits({name}=...) must be a positive integer")
        if self.max_reply_bytes > MAX_BODY_BYTES:
            raise ConfigurationError(
                f"Limits(max_reply_bytes=...) is at most {MAX_BODY_BYTES} (64 MiB), what a "
                "stored reply holds"
            )
        for name in ("rate", "timeout", "training_timeout", "failure_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigurationError(f"Limits({name}=...) must be a positive number")
            if not (math.isfinite(value) and value > 0):
                raise ConfigurationError(f"Limits({name}=...) must be a positive number")


class RateLimiter:
    """A token bucket per principal: ``rate`` per second, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, principal: str) -> float | None:
        """Take one request for ``principal``: None if allowed, else seconds to wait."""
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(principal, (float(self._burst), now))
            tokens = min(float(self._burst), tokens + (now - then) * self._rate)
            if tokens >= 1.0:
                self._buckets[principal] = (tokens - 1.0, now)
                return None
            self._buckets[principal] = (tokens, now)
            return (1.0 - tokens) / self._rate


class FailureThrottle:
    """Failed authentications per client address, and how long to hold the next attempt."""

    def __init__(self, allowed: int, window: float) -> None:
        self._allowed = allowed
        self._window = window
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def delay(self, address: str) -> float:
        """Seconds to hold an attempt from ``address`` (0 unless it failed repeatedly)."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(address, ()) if now - t < self._window]
            if recent:
                self._failures[address] = recent
            else:
                self._failures.pop(address, None)
        over = len(recent) - self._allowed
        return 0.0 if over < 0 else min(5.0, 0.1 * 2.0**over)

    def failed(self, address: str) -> None:
        """Count a failed authentication from ``address``."""
        with self._lock:
            if len(self._failures) > 100_000:  # a flood of addresses: forget the oldest half
                for key in list(self._failures)[:50_000]:
                    del self._failures[key]
            self._failures.setdefault(address, []).append(time.monotonic())
            del self._failures[address][: -4 * self._allowed - 16]
