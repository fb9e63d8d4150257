"""An independent bar computation for tests: plain Python Decimal, one trade at a time, no
Polars, no scaled integers — written from the definitions in docs/architecture.md, not from the kernel."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal

from candlewax.codec import INTERVALS, Gap, Heartbeat, Since, Trade


def reference_bars(trades: Iterable[Trade], interval: str) -> list[dict[str, object]]:
    """Bars of ``interval`` from trades in log order. Open/close: smallest/largest event time,
    ties by log order. Sorted by (venue, symbol, start_ms)."""
    length = INTERVALS[interval]
    acc: dict[tuple[str, str, int], dict[str, object]] = {}
    for t in trades:
        start = t.ts_ms - t.ts_ms % length
        p, q = Decimal(t.price), Decimal(t.qty)
        bar = acc.get((t.venue, t.symbol, start))
        if bar is None:
            bar = acc[(t.venue, t.symbol, start)] = {
                "open": p, "open_ts": t.ts_ms, "first_id": t.id, "high": p, "low": p,
                "close": p, "close_ts": t.ts_ms, "last_id": t.id, "volume": Decimal(0),
                "quote_volume": Decimal(0), "trades": 0, "buy_volume": Decimal(0),
                "buy_quote_volume": Decimal(0),
            }  # fmt: skip
        if t.ts_ms < bar["open_ts"]:  # type: ignore[operator]
            bar.update(open=p, open_ts=t.ts_ms, first_id=t.id)
        if t.ts_ms >= bar["close_ts"]:  # type: ignore[operator]
            bar.update(close=p, close_ts=t.ts_ms, last_id=t.id)
        bar["high"] = max(bar["high"], p)  # type: ignore[type-var]
        bar["low"] = min(bar["low"], p)  # type: ignore[type-var]
        bar["volume"] += q  # type: ignore[operator]
        bar["quote_volume"] += p * q  # type: ignore[operator]
        bar["trades"] += 1  # type: ignore[operator]
        if t.side == "buy":
            bar["buy_volume"] += q  # type: ignore[operator]
            bar["buy_quote_volume"] += p * q  # type: ignore[operator]
    out = []
    for (venue, symbol, start), bar in sorted(acc.items()):
        vwap = (bar["quote_volume"] / bar["volume"]).quantize(  # type: ignore[operator]
            Decimal("0.00000001"), rounding=ROUND_HALF_EVEN
        )
        out.append(
            {
                "venue": venue,
                "symbol": symbol,
                "interval": interval,
                "start_ms": start,
                "end_ms": start + length,
                **{k: bar[k] for k in ("open", "high", "low", "close", "volume", "quote_volume")},
                "vwap": vwap,
                "trades": bar["trades"],
                "buy_volume": bar["buy_volume"],
                "buy_quote_volume": bar["buy_quote_volume"],
                "first_id": bar["first_id"],
                "last_id": bar["last_id"],
            }
        )
    return out


DECIMAL_FIELDS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "vwap",
    "buy_volume",
    "buy_quote_volume",
)


def as_decimals(bar: dict[str, object]) -> dict[str, object]:
    """A wire-format bar (strings) with its decimal fields as Decimal, for comparison."""
    keep = ("venue", "symbol", "interval", "start_ms", "end_ms", "trades", "first_id", "last_id")
    out = {k: bar[k] for k in keep}
    out.update({k: Decimal(str(bar[k])) for k in DECIMAL_FIELDS})
    return out


def reference_range_alerts(
    trades: Iterable[Trade], interval: str, threshold: Decimal
) -> list[tuple[int, int, str]]:
    """(window start, ts of the crossing trade, its price) of every window whose running
    (high − low) / high reaches ``threshold``, first crossing only — plain Decimal, one trade
    at a time in log order."""
    length = INTERVALS[interval]
    running: dict[tuple[str, str, int], list[Decimal]] = {}
    fired: set[tuple[str, str, int]] = set()
    out = []
    for t in trades:
        key = (t.venue, t.symbol, t.ts_ms - t.ts_ms % length)
        p = Decimal(t.price)
        hl = running.setdefault(key, [p, p])
        hl[0], hl[1] = max(hl[0], p), min(hl[1], p)
        if key not in fired and (hl[0] - hl[1]) / hl[0] >= threshold:
            fired.add(key)
            out.append((key[2], t.ts_ms, t.price))
    return out


def reference_flat_bars(
    trades: Iterable[Trade], interval: str, horizon_ms: int, skip: frozenset[str] = frozenset()
) -> list[dict[str, object]]:
    """:func:`reference_bars` plus the empty windows as Binance makes them (docs/architecture.md):
    from a symbol's first bar on, every window that ends at or before ``horizon_ms`` and has no
    trade is a flat bar at the previous bar's close — volume 0, trades 0, no ids. Symbols
    (``"venue:SYMBOL"``) in ``skip`` get none."""
    length = INTERVALS[interval]
    traded = reference_bars(trades, interval)
    by_symbol: dict[tuple[str, str], dict[int, dict[str, object]]] = {}
    for bar in traded:
        by_symbol.setdefault((bar["venue"], bar["symbol"]), {})[bar["start_ms"]] = bar  # type: ignore[index]
    out: list[dict[str, object]] = []
    for (venue, symbol), bars in sorted(by_symbol.items()):
        if f"{venue}:{symbol}" in skip:
            out += [bars[s] for s in sorted(bars)]
            continue
        start = min(bars)
        last_end = max(start + length, horizon_ms - horizon_ms % length)
        close = None
        for s in range(start, last_end, length):
            if s in bars:
                out.append(bars[s])
                close = bars[s]["close"]
                continue
            zero = Decimal(0)
            out.append(
                {
                    "venue": venue, "symbol": symbol, "interval": interval, "start_ms": s,
                    "end_ms": s + length, "open": close, "high": close, "low": close,
                    "close": close, "volume": zero, "quote_volume": zero, "vwap": close,
                    "trades": 0, "buy_volume": zero, "buy_quote_volume": zero,
                    "first_id": None, "last_id": None,
                }
            )  # fmt: skip
    return out


def reference_flags(
    records: Iterable[Trade | Heartbeat | Since | Gap],
    bars: Iterable[tuple[str, str, int]],
    interval: str,
    lateness_ms: int,
) -> dict[tuple[str, str, int], tuple[bool, int]]:
    """``(complete, gaps)`` of each bar ``(venue, symbol, start_ms)`` of ``interval``, from the
    records in log order, one at a time (docs/architecture.md, "Honest flags"): a symbol's
    coverage starts at its first Since marker or trade, whichever comes first; a gap marker
    counts for a bar whose window overlaps it and had not closed (end + lateness > the newest
    event time before the marker) when it came. Every record here is on time and moves time."""
    length = INTERVALS[interval]
    since: dict[tuple[str, str], int] = {}
    gaps: list[tuple[str, str, int, int, int]] = []
    newest: int | None = None
    for rec in records:
        if isinstance(rec, Since | Trade):
            since.setdefault((rec.venue, rec.symbol), rec.ts_ms)
        if isinstance(rec, Gap):
            seen = -(2**62) if newest is None else newest
            gaps.append((rec.venue, rec.symbol, rec.from_ms, rec.to_ms, seen))
        if isinstance(rec, Trade | Heartbeat):
            newest = rec.ts_ms if newest is None else max(newest, rec.ts_ms)
    out = {}
    for venue, symbol, start in bars:
        end = start + length
        n = sum(
            1
            for v, s, lo, hi, seen in gaps
            if (v, s) == (venue, symbol) and lo < end and hi > start and end + lateness_ms > seen
        )
        first = since.get((venue, symbol))
        out[(venue, symbol, start)] = (first is not None and start >= first and n == 0, n)
    return out
