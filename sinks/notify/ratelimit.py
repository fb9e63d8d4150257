"""Sliding-window rate limits that hold whatever the network latency.

A send *reserves* a slot before the request and *completes* it when the answer arrives; the slot
counts as "now" while in flight and from its completion time after. The platform saw the request
before we saw its answer, so two sends ``count`` slots apart reach the platform at least
``window`` seconds apart: the limit holds on the platform's clock, not just on ours.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence

from candlewax.settings.notify import Rate

__all__ = ["Rate", "RateLimiter"]


class RateLimiter:
    """Thread-safe: one destination's limits, or a limit shared by several (a Telegram bot)."""

    def __init__(self, rates: Sequence[Rate], clock: Callable[[], float] = time.monotonic) -> None:
        self.rates = tuple(rates)
        self._clock = clock
        self._lock = threading.Lock()
        self._longest = max((r.window_s for r in self.rates), default=0.0)
        self._done: collections.deque[float] = collections.deque()
        self._in_flight = 0

    @property
    def min_interval_s(self) -> float:
        """The steady-state spacing of sends these limits allow."""
        return max((r.window_s / r.count for r in self.rates), default=0.0)

    def _delay(self, now: float) -> float:
        while self._done and now - self._done[0] >= self._longest:
            self._done.popleft()
        delay = 0.0
        for rate in self.rates:
            recent = [t for t in self._done if now - t < rate.window_s]
            need = len(recent) + self._in_flight - rate.count + 1  # slots that must free up
            if need <= 0:
                continue
            if need > len(recent):  # only an in-flight send completing can free one
                delay = max(delay, 0.02)
            else:
                delay = max(delay, recent[need - 1] + rate.window_s - now)
        return delay

    def try_reserve(self) -> float:
        """0.0 and a slot reserved, or the seconds to wait before asking again."""
        if not self.rates:
            return 0.0
        with self._lock:
            delay = self._delay(self._clock())
            if delay <= 0:
                self._in_flight += 1
                return 0.0
            return delay

    def complete(self) -> None:
        """The reserved send got its answer (or failed): its slot counts from now."""
        if not self.rates:
            return
        with self._lock:
            self._in_flight -= 1
            self._done.append(self._clock())

    def release(self) -> None:
        """A reserved slot that was not used after all."""
        if not self.rates:
            return
        with self._lock:
            self._in_flight -= 1
