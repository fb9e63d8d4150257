"""An independent computation of activity bars for tests: plain Python ``Decimal``, one trade at
a time, no Polars, no scaled integers — written from the rule in ``flows/activity.py``'s
docstring, not from its code.

The rule: per (venue, symbol, kind), ``total`` is the amount of the trades seen so far (1 per
trade for ``tick``, the quantity for ``volume``, price × quantity for ``value``). A trade whose
``total`` before it is ``before`` belongs to bar ``floor(before / size)``; that bar is done once
``total`` reaches ``(floor(before / size) + 1) × size``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, localcontext

from candlewax.codec import Trade

#: Enough digits that no sum or product of the tests' amounts is ever rounded.
_PRECISION = 100


def kind_name(text: str) -> str:
    """``"volume:12.50"`` → ``"volume:12.5"``: the amount as its shortest exact decimal."""
    measure, _, amount = text.partition(":")
    with localcontext(prec=_PRECISION):
        return f"{measure}:{format(Decimal(amount).normalize(), 'f')}"


def _amount(measure: str, trade: Trade) -> Decimal:
    if measure == "tick":
        return Decimal(1)
    if measure == "volume":
        return Decimal(trade.qty)
    assert measure == "value", measure
    return Decimal(trade.price) * Decimal(trade.qty)


def reference_activity_bars(
    trades: Iterable[Trade],
    symbols: Mapping[str, Sequence[str]],
    default: Sequence[str] = (),
) -> tuple[dict[str, list[dict[str, object]]], dict[str, list[dict[str, object]]]]:
    """(closed bars, forming bars) per kind name, from trades in log order. ``symbols`` maps
    ``"venue:SYMBOL"`` to kind texts; ``default`` are the kinds of every symbol not listed.
    Closed bars are listed in the order they close; forming bars sorted by (venue, symbol)."""
    closed: dict[str, list[dict[str, object]]] = {}
    running: dict[tuple[str, str, str], dict[str, object]] = {}
    with localcontext(prec=_PRECISION):
        for t in trades:
            texts = symbols.get(f"{t.venue}:{t.symbol}", default)
            p, q = Decimal(t.price), Decimal(t.qty)
            for text in texts:
                measure, _, size_text = text.partition(":")
                size = Decimal(size_text)
                name = kind_name(text)
                run = running.setdefault(
                    (t.venue, t.symbol, name), {"total": Decimal(0), "seq": 0, "bar": None}
                )
                before: Decimal = run["total"]  # type: ignore[assignment]
                cell = before // size
                bar = run["bar"]
                if bar is None:
                    bar = run["bar"] = {
                        "venue": t.venue, "symbol": t.symbol, "seq": run["seq"], "cell": cell,
                        "start_ms": t.ts_ms, "end_ms": t.ts_ms + 1,
                        "open_ts": t.ts_ms, "open": p, "open_id": t.id,
                        "high": p, "low": p, "volume": Decimal(0), "quote": Decimal(0),
                        "trades": 0, "buy_volume": Decimal(0), "buy_quote": Decimal(0),
                    }  # fmt: skip
                assert isinstance(bar, dict)
                assert bar["cell"] == cell, "a bar begins only after the previous one is done"
                bar["start_ms"] = min(bar["start_ms"], t.ts_ms)
                bar["end_ms"] = max(bar["end_ms"], t.ts_ms + 1)
                bar.update(close_ts=t.ts_ms, close=p, close_id=t.id)
                bar["high"] = max(bar["high"], p)
                bar["low"] = min(bar["low"], p)
                bar["volume"] += q
                bar["quote"] += p * q
                bar["trades"] += 1
                if t.side == "buy":
                    bar["buy_volume"] += q
                    bar["buy_quote"] += p * q
                total = before + _amount(measure, t)
                run["total"] = total
                if total >= (cell + 1) * size:
                    del bar["cell"]
                    closed.setdefault(name, []).append(bar)
                    run["seq"] += 1  # type: ignore[operator]
                    run["bar"] = None
    forming: dict[str, list[dict[str, object]]] = {}
    for (_, _, name), run in sorted(running.items()):
        if run["bar"] is not None:
            bar = dict(run["bar"])  # type: ignore[call-overload]
            del bar["cell"]
            forming.setdefault(name, []).append(bar)
    return closed, forming
