"""The one exception hierarchy of candlewax.

Per-message problems are *data* (a :class:`ParseError` turned into a dead-letter record and a
metric), never exceptions that stop a stream. Exceptions that do propagate are configuration or
infrastructure problems, and their messages say what went wrong, where, and what to do.
"""

from __future__ import annotations


class CandlewaxError(Exception):
    """Base class of every error candlewax raises on purpose."""


class ConfigError(CandlewaxError):
    """Invalid settings: a bad value, an unknown key, a missing file."""


class BrokerError(CandlewaxError):
    """The embedded broker could not start, or a Kafka broker is unreachable."""


class ParseError(CandlewaxError):
    """One input message is invalid. ``reason`` is a short, bounded label used in metrics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class DeliveryError(CandlewaxError):
    """Kafka did not confirm delivery of produced messages."""
