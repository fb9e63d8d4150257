"""Stream names, as Binance spells them with the venue in front: ``binance:btcusdt@kline_1m``.

A name is parsed once, when a client asks for it, into a :class:`Stream`. Its ``channel`` is
the canonical spelling (venue always there, symbol lower case) that the hub files subscribers
under; the client keeps the spelling it asked for, which comes back in ``LIST_SUBSCRIPTIONS``
and in the ``stream`` member of combined messages (as Binance does).

    binance:btcusdt@kline_1m   the forming bar (x: false) at most once per push interval, then
                               the closed bar of the flow (x: true)
    binance:btcusdt@trade      every trade
    binance:btcusdt@ticker     24 h rolling statistics from the 1m bars
    !ticker@arr                every symbol's ticker (those that changed), once per interval
    binance:btcusdt@alert      the symbol's alerts
    !alert                     every alert
    user                       the private stream of a logged-in client

Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from candlewax.codec.rules import SYMBOL_PATTERN, VENUE_PATTERN

Kind = Literal["kline", "trade", "ticker", "alert", "all_tickers", "all_alerts", "user"]
#: Kinds whose newer value replaces an unsent older one (never pile up in a client's queue).
CONFLATED: Final = frozenset({"kline", "ticker", "all_tickers"})
#: Longest stream name accepted (the longest venue, symbol and suffix fit easily).
MAX_NAME: Final = 128

_NAME = re.compile(
    rf"(?:(?P<venue>{VENUE_PATTERN}):)?(?P<symbol>{SYMBOL_PATTERN.replace('A-Z', 'A-Za-z')})"
    r"@(?P<kind>kline_(?P<interval>[0-9a-z]{1,4})|trade|ticker|alert)"
)
_GLOBAL: Final[dict[str, Kind]] = {"!ticker@arr": "all_tickers", "!alert": "all_alerts"}


class StreamError(ValueError):
    """A stream name the gateway does not serve; the text says why, for the client."""


@dataclass(frozen=True, slots=True)
class Stream:
    kind: Kind
    venue: str = ""
    symbol: str = ""
    interval: str = ""

    @property
    def channel(self) -> str:
        """The canonical name: every spelling of one stream has the same channel."""
        if self.kind == "all_tickers":
            return "!ticker@arr"
        if self.kind == "all_alerts":
            return "!alert"
        if self.kind == "user":
            return "user"
        suffix = f"kline_{self.interval}" if self.kind == "kline" else self.kind
        return f"{self.venue}:{self.symbol.lower()}@{suffix}"

    @property
    def market(self) -> tuple[str, str]:
        return self.venue, self.symbol


def parse_stream(name: object, default_venue: str | None, intervals: tuple[str, ...]) -> Stream:
    """A client's stream name → Stream, or StreamError naming what is wrong with it.

    The venue may be left out when ``default_venue`` is set; a symbol that holds ``:`` (such as
    Finnhub's ``BINANCE:BTCUSDT``) always needs its venue written out.
    """
    if not isinstance(name, str):
        raise StreamError(f"a stream name must be a string, not {type(name).__name__}")
    if len(name) > MAX_NAME:
        raise StreamError(f"stream name longer than {MAX_NAME} characters")
    if name in _GLOBAL:
        return Stream(_GLOBAL[name])
    if name == "user":
        return Stream("user")
    m = _NAME.fullmatch(name)
    if m is None:
        shown = name if name.isprintable() else repr(name)
        raise StreamError(
            f"unknown stream {shown[:MAX_NAME]}: expected venue:symbol@kline_<interval>, "
            "@trade, @ticker, @alert, !ticker@arr, !alert or user"
        )
    venue = m["venue"] or default_venue
    if not venue:
        raise StreamError(f"{name}: no venue (venue:symbol@...) and no default venue configured")
    interval = m["interval"] or ""
    if m["interval"] is not None and interval not in intervals:
        raise StreamError(f"{name}: interval {interval} is not served; choose from {', '.join(intervals)}")  # fmt: skip
    kind = "kline" if interval else m["kind"]
    return Stream(kind, venue, m["symbol"].upper(), interval)  # type: ignore[arg-type]
