"""What the gateway sends, in Binance's shapes (its public streams and ``/api/v3/klines``), with
a ``venue`` member added. Pure: records in, JSON-ready dicts (or bytes) out.

A kline event (a bar forming, ``x: false``; or the flow's closed bar, ``x: true``)::

    {"e":"kline","E":1723075260123,"s":"BTCUSDT","venue":"binance","k":{"t":1723075200000,
     "T":1723075259999,"s":"BTCUSDT","i":"1m","f":3727416810,"L":3727417120,"o":"56008.01000000",
     "c":"55990.00000000","h":"56010.00000000","l":"55989.99000000","v":"12.34567000","n":311,
     "x":true,"q":"691245.66480000","V":"5.00001000","Q":"279983.55990000","B":"0",
     "vwap":"55991.25683000","complete":true,"gaps":0}}

``f``/``L`` (first and last trade id) are numbers when the venue's ids are digits, strings
otherwise, and -1 in a bar of no trade (as Binance). ``vwap`` and, in a closed bar, ``complete``
and ``gaps`` are candlewax's additions; every other member is Binance's.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson

from candlewax.codec import Alert, Bar, Trade, UserEvent
from candlewax.codec.rules import format_scaled
from sinks.gateway.market import Summary


def trade_id(value: str | None) -> int | str:
    """A trade id as Binance writes it: a number when it is one (a bounded digit string)."""
    if value is None:
        return -1
    return int(value) if value.isdigit() and len(value) <= 18 else value


def kline(bar: dict[str, Any], venue: str, symbol: str, interval: str, closed: bool, now_ms: int) -> dict[str, Any]:  # fmt: skip
    """A kline event from bar fields (a :class:`Bar`'s, or :meth:`Summary.fields`)."""
    k: dict[str, Any] = {
        "t": bar["start_ms"],
        "T": bar["end_ms"] - 1,
        "s": symbol,
        "i": interval,
        "f": trade_id(bar["first_id"]),
        "L": trade_id(bar["last_id"]),
        "o": bar["open"],
        "c": bar["close"],
        "h": bar["high"],
        "l": bar["low"],
        "v": bar["volume"],
        "n": bar["trades"],
        "x": closed,
        "q": bar["quote_volume"],
        "V": bar["buy_volume"],
        "Q": bar["buy_quote_volume"],
        "B": "0",
        "vwap": bar["vwap"],
    }
    if "complete" in bar:
        k["complete"] = bar["complete"]
        k["gaps"] = bar["gaps"]
    return {"e": "kline", "E": now_ms, "s": symbol, "venue": venue, "k": k}


def closed_kline(bar: Bar, now_ms: int) -> dict[str, Any]:
    return kline(bar.to_dict(), bar.venue, bar.symbol, bar.interval, True, now_ms)


def forming_kline(summary: Summary, venue: str, symbol: str, interval: str, now_ms: int) -> dict[str, Any]:  # fmt: skip
    return kline(summary.fields(), venue, symbol, interval, False, now_ms)


def trade(t: Trade, now_ms: int) -> dict[str, Any]:
    """Binance's trade event; ``m`` (the buyer is the maker) is true when the aggressor sold,
    ``side`` is the aggressor's side as the venue reported it (null when it did not)."""
    return {
        "e": "trade",
        "E": now_ms,
        "s": t.symbol,
        "venue": t.venue,
        "t": trade_id(t.id),
        "p": t.price,
        "q": t.qty,
        "T": t.ts_ms,
        "m": t.side == "sell",
        "M": True,
        "side": t.side,
    }


def ticker(s: Summary, venue: str, symbol: str, now_ms: int) -> dict[str, Any]:
    """Binance's 24hrTicker over the last 1,440 minutes of 1m bars (the forming one included):
    no bid/ask members, as the pipeline has no order book."""
    f = s.fields()
    return {
        "e": "24hrTicker",
        "E": now_ms,
        "s": symbol,
        "venue": venue,
        "p": format_scaled(s.close - s.open),
        "P": s.change_percent(),
        "w": f["vwap"],
        "o": f["open"],
        "h": f["high"],
        "l": f["low"],
        "c": f["close"],
        "v": f["volume"],
        "q": f["quote_volume"],
        "O": s.start_ms,
        "C": s.end_ms - 1,
        "F": trade_id(s.first_id),
        "L": trade_id(s.last_id),
        "n": s.trades,
    }


def alert(a: Alert, now_ms: int) -> dict[str, Any]:
    return {"e": "alert", "E": now_ms, **asdict(a)}


def user_event(u: UserEvent, now_ms: int) -> dict[str, Any]:
    """A private ``user`` stream message: an alert routed to the user (as on ``@alert``), or the
    delivery outcome of one of the user's alerts on one destination::

        {"e":"delivery","E":1723161600300,"alert_id":"5fddbb49fd7eb91198225183",
         "channel":"desk-telegram","outcome":"delivered","reason":"","ts_ms":1723161600290}
    """
    if u.alert is not None:
        return alert(u.alert, now_ms)
    return {"e": "delivery", "E": now_ms, "alert_id": u.alert_id, "channel": u.channel,
            "outcome": u.outcome, "reason": u.reason, "ts_ms": u.ts_ms}  # fmt: skip


def kline_row(bar: dict[str, Any]) -> list[Any]:
    """One row of ``GET /api/v3/klines``: Binance's 12 members, decimals as strings."""
    return [
        bar["start_ms"],
        bar["open"],
        bar["high"],
        bar["low"],
        bar["close"],
        bar["volume"],
        bar["end_ms"] - 1,
        bar["quote_volume"],
        bar["trades"],
        bar["buy_volume"],
        bar["buy_quote_volume"],
        "0",
    ]


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def wrapped(name: str, data: bytes) -> bytes:
    """A combined stream's message, ``{"stream": name, "data": ...}``, around rendered data."""
    return b'{"stream":' + orjson.dumps(name) + b',"data":' + data + b"}"
