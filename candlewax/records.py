"""Records on the wire: Trade, Heartbeat, Bar, Alert, DeadLetter — defined once, with their encoding.

Every value is one UTF-8 JSON object with a schema version ``v``. Prices and quantities travel as
decimal strings exactly as the exchange sent them (``"61828.00000000"``); readers also accept JSON
numbers. Timestamps are integer epoch milliseconds, UTC, with the unit in the field name.

This module is the single source of truth for validation: :func:`decode_trade` decides what a
valid trade is and, for an invalid one, the ``reason`` label that metrics and dead letters carry.
The vectorized fast path in ``flows/barmath.py`` only ever *accepts* batches this module would
accept in full; anything else is re-decoded here, message by message.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from candlewax.errors import ParseError

SCHEMA_VERSION = 1

#: Fixed-point scale of the bar kernel: prices and quantities are exact at 8 decimals, the
#: precision every major crypto venue publishes (Binance, OKX, Bybit, Coinbase, Kraken).
DECIMALS = 8
SCALE = 10**DECIMALS

#: Event times outside [2000-01-01, 2100-01-01) are "absurd": almost always seconds or
#: nanoseconds passed where milliseconds were expected.
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 4_102_444_800_000

SIDES = ("buy", "sell")
INTERVALS: dict[str, int] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
}

#: Every reason label a dead letter or a parse-error metric may carry (a bounded set).
REASONS = (
    "json",
    "not_object",
    "schema_version",
    "unknown_type",
    "missing_field",
    "bad_type",
    "bad_decimal",
    "non_positive",
    "out_of_range",
    "precision",
    "bad_side",
    "bad_timestamp",
    "late",
    "venue_frame",
    "gap",
    "notify_rejected",
    "notify_unavailable",
)

_DECIMAL_RE = re.compile(r"^[0-9]+(\.[0-9]+)?$")

#: Bounds that keep the kernel's Int128 arithmetic far from overflow: a price or quantity is
#: below 1e14 and one trade's notional (price × qty) below 1e22 — beyond any real market.
MAX_VALUE = 10**14
MAX_NOTIONAL = 10**22
_SYMBOL_STRIP = str.maketrans("", "", "-_/ ")


def normalize_symbol(symbol: str) -> str:
    """``btc-usdt`` / ``BTC/USDT`` / ``btc_usdt`` → ``BTCUSDT`` (upper case, no separators)."""
    return symbol.translate(_SYMBOL_STRIP).upper()


def normalize_venue(venue: str) -> str:
    return venue.strip().lower()


def message_key(venue: str, symbol: str) -> str:
    """The Kafka key of trades, bars and alerts: one symbol stays in one partition, in order."""
    return f"{venue}:{symbol}"


# --------------------------------------------------------------------------- decimals


def to_scaled(value: str) -> int:
    """Exact fixed-point value of a canonical decimal string, in units of 10**-DECIMALS.

    >>> to_scaled("61828.01"), to_scaled("0.00100000")
    (6182801000000, 100000)
    """
    whole, _, frac = value.partition(".")
    if len(frac) > DECIMALS:
        if frac[DECIMALS:].strip("0"):
            raise ParseError("precision", f"{value!r} has more than {DECIMALS} decimals")
        frac = frac[:DECIMALS]
    return int(whole) * SCALE + int(frac.ljust(DECIMALS, "0") or "0")


def format_scaled(units: int, scale_decimals: int = DECIMALS, min_decimals: int = DECIMALS) -> str:
    """Inverse of :func:`to_scaled`, for any scale: keeps every significant digit.

    ``format_scaled(760484523000000000, 16)`` → ``"76.04845230"`` (trailing zeros beyond
    ``min_decimals`` dropped, never a digit that carries value).
    """
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**scale_decimals)
    digits = str(frac).rjust(scale_decimals, "0") if scale_decimals else ""
    keep = max(min_decimals, len(digits.rstrip("0")))
    digits = (digits + "0" * keep)[:keep]
    return f"{sign}{whole}.{digits}" if keep else f"{sign}{whole}"


def divide_rounded(numerator: int, denominator: int) -> int:
    """``round(numerator / denominator)`` with banker's rounding, exactly, at any size.

    (Integer arithmetic: ``Decimal`` division would round to 28 digits first.)
    """
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


def _decimal_field(obj: dict[str, Any], name: str) -> str:
    """A positive decimal as a canonical string; JSON numbers are accepted and converted."""
    if name not in obj or obj[name] is None:
        raise ParseError("missing_field", name)
    raw = obj[name]
    if isinstance(raw, bool):
        raise ParseError("bad_type", f"{name} is a boolean")
    if isinstance(raw, int):
        if abs(raw) >= MAX_VALUE:
            raise ParseError("out_of_range", f"{name}={raw} is >= {MAX_VALUE:.0e}")
        text = str(raw)
    elif isinstance(raw, float):
        if not math.isfinite(raw):
            raise ParseError("bad_decimal", f"{name}={raw!r} is not finite")
        if abs(raw) >= MAX_VALUE:
            raise ParseError("out_of_range", f"{name}={raw!r} is >= {MAX_VALUE:.0e}")
        text = format(Decimal(repr(raw)), "f")
    elif isinstance(raw, str):
        text = raw
        if not _DECIMAL_RE.match(text):
            if len(text) > 64:
                raise ParseError("bad_decimal", f"{name}={raw[:40]!r}... is {len(text)} characters")
            try:
                dec = Decimal(text.strip())
            except InvalidOperation:
                raise ParseError("bad_decimal", f"{name}={raw[:40]!r} is not a decimal") from None
            if not dec.is_finite():
                raise ParseError("bad_decimal", f"{name}={raw[:40]!r} is not finite")
            if dec <= 0:
                raise ParseError("non_positive", f"{name}={raw[:40]!r}")
            if dec >= MAX_VALUE:
                raise ParseError("out_of_range", f"{name}={raw[:40]!r} is >= {MAX_VALUE:.0e}")
            if dec.adjusted() < -DECIMALS:
                raise ParseError("precision", f"{name}={raw[:40]!r} is below 1e-{DECIMALS}")
            text = format(dec, "f")
    else:
        raise ParseError("bad_type", f"{name} is a {type(raw).__name__}")
    if text.startswith("-"):
        raise ParseError("non_positive", f"{name}={text}")
    if len(text.partition(".")[0].lstrip("0")) > len(str(MAX_VALUE)) - 1:
        raise ParseError("out_of_range", f"{name}={text[:40]} is >= {MAX_VALUE:.0e}")
    if to_scaled(text) <= 0:
        raise ParseError("non_positive", f"{name}={text}")
    return text


def _required_ts(obj: dict[str, Any], name: str) -> int:
    ts = _ts_field(obj, name)
    if ts is None:  # pragma: no cover - _ts_field raises for a missing required field
        raise ParseError("missing_field", name)
    return ts


def _ts_field(obj: dict[str, Any], name: str, required: bool = True) -> int | None:
    raw = obj.get(name)
    if raw is None:
        if required:
            raise ParseError("missing_field", name)
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        else:
            raise ParseError("bad_timestamp", f"{name}={raw!r} is not integer milliseconds")
    if not MIN_TS_MS <= raw < MAX_TS_MS:
        raise ParseError(
            "bad_timestamp", f"{name}={raw} is outside 2000..2100 (seconds or ns instead of ms?)"
        )
    return raw


def _str_field(obj: dict[str, Any], name: str) -> str:
    raw = obj.get(name)
    if raw is None or raw == "":
        raise ParseError("missing_field", name)
    if not isinstance(raw, str):
        raise ParseError("bad_type", f"{name} is a {type(raw).__name__}")
    return raw


# --------------------------------------------------------------------------- trades


@dataclass(frozen=True, slots=True)
class Trade:
    """One executed trade, normalized. ``side`` is the aggressor's side, or None if unknown."""

    venue: str
    symbol: str
    id: str
    price: str
    qty: str
    side: str | None
    ts_ms: int
    recv_ms: int | None = None
    v: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        return message_key(self.venue, self.symbol)

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": self.v,
            "venue": self.venue,
            "symbol": self.symbol,
            "id": self.id,
            "price": self.price,
            "qty": self.qty,
            "side": self.side,
            "ts_ms": self.ts_ms,
            "recv_ms": self.recv_ms,
        }

    def encode(self) -> bytes:
        return orjson.dumps(self.to_dict())


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Exchange time reached ``ts_ms`` on ``venue``: lets idle symbols' windows close.

    Connectors write one into every partition of ``trades`` periodically, carrying the newest
    *exchange* time they have seen (never local time), so the watermark stays event-time driven.
    """

    venue: str
    ts_ms: int
    v: int = SCHEMA_VERSION

    def encode(self) -> bytes:
        return orjson.dumps(
            {"v": self.v, "type": "heartbeat", "venue": self.venue, "ts_ms": self.ts_ms}
        )


def decode_trade(obj: Any) -> Trade | Heartbeat:
    """Validate one decoded JSON object of the ``trades`` topic.

    Raises :class:`ParseError` with a reason from :data:`REASONS`.
    """
    if not isinstance(obj, dict):
        raise ParseError("not_object", f"got {type(obj).__name__}")
    v = obj.get("v")  # absent or null: the current version
    if v is not None and v != SCHEMA_VERSION:
        raise ParseError("schema_version", f"v={v!r}, this reader understands v={SCHEMA_VERSION}")
    kind = obj.get("type") or "trade"  # absent, null or "": a trade
    if kind == "heartbeat":
        return Heartbeat(
            venue=normalize_venue(_str_field(obj, "venue")), ts_ms=_required_ts(obj, "ts_ms")
        )
    if kind != "trade":
        raise ParseError("unknown_type", f"type={str(kind)[:40]!r}")
    venue = _str_field(obj, "venue")
    symbol = _str_field(obj, "symbol")
    raw_id = obj.get("id")
    if raw_id is None or raw_id == "":
        raise ParseError("missing_field", "id")
    if isinstance(raw_id, float) and raw_id.is_integer():
        # Some producers (JavaScript) send integer ids as floats: 5.0 → "5", 1e16 → its digits.
        raw_id = format(Decimal(repr(raw_id)).to_integral_value(), "f")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (int, str)):
        raise ParseError("bad_type", f"id is a {type(raw_id).__name__}")
    side = obj.get("side")
    if side is not None and side not in SIDES:
        raise ParseError("bad_side", f"side={str(side)[:20]!r}, expected buy, sell or null")
    price = _decimal_field(obj, "price")
    qty = _decimal_field(obj, "qty")
    if to_scaled(price) * to_scaled(qty) >= MAX_NOTIONAL * SCALE * SCALE:
        raise ParseError("out_of_range", f"price × qty = {price} × {qty} is >= {MAX_NOTIONAL:.0e}")
    return Trade(
        venue=venue,
        symbol=symbol,
        id=str(raw_id),
        price=price,
        qty=qty,
        side=side,
        ts_ms=_required_ts(obj, "ts_ms"),
        recv_ms=_ts_field(obj, "recv_ms", required=False),
    )


@dataclass(slots=True)
class Rejected:
    """One invalid item of a message: what it was and why it was rejected."""

    reason: str
    detail: str
    raw: bytes


def decode_message(value: bytes | None) -> tuple[list[Trade | Heartbeat], list[Rejected]]:
    """Decode one ``trades`` message: a JSON object, or a JSON array of them.

    In an array, each element is validated on its own: one bad trade is rejected, its neighbours
    are kept.
    """
    if value is None:
        return [], [Rejected("json", "empty message (tombstone)", b"")]
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return [], [Rejected("json", str(exc)[:200], value)]
    items = obj if isinstance(obj, list) else [obj]
    good: list[Trade | Heartbeat] = []
    bad: list[Rejected] = []
    for item in items:
        try:
            good.append(decode_trade(item))
        except ParseError as exc:
            raw = value if len(items) == 1 else orjson.dumps(item)
            bad.append(Rejected(exc.reason, exc.detail, raw))
    return good, bad


def encode_trades(trades: list[Trade]) -> bytes:
    """Several trades of one symbol in one message (a JSON array): the batching form."""
    return orjson.dumps([t.to_dict() for t in trades])


# --------------------------------------------------------------------------- bars

BAR_FIELDS = (
    "v",
    "venue",
    "symbol",
    "interval",
    "start_ms",
    "end_ms",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "vwap",
    "trades",
    "buy_volume",
    "buy_quote_volume",
    "first_id",
    "last_id",
)


@dataclass(frozen=True, slots=True)
class Bar:
    """One closed OHLCV bar. Decimal fields are exact decimal strings.

    ``volume`` = Σqty, ``quote_volume`` = Σprice·qty (exact, every significant digit),
    ``buy_*`` = the same sums over aggressor-buy trades, ``vwap`` = quote_volume / volume rounded
    half-even to 8 decimals, ``first_id``/``last_id`` = ids of the opening and closing trades.
    ``end_ms`` is exclusive: the bar covers ``start_ms <= ts_ms < end_ms``.
    """

    venue: str
    symbol: str
    interval: str
    start_ms: int
    end_ms: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    vwap: str
    trades: int
    buy_volume: str
    buy_quote_volume: str
    first_id: str
    last_id: str
    v: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        return message_key(self.venue, self.symbol)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in BAR_FIELDS}

    def encode(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def decode(cls, value: bytes) -> Bar:
        obj = orjson.loads(value)
        missing = [name for name in BAR_FIELDS if name not in obj]
        if missing:
            raise ParseError("missing_field", ",".join(missing))
        return cls(**{name: obj[name] for name in BAR_FIELDS})


# --------------------------------------------------------------------------- alerts


def alert_id(rule: str, venue: str, symbol: str, interval: str, window_start_ms: int) -> str:
    """Deterministic: the same rule firing on the same window always has the same id."""
    text = f"{rule}|{venue}|{symbol}|{interval}|{window_start_ms}".encode()
    return hashlib.blake2b(text, digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class Alert:
    """A volatility alert. ``id`` is deterministic (see :func:`alert_id`) so downstream
    deduplication is exact."""

    id: str
    rule: str
    venue: str
    symbol: str
    interval: str
    window_start_ms: int
    ts_ms: int
    value: str
    threshold: str
    price: str
    severity: str
    text: str
    v: int = SCHEMA_VERSION

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, value: bytes) -> Alert:
        obj = orjson.loads(value)
        names = cls.__dataclass_fields__
        missing = [name for name in names if name not in obj and name != "v"]
        if missing:
            raise ParseError("missing_field", ",".join(missing))
        return cls(**{k: v for k, v in obj.items() if k in names})


# --------------------------------------------------------------------------- dead letters


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that could not be used: the raw bytes, why, and where it came from.

    ``source`` is ``{"topic", "partition", "offset"}`` for Kafka input, or
    ``{"venue", "stream"}`` / ``{"file", "line"}`` for connectors and replays.
    """

    reason: str
    detail: str
    raw: bytes
    source: dict[str, Any] = field(default_factory=dict)
    ts_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    v: int = SCHEMA_VERSION

    def encode(self) -> bytes:
        obj: dict[str, Any] = {
            "v": self.v,
            "reason": self.reason,
            "detail": self.detail,
            "source": self.source,
            "ts_ms": self.ts_ms,
        }
        try:
            obj["raw"] = self.raw.decode("utf-8")
        except UnicodeDecodeError:
            obj["raw_b64"] = base64.b64encode(self.raw).decode("ascii")
        return orjson.dumps(obj)

    @classmethod
    def decode(cls, value: bytes) -> DeadLetter:
        obj = orjson.loads(value)
        raw = obj["raw"].encode() if "raw" in obj else base64.b64decode(obj.get("raw_b64", ""))
        return cls(
            reason=obj["reason"],
            detail=obj.get("detail", ""),
            raw=raw,
            source=obj.get("source", {}),
            ts_ms=obj.get("ts_ms", 0),
        )
