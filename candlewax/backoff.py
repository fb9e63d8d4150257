"""Retry timing shared by every process that retries: capped exponential backoff with jitter."""

from __future__ import annotations

import random


class Backoff:
    """``base_s``, doubling up to ``cap_s``, each delay × U(0.5, 1) so that many clients retrying
    the same thing spread out; ``reset()`` after a success."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 30.0) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.cap_s, self.base_s * 2**self.attempt)
        self.attempt += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0
