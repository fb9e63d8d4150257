"""What the gateway knows of the market: per symbol, the closed 1m bars of the last 24 hours
(from ``bars``) and the minutes still forming (from ``trades``). From these two it builds, on
demand and exactly, the forming bar of every interval and the 24 h ticker.

Why from 1m bars: the flow builds its 5m…1d bars as rollups of its 1m bars, so a forming 1h bar
made here of the closed 1m bars plus the forming minute has the same numbers the flow's 1h bar
will have once the hour closes — only the minutes not yet closed can differ (a trade the flow
will count late, or as a duplicate of one it already holds), and those are replaced by the
flow's own 1m bar as soon as it arrives.

All amounts are scaled integers (prices and quantities in 10⁻⁸, quote sums in 10⁻¹⁶), the
flow's own fixed point, and print with :func:`~candlewax.codec.rules.format_scaled`, so a
forming bar reads digit for digit like the closed bar it becomes. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final

from candlewax.calendar import Calendar
from candlewax.codec import INTERVALS, Bar, Trade
from candlewax.codec.records import QUOTE_DECIMALS
from candlewax.codec.rules import DECIMALS, format_scaled

MINUTE: Final = INTERVALS["1m"]
DAY: Final = 1440
_PERCENT: Final = Decimal("0.001")


def units(text: str, scale: int = DECIMALS) -> int:
    """An exact decimal string (already checked by the codec) → integer units of 10**-scale."""
    whole, _, frac = text.partition(".")
    return int(whole) * 10**scale + int(frac[:scale].ljust(scale, "0") or 0)


@dataclass(slots=True)
class Minute:
    """One 1m bar, forming (from trades) or closed (from the flow), in scaled integers."""

    start_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int = 0
    quote: int = 0
    trades: int = 0
    buy_volume: int = 0
    buy_quote: int = 0
    first_id: str | None = None
    last_id: str | None = None
    open_ts: int = 0
    close_ts: int = 0
    #: Trade ids of a forming minute (a trade published twice counts once, as in the flow).
    ids: set[str] | None = None
    #: Kafka timestamp (ms) of the newest message that changed it: the push latency's origin.
    source_ms: int = 0

    @classmethod
    def of_bar(cls, bar: Bar) -> Minute:
        return cls(
            bar.start_ms, units(bar.open), units(bar.high), units(bar.low), units(bar.close),
            units(bar.volume), units(bar.quote_volume, QUOTE_DECIMALS), bar.trades,
            units(bar.buy_volume), units(bar.buy_quote_volume, QUOTE_DECIMALS),
            bar.first_id, bar.last_id,
        )  # fmt: skip

    @classmethod
    def of_trade(cls, start_ms: int, trade: Trade) -> Minute:
        p = units(trade.price)
        return cls(start_ms, p, p, p, p, open_ts=trade.ts_ms, close_ts=trade.ts_ms, ids=set())

    def add(self, trade: Trade) -> bool:
        """Count one trade (False: its id was counted already)."""
        assert self.ids is not None
        if trade.id in self.ids:
            return False
        self.ids.add(trade.id)
        p, q = units(trade.price), units(trade.qty)
        if not self.trades or trade.ts_ms < self.open_ts:
            self.open, self.open_ts, self.first_id = p, trade.ts_ms, trade.id
        if not self.trades or trade.ts_ms >= self.close_ts:
            self.close, self.close_ts, self.last_id = p, trade.ts_ms, trade.id
        if not self.trades:
            self.high = self.low = p
        else:
            self.high, self.low = max(self.high, p), min(self.low, p)
        self.volume += q
        self.quote += p * q
        self.trades += 1
        if trade.side == "buy":
            self.buy_volume += q
            self.buy_quote += p * q
        return True


@dataclass(slots=True)
class Summary:
    """Minutes merged in time order: a bar of a longer interval, or the 24 h ticker's window."""

    start_ms: int
    end_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote: int
    trades: int
    buy_volume: int
    buy_quote: int
    first_id: str | None
    last_id: str | None
    source_ms: int

    @classmethod
    def of(cls, minutes: list[Minute], start_ms: int, end_ms: int) -> Summary:
        first, last = minutes[0], minutes[-1]
        traded = [m for m in minutes if m.trades]
        return cls(
            start_ms, end_ms, first.open,
            max(m.high for m in minutes), min(m.low for m in minutes), last.close,
            sum(m.volume for m in minutes), sum(m.quote for m in minutes),
            sum(m.trades for m in minutes), sum(m.buy_volume for m in minutes),
            sum(m.buy_quote for m in minutes),
            traded[0].first_id if traded else None, traded[-1].last_id if traded else None,
            max(m.source_ms for m in minutes),
        )  # fmt: skip

    @property
    def vwap(self) -> int:
        """quote / volume in price units, rounded half-even (as the flow's vwap)."""
        if not self.volume:
            return self.close
        # quote is in 10⁻¹⁶ and volume in 10⁻⁸, so their quotient is in price units (10⁻⁸).
        q, r = divmod(self.quote, self.volume)
        return q + (2 * r > self.volume or (2 * r == self.volume and q % 2))

    def fields(self) -> dict[str, Any]:
        """The bar fields, as the flow's ``bars`` messages spell them."""
        return {
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "open": format_scaled(self.open),
            "high": format_scaled(self.high),
            "low": format_scaled(self.low),
            "close": format_scaled(self.close),
            "volume": format_scaled(self.volume),
            "quote_volume": format_scaled(self.quote, QUOTE_DECIMALS),
            "vwap": format_scaled(self.vwap),
            "trades": self.trades,
            "buy_volume": format_scaled(self.buy_volume),
            "buy_quote_volume": format_scaled(self.buy_quote, QUOTE_DECIMALS),
            "first_id": self.first_id,
            "last_id": self.last_id,
        }

    def change_percent(self) -> str:
        """(close − open) / open × 100, rounded half-even to 3 decimals (Binance's precision)."""
        if not self.open:
            return "0.000"
        value = Decimal(self.close - self.open) * 100 / Decimal(self.open)
        return str(value.quantize(_PERCENT, rounding=ROUND_HALF_EVEN))


@dataclass(slots=True)
class Symbol:
    """One symbol's closed minutes of the last 24 h (oldest first) and its forming minutes."""

    closed: deque[Minute] = field(default_factory=lambda: deque(maxlen=DAY))
    forming: dict[int, Minute] = field(default_factory=dict)

    def newest_start(self) -> int | None:
        starts = list(self.forming)
        if self.closed:
            starts.append(self.closed[-1].start_ms)
        return max(starts) if starts else None

    def minutes(self, start_ms: int, end_ms: int) -> list[Minute]:
        """Closed and forming minutes in [start, end), in time order; a closed one wins."""
        got = {m.start_ms: m for m in self.forming.values() if start_ms <= m.start_ms < end_ms}
        for m in reversed(self.closed):
            if m.start_ms < start_ms:
                break
            if m.start_ms < end_ms:
                got[m.start_ms] = m
        return [got[s] for s in sorted(got)]


class Market:
    """Every symbol's state. ``calendar`` gives the ``1d`` windows (day time zone, sessions)."""

    def __init__(self, calendar: Calendar | None = None) -> None:
        self.symbols: dict[tuple[str, str], Symbol] = {}
        self.calendar = calendar or Calendar()

    def _symbol(self, venue: str, symbol: str) -> Symbol:
        state = self.symbols.get((venue, symbol))
        if state is None:
            state = self.symbols[(venue, symbol)] = Symbol()
        return state

    def add_trade(self, trade: Trade, source_ms: int = 0) -> str:
        """A trade from ``trades``: ``"counted"`` in its forming minute, ``"closed"`` (its minute
        is closed already: the flow counts it late or as a refill, no forming bar changes) or
        ``"duplicate"`` (its id was counted in the minute already)."""
        state = self._symbol(trade.venue, trade.symbol)
        start = trade.ts_ms - trade.ts_ms % MINUTE
        if state.closed and start <= state.closed[-1].start_ms:
            return "closed"
        minute = state.forming.get(start)
        if minute is None:
            minute = state.forming[start] = Minute.of_trade(start, trade)
        if not minute.add(trade):
            return "duplicate"
        minute.source_ms = max(minute.source_ms, source_ms)
        return "counted"

    def add_bar(self, bar: Bar, source_ms: int = 0) -> None:
        """A closed 1m bar from ``bars``: it replaces its forming minute and older ones."""
        if bar.interval != "1m":
            return
        state = self._symbol(bar.venue, bar.symbol)
        if state.closed and bar.start_ms <= state.closed[-1].start_ms:
            return  # read twice (the start-up backfill overlaps the files)
        minute = Minute.of_bar(bar)
        minute.source_ms = source_ms
        state.closed.append(minute)
        for start in [s for s in state.forming if s <= bar.start_ms]:
            del state.forming[start]

    def add_bars(self, bars: Iterable[Bar]) -> None:
        for bar in sorted(bars, key=lambda b: b.start_ms):
            self.add_bar(bar)

    def window(self, venue: str, symbol: str, interval: str, t_ms: int) -> tuple[int, int] | None:
        """The window of ``interval`` that holds ``t_ms`` for this symbol (None: out of session)."""
        if interval == "1d":
            return self.calendar.day_of(self.calendar.key(venue, symbol), t_ms)
        length = INTERVALS[interval]
        start = t_ms - t_ms % length
        return start, start + length

    def forming_bar(self, venue: str, symbol: str, interval: str) -> Summary | None:
        """The newest window of ``interval``, from its closed and forming minutes; None when the
        symbol has no minute of it yet."""
        state = self.symbols.get((venue, symbol))
        newest = state.newest_start() if state else None
        if state is None or newest is None:
            return None
        window = self.window(venue, symbol, interval, newest)
        if window is None:
            return None
        minutes = state.minutes(*window)
        return Summary.of(minutes, *window) if minutes else None

    def ticker(self, venue: str, symbol: str) -> Summary | None:
        """The last 1,440 minutes up to the newest one (closed and forming), merged."""
        state = self.symbols.get((venue, symbol))
        newest = state.newest_start() if state else None
        if state is None or newest is None:
            return None
        start = newest - (DAY - 1) * MINUTE
        minutes = state.minutes(start, newest + MINUTE)
        return Summary.of(minutes, minutes[0].start_ms, newest + MINUTE)
