"""The records on the wire — Trade, Heartbeat, Bar, Alert, UserEvent, DeadLetter — each with its
fields, limits, canonical encoding and total decoding.

Every value is one UTF-8 JSON object with a schema version ``v``. Prices and quantities travel as
canonical decimal strings exactly as the exchange sent them (``"61828.00000000"``); timestamps
are integer epoch milliseconds, UTC, with the unit in the field name. ``encode()`` writes the
canonical form (fixed member order, no whitespace); the decoders accept exactly one spelling of
each field and raise :class:`~candlewax.errors.ParseError` with a reason from
:data:`~candlewax.codec.rules.REASONS` — and nothing else — for any other input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from candlewax.codec import rules
from candlewax.codec.rules import (
    CALENDAR_INTERVALS,
    INTERVALS,
    MAX_ARRAY_ITEMS,
    MAX_NOTIONAL,
    MAX_TEXT,
    MAX_WINDOW_MS,
    REASONS,
    SCALE,
    SCHEMA_VERSION,
    SEVERITIES,
    message_key,
    to_scaled,
    type_name,
)
from candlewax.codec.strictjson import loads
from candlewax.errors import ParseError

# --------------------------------------------------------------------------- trades

#: Members of a trade, in the order ``Trade.encode`` writes them.
TRADE_FIELDS = ("v", "venue", "symbol", "id", "price", "qty", "side", "ts_ms", "recv_ms")
#: Members of a heartbeat, in order.
HEARTBEAT_FIELDS = ("v", "type", "venue", "ts_ms")
SINCE_FIELDS = ("v", "type", "venue", "symbol", "ts_ms")
GAP_FIELDS = ("v", "type", "venue", "symbol", "from_ms", "to_ms")
_TRADE_MEMBERS = frozenset((*TRADE_FIELDS, "type"))
_HEARTBEAT_MEMBERS = frozenset(HEARTBEAT_FIELDS)
_SINCE_MEMBERS = frozenset(SINCE_FIELDS)
_GAP_MEMBERS = frozenset(GAP_FIELDS)
_TRADE_REQUIRED = ("v", "venue", "symbol", "id", "price", "qty", "ts_ms")


class _Keyed:
    """Records keyed ``venue:SYMBOL`` on their topic (one symbol stays in one partition)."""

    __slots__ = ()
    venue: str
    symbol: str

    @property
    def key(self) -> str:
        return message_key(self.venue, self.symbol)


@dataclass(frozen=True, slots=True)
class Trade(_Keyed):
    """One executed trade, normalized. ``side`` is the aggressor's side, or None if unknown.

    The constructor does not validate (producers in this repository build valid trades by
    construction and the hot paths construct millions); untrusted values go through
    :meth:`build` or :func:`decode_record`.
    """

    venue: str
    symbol: str
    id: str
    price: str
    qty: str
    side: str | None
    ts_ms: int
    recv_ms: int | None = None
    v: int = SCHEMA_VERSION

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
        """The canonical message: the bytes the fast path recognizes (``codec.columns``)."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def build(
        cls,
        *,
        venue: Any,
        symbol: Any,
        id: Any,
        price: Any,
        qty: Any,
        side: Any,
        ts_ms: Any,
        recv_ms: Any = None,
    ) -> Trade:
        """A trade from a venue frame or a file: every field validated, JSON numbers made exact
        decimal text (:func:`~candlewax.codec.rules.decimal_from_number`), integer ids made
        digit text. The one decode tail of every venue parser and replay reader."""
        trade = cls(
            venue=rules.name(venue, "venue"),
            symbol=rules.name(symbol, "symbol"),
            id=rules.trade_id(id),
            price=rules.decimal_from_number(price, "price"),
            qty=rules.decimal_from_number(qty, "qty"),
            side=rules.side(side),
            ts_ms=rules.timestamp(ts_ms, "ts_ms"),  # type: ignore[arg-type]
            recv_ms=rules.timestamp(recv_ms, "recv_ms", required=False),
        )
        _check_notional(trade.price, trade.qty)
        return trade


def _check_notional(price: str, qty: str) -> None:
    if to_scaled(price) * to_scaled(qty) >= MAX_NOTIONAL * SCALE * SCALE:
        raise ParseError("out_of_range", f"price × qty = {price} × {qty} is >= {MAX_NOTIONAL:.0e}")


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


@dataclass(frozen=True, slots=True)
class Since(_Keyed):
    """The connector holds every trade of ``venue:symbol`` from ``ts_ms`` on: written before
    the trades of a start-up fill (its start), keyed like the symbol's trades. Bars of the
    symbol starting at or after it can be complete; see docs/architecture.md, "Honest flags".
    """

    venue: str
    symbol: str
    ts_ms: int
    v: int = SCHEMA_VERSION

    def encode(self) -> bytes:
        return orjson.dumps(
            {"v": self.v, "type": "since", "venue": self.venue, "symbol": self.symbol,
             "ts_ms": self.ts_ms}
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Gap(_Keyed):
    """Trades of ``venue:symbol`` with ``from_ms <= ts_ms < to_ms`` may be missing (a blind
    reconnect): keyed like the symbol's trades, so it reaches the flow in their order. Every bar
    of the symbol whose window overlaps it and is still open when it arrives counts it."""

    venue: str
    symbol: str
    from_ms: int
    to_ms: int
    v: int = SCHEMA_VERSION

    def encode(self) -> bytes:
        return orjson.dumps(
            {"v": self.v, "type": "gap", "venue": self.venue, "symbol": self.symbol,
             "from_ms": self.from_ms, "to_ms": self.to_ms}
        )  # fmt: skip


#: Records of ``trades`` that carry no trade: what the flow knows about the feed itself.
Marker = Since | Gap


def _version(obj: dict[str, Any], required: bool) -> None:
    if "v" not in obj:
        if required:
            raise ParseError("missing_field", "v")
        return
    v = obj["v"]
    if isinstance(v, bool) or v != SCHEMA_VERSION:
        raise ParseError(
            "schema_version", f"v={str(v)[:20]!r}, this reader understands v={SCHEMA_VERSION}"
        )


def _members(obj: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise ParseError(
            "unknown_field", f"{str(unknown[0])[:40]!r} is not a member of this record"
        )


def _checked(
    obj: Any, members: frozenset[str], required: tuple[str, ...], version_required: bool = True
) -> dict[str, Any]:
    """A decoded record's object: a JSON object of known members, with the required ones."""
    if not isinstance(obj, dict):
        raise ParseError("not_object", f"got {type_name(obj)}")
    _version(obj, required=version_required)
    _members(obj, members)
    missing = [name for name in required if name not in obj]
    if missing:
        raise ParseError("missing_field", ",".join(missing))
    return obj


def decode_record(obj: Any, *, from_file: bool = False) -> Trade | Heartbeat | Since | Gap:
    """Validate one JSON object of the ``trades`` topic: a trade, a heartbeat or a marker
    (:class:`Since`, :class:`Gap`).

    The wire form is strict: ``v`` is present, every member is known, decimals and ids are
    canonical strings. ``from_file`` reads the laxer form of trade files (replays): ``v`` may
    be absent, and prices, quantities and ids may be JSON numbers, converted exactly.
    """
    if not isinstance(obj, dict):
        raise ParseError("not_object", f"got {type_name(obj)}")
    _version(obj, required=not from_file)
    kind = obj.get("type")
    if kind == "heartbeat":
        _members(obj, _HEARTBEAT_MEMBERS)
        return Heartbeat(
            venue=rules.name(obj.get("venue"), "venue"),
            ts_ms=rules.timestamp(obj.get("ts_ms"), "ts_ms"),  # type: ignore[arg-type]
        )
    if kind == "since":
        _members(obj, _SINCE_MEMBERS)
        return Since(
            venue=rules.name(obj.get("venue"), "venue"),
            symbol=rules.name(obj.get("symbol"), "symbol"),
            ts_ms=rules.timestamp(obj.get("ts_ms"), "ts_ms"),  # type: ignore[arg-type]
        )
    if kind == "gap":
        _members(obj, _GAP_MEMBERS)
        venue = rules.name(obj.get("venue"), "venue")
        symbol = rules.name(obj.get("symbol"), "symbol")
        start = rules.timestamp(obj.get("from_ms"), "from_ms")
        end = rules.timestamp(obj.get("to_ms"), "to_ms")
        assert start is not None and end is not None
        if end < start:
            raise ParseError("bad_timestamp", f"gap to_ms {end} is before its from_ms {start}")
        return Gap(venue, symbol, start, end)
    if kind is not None and kind != "trade":
        raise ParseError("unknown_type", f"type={str(kind)[:40]!r}")
    _members(obj, _TRADE_MEMBERS)
    if from_file:
        return Trade.build(**{k: obj.get(k) for k in TRADE_FIELDS if k != "v"})
    for name in _TRADE_REQUIRED:
        if obj.get(name) is None:
            raise ParseError("missing_field", name)
    trade = Trade(
        venue=rules.name(obj["venue"], "venue"),
        symbol=rules.name(obj["symbol"], "symbol"),
        id=rules.name(obj["id"], "id"),
        price=rules.decimal(obj["price"], "price"),
        qty=rules.decimal(obj["qty"], "qty"),
        side=rules.side(obj.get("side")),
        ts_ms=rules.timestamp(obj["ts_ms"], "ts_ms"),  # type: ignore[arg-type]
        recv_ms=rules.timestamp(obj.get("recv_ms"), "recv_ms", required=False),
    )
    _check_notional(trade.price, trade.qty)
    return trade


@dataclass(frozen=True, slots=True)
class Rejected:
    """One invalid message, or one invalid item (``index``) of an array message."""

    reason: str
    detail: str
    index: int | None = None


def decode_message(
    value: bytes | None,
) -> tuple[list[Trade | Heartbeat | Since | Gap], list[Rejected]]:
    """Decode one ``trades`` message: a JSON object, or a JSON array of up to
    :data:`~candlewax.codec.rules.MAX_ARRAY_ITEMS` of them.

    In an array each item is validated on its own: one bad trade is rejected (with its index),
    its neighbours are kept.
    """
    if value is None:
        return [], [Rejected("json", "empty message (tombstone)")]
    try:
        obj = loads(value)
    except ParseError as exc:
        return [], [Rejected(exc.reason, exc.detail)]
    if not isinstance(obj, list):
        try:
            return [decode_record(obj)], []
        except ParseError as exc:
            return [], [Rejected(exc.reason, exc.detail)]
    if len(obj) > MAX_ARRAY_ITEMS:
        return [], [Rejected("too_large", f"{len(obj)} items, at most {MAX_ARRAY_ITEMS}")]
    good: list[Trade | Heartbeat | Since | Gap] = []
    bad: list[Rejected] = []
    for index, item in enumerate(obj):
        try:
            good.append(decode_record(item))
        except ParseError as exc:
            bad.append(Rejected(exc.reason, exc.detail, index))
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
    "complete",
    "gaps",
)
#: Bar fields by kind (Parquet and the kernel's output take their column types from these).
BAR_PRICES = ("open", "high", "low", "close", "vwap")
BAR_VOLUMES = ("volume", "buy_volume")
BAR_QUOTES = ("quote_volume", "buy_quote_volume")
#: Decimals of a quote sum (Σ price·qty at 1e-8 × 1e-8).
QUOTE_DECIMALS = 2 * rules.DECIMALS
_BAR_MEMBERS = frozenset(BAR_FIELDS)
_MAX_BAR_TRADES = 10**12
#: The ``interval`` of a bar by activity (flows/activity.py): its kind in canonical spelling.
_ACTIVITY_KIND = re.compile(
    r"tick:[1-9][0-9]{0,7}"
    r"|(?:volume|value):(?:0\.[0-9]{0,7}[1-9]|[1-9][0-9]{0,13}(?:\.[0-9]{0,7}[1-9])?)"
)


@dataclass(frozen=True, slots=True)
class Bar(_Keyed):
    """One closed OHLCV bar. Decimal fields are exact decimal strings.

    ``volume`` = Σqty, ``quote_volume`` = Σprice·qty (exact, every significant digit),
    ``buy_*`` = the same sums over aggressor-buy trades, ``vwap`` = quote_volume / volume rounded
    half-even to 8 decimals, ``first_id``/``last_id`` = ids of the opening and closing trades.
    ``end_ms`` is exclusive: the bar covers ``start_ms <= ts_ms < end_ms``.

    The flags (extra fields; the kline fields never change meaning): ``complete`` is false when
    the window starts before the symbol's coverage (its first trade, or the start of a start-up
    fill) or when ``gaps`` — the gap records overlapping the window — is not 0.
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
    first_id: str | None
    last_id: str | None
    complete: bool = True
    gaps: int = 0
    v: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in BAR_FIELDS}

    def encode(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def decode(cls, value: bytes | str) -> Bar:
        """A ``bars`` message → Bar, every field and their relations checked."""
        return cls.from_dict(loads(value))

    @classmethod
    def from_dict(cls, obj: Any) -> Bar:
        obj = _checked(obj, _BAR_MEMBERS, BAR_FIELDS)
        interval = obj["interval"]
        if not (isinstance(interval, str) and _ACTIVITY_KIND.fullmatch(interval)):
            interval = rules.choice(obj["interval"], "interval", tuple(INTERVALS))
        start = rules.timestamp(obj["start_ms"], "start_ms")
        end = rules.timestamp(obj["end_ms"], "end_ms")
        assert start is not None and end is not None
        if interval not in INTERVALS:  # a bar by activity: its trades' time span
            if not start < end:
                raise ParseError("bad_timestamp", f"{start}..{end} is no time span")
        elif interval in CALENDAR_INTERVALS:  # a day, a session's hours: minutes, at most 26 h
            if start % 60_000 or end % 60_000 or not start < end <= start + MAX_WINDOW_MS:
                raise ParseError("bad_timestamp", f"{start}..{end} is not a {interval} window")
        elif start % INTERVALS[interval] or end != start + INTERVALS[interval]:
            raise ParseError("bad_timestamp", f"{start}..{end} is not a {interval} window")
        values: dict[str, Any] = {name: rules.decimal(obj[name], name) for name in BAR_PRICES}
        for name in BAR_VOLUMES:
            values[name] = rules.decimal(obj[name], name, positive=False, whole_digits=26)
        for name in BAR_QUOTES:
            values[name] = rules.decimal(
                obj[name], name, positive=False, whole_digits=40, fraction_digits=QUOTE_DECIMALS
            )
        number = {name: Decimal(text) for name, text in values.items()}
        low, high = number["low"], number["high"]
        trades = rules.integer(obj["trades"], "trades", 0, _MAX_BAR_TRADES)
        if trades == 0:  # a flat bar: one price, nothing traded, no ids
            if not (
                len({number[n] for n in BAR_PRICES}) == 1
                and not any(number[n] for n in (*BAR_VOLUMES, *BAR_QUOTES))
            ):
                raise ParseError("out_of_range", "a bar of no trade must be flat and empty")
            if obj["first_id"] is not None or obj["last_id"] is not None:
                raise ParseError("bad_name", "a bar of no trade has no first_id / last_id")
            first_id = last_id = None
        else:
            if not (
                low <= min(number["open"], number["close"], number["vwap"])
                and max(number["open"], number["close"], number["vwap"]) <= high
                and number["volume"] > 0
                and number["buy_volume"] <= number["volume"]
                and number["buy_quote_volume"] <= number["quote_volume"]
            ):
                raise ParseError(
                    "out_of_range", "prices or volumes of the bar contradict each other"
                )
            first_id = rules.name(obj["first_id"], "first_id", "id")
            last_id = rules.name(obj["last_id"], "last_id", "id")
        complete = obj["complete"]
        if not isinstance(complete, bool):
            raise ParseError("bad_type", f"complete is a {type_name(complete)}, expected a boolean")
        gaps = rules.integer(obj["gaps"], "gaps", 0, _MAX_BAR_TRADES)
        if gaps and complete:
            raise ParseError("out_of_range", f"a bar over {gaps} gap(s) cannot be complete")
        return cls(
            venue=rules.name(obj["venue"], "venue"),
            symbol=rules.name(obj["symbol"], "symbol"),
            interval=interval,
            start_ms=start,
            end_ms=end,
            trades=trades,
            first_id=first_id,
            last_id=last_id,
            complete=complete,
            gaps=gaps,
            **values,
        )


# --------------------------------------------------------------------------- alerts


def alert_id(rule: str, venue: str, symbol: str, interval: str, window_start_ms: int) -> str:
    """Deterministic: the same rule firing on the same window always has the same id."""
    text = f"{rule}|{venue}|{symbol}|{interval}|{window_start_ms}".encode()
    return hashlib.blake2b(text, digest_size=12).hexdigest()


ALERT_FIELDS = (
    "id",
    "rule",
    "venue",
    "symbol",
    "interval",
    "window_start_ms",
    "ts_ms",
    "value",
    "threshold",
    "price",
    "severity",
    "text",
    "v",
)
_ALERT_MEMBERS = frozenset(ALERT_FIELDS)


@dataclass(frozen=True, slots=True)
class Alert(_Keyed):
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
    def decode(cls, value: bytes | str) -> Alert:
        """An ``alerts`` message → Alert, every field checked (a reader may trust them all)."""
        return cls.from_dict(loads(value))

    @classmethod
    def from_dict(cls, obj: Any) -> Alert:
        """A decoded JSON value → Alert, checked as :meth:`decode` checks it."""
        obj = _checked(obj, _ALERT_MEMBERS, ALERT_FIELDS[:-1], version_required=False)
        interval = rules.choice(obj["interval"], "interval", tuple(INTERVALS))
        start = rules.timestamp(obj["window_start_ms"], "window_start_ms")
        assert start is not None
        if start % INTERVALS[interval]:
            raise ParseError("bad_timestamp", f"window_start_ms={start} is not a {interval} start")
        return cls(
            id=rules.name(obj["id"], "id", "alert_id"),
            rule=rules.name(obj["rule"], "rule"),
            venue=rules.name(obj["venue"], "venue"),
            symbol=rules.name(obj["symbol"], "symbol"),
            interval=interval,
            window_start_ms=start,
            ts_ms=rules.timestamp(obj["ts_ms"], "ts_ms"),  # type: ignore[arg-type]
            value=rules.decimal(obj["value"], "value", positive=False, fraction_digits=30),
            threshold=rules.decimal(obj["threshold"], "threshold", fraction_digits=30),
            price=rules.decimal(obj["price"], "price"),
            severity=rules.choice(obj["severity"], "severity", SEVERITIES),
            text=rules.text(obj["text"], "text"),
        )


# --------------------------------------------------------------------------- user events

#: A gateway user: the id of an API key (``desk-1``); the key of ``user_events``.
USER_PATTERN = r"[A-Za-z0-9._-]{1,64}"
_USER_RE = re.compile(USER_PATTERN)
USER_EVENT_TYPES = ("alert", "delivery")
#: The final outcomes of an alert on one destination, as the notifier records them.
DELIVERY_OUTCOMES = ("delivered", "digested", "dead_lettered", "duplicate")
#: A delivery's reason: a short label (``http_403``, ``errcode_93000``, ``unavailable``), or "".
REASON_PATTERN = r"[A-Za-z0-9._:-]{0,64}"
_REASON_RE = re.compile(REASON_PATTERN)
#: Longest ``channel`` of a delivery event (a destination: ``name`` or ``name:chat_id``).
MAX_CHANNEL = 200
#: Largest ``user_events`` message read: an alert at every limit, JSON-escaped, is < 8 KB.
MAX_USER_EVENT_BYTES = 32_768
USER_ALERT_FIELDS = ("v", "type", "user", "ts_ms", "alert")
USER_DELIVERY_FIELDS = ("v", "type", "user", "ts_ms", "alert_id", "channel", "outcome", "reason")
_USER_MEMBERS = {
    "alert": frozenset(USER_ALERT_FIELDS),
    "delivery": frozenset(USER_DELIVERY_FIELDS),
}


def user_id(value: Any, field: str = "user") -> str:
    """A gateway user id: a string of :data:`USER_PATTERN`."""
    if value is None or value == "":
        raise ParseError("missing_field", field)
    if not isinstance(value, str):
        raise ParseError("bad_type", f"{field} is a {type_name(value)}, expected a string")
    if not _USER_RE.fullmatch(value):
        shown = repr(value) if len(value) <= 40 else f"{value[:37]!r}..."
        raise ParseError("bad_name", f"{field}={shown} is not of the form {USER_PATTERN}")
    return value


@dataclass(frozen=True, slots=True)
class UserEvent:
    """One record of a gateway user's private stream (topic ``user_events``, key = ``user``).

    ``type`` is ``alert`` (an alert routed to the user's gateway destination: ``alert`` holds it)
    or ``delivery`` (the final ``outcome`` of an alert the user receives on one destination,
    ``channel``, with a short ``reason``). ``alert_id`` is set for both; ``ts_ms`` is when the
    notifier wrote the record. Build them with :meth:`of_alert` and :meth:`of_delivery`.
    """

    type: str
    user: str
    ts_ms: int
    alert_id: str
    alert: Alert | None = None
    channel: str = ""
    outcome: str = ""
    reason: str = ""
    v: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        return self.user

    @classmethod
    def of_alert(cls, user: str, alert: Alert, ts_ms: int) -> UserEvent:
        return cls("alert", user, ts_ms, alert.id, alert)

    @classmethod
    def of_delivery(
        cls, user: str, alert_id: str, channel: str, outcome: str, reason: str, ts_ms: int
    ) -> UserEvent:
        return cls("delivery", user, ts_ms, alert_id, None, channel, outcome, reason)

    def to_dict(self) -> dict[str, Any]:
        head = {"v": self.v, "type": self.type, "user": self.user, "ts_ms": self.ts_ms}
        if self.type == "alert":
            assert self.alert is not None
            return {**head, "alert": asdict(self.alert)}
        return {**head, "alert_id": self.alert_id, "channel": self.channel,
                "outcome": self.outcome, "reason": self.reason}  # fmt: skip

    def encode(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def decode(cls, value: bytes | str) -> UserEvent:
        """A ``user_events`` message → UserEvent, every field checked (the alert's too)."""
        sized = isinstance(value, bytes | bytearray | memoryview | str)
        if sized and len(value) > MAX_USER_EVENT_BYTES:
            raise ParseError("too_large", f"{len(value)} bytes, at most {MAX_USER_EVENT_BYTES}")
        obj = loads(value)
        if not isinstance(obj, dict):
            raise ParseError("not_object", f"got {type_name(obj)}")
        kind = obj.get("type")
        if kind is None:
            raise ParseError("missing_field", "type")
        if not isinstance(kind, str) or kind not in _USER_MEMBERS:
            raise ParseError("unknown_type", f"type={str(kind)[:40]!r}")
        fields = USER_ALERT_FIELDS if kind == "alert" else USER_DELIVERY_FIELDS
        obj = _checked(obj, _USER_MEMBERS[kind], fields)
        user = user_id(obj["user"])
        ts_ms = rules.timestamp(obj["ts_ms"], "ts_ms")
        assert ts_ms is not None
        if kind == "alert":
            try:
                alert = Alert.from_dict(obj["alert"])
            except ParseError as exc:
                raise ParseError(exc.reason, f"alert: {exc.detail}") from None
            return cls.of_alert(user, alert, ts_ms)
        channel = rules.text(obj["channel"], "channel", MAX_CHANNEL)
        if not channel:
            raise ParseError("missing_field", "channel")
        reason = obj["reason"]
        if not isinstance(reason, str):
            raise ParseError("bad_type", f"reason is a {type_name(reason)}, expected a string")
        if not _REASON_RE.fullmatch(reason):
            shown = repr(reason) if len(reason) <= 40 else f"{reason[:37]!r}..."
            raise ParseError("bad_name", f"reason={shown} is not of the form {REASON_PATTERN}")
        return cls.of_delivery(
            user,
            rules.name(obj["alert_id"], "alert_id", "alert_id"),
            channel,
            rules.choice(obj["outcome"], "outcome", DELIVERY_OUTCOMES),
            reason,
            ts_ms,
        )


# --------------------------------------------------------------------------- dead letters

#: Most bytes of the raw input a dead letter carries; its length and SHA-256 always come along.
RAW_LIMIT = 4096
#: Most characters of one value in a dead letter's ``source``.
SOURCE_VALUE_LIMIT = 512
_SOURCE_KEYS_LIMIT = 8
_DEAD_MEMBERS = frozenset(
    ("v", "reason", "detail", "source", "ts_ms", "raw", "raw_b64", "raw_bytes", "raw_sha256")
)


def _clean(value: str, limit: int) -> str:
    """Bounded text that any JSON writer can write (lone surrogates become ``\\udXXX``)."""
    value = value[:limit]
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _source(source: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in list(source.items())[:_SOURCE_KEYS_LIMIT]:
        key = _clean(str(key), 40)
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            out[key] = value
        else:
            out[key] = _clean(str(value), SOURCE_VALUE_LIMIT)
    return out


def _head(raw: bytes) -> tuple[str, str | bytes]:
    """The first RAW_LIMIT bytes as text (cut on a character boundary), else as bytes."""
    head = raw[:RAW_LIMIT]
    for cut in range(4 if len(raw) > RAW_LIMIT else 1):  # a cut may split one UTF-8 character
        try:
            return "raw", head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return "raw_b64", head


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that could not be used: its raw bytes (the first :data:`RAW_LIMIT` of them,
    with the full length and SHA-256), why, and where it came from.

    ``source`` is ``{"topic", "partition", "offset"}`` (and ``"index"`` for one item of an array
    message) for Kafka input, ``{"venue", "stream"}`` for connectors, ``{"file", "line"}`` for
    replays. Whatever the input, the encoded dead letter is at most ~60 KB: it always fits the
    broker's message limit.
    """

    reason: str
    detail: str
    raw: bytes
    source: dict[str, Any] = field(default_factory=dict)
    ts_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    v: int = SCHEMA_VERSION
    #: Set by :meth:`decode`: the length and SHA-256 of the whole raw input, when ``raw`` holds
    #: only its head.
    raw_bytes: int | None = None
    raw_sha256: str | None = None

    @property
    def truncated(self) -> bool:
        return self.raw_bytes is not None and self.raw_bytes > len(self.raw)

    def encode(self) -> bytes:
        kind, head = _head(self.raw)
        obj: dict[str, Any] = {
            "v": self.v,
            "reason": _clean(self.reason, 40),
            "detail": _clean(self.detail, MAX_TEXT),
            "source": _source(self.source),
            "ts_ms": self.ts_ms,
            kind: head if isinstance(head, str) else base64.b64encode(head).decode("ascii"),
            "raw_bytes": self.raw_bytes if self.raw_bytes is not None else len(self.raw),
            "raw_sha256": self.raw_sha256 or hashlib.sha256(self.raw).hexdigest(),
        }
        return orjson.dumps(obj)

    @classmethod
    def decode(cls, value: bytes | str) -> DeadLetter:
        obj = _checked(loads(value), _DEAD_MEMBERS, ())
        reason = rules.choice(obj.get("reason"), "reason", REASONS, "bad_name")
        source = obj.get("source", {})
        if not isinstance(source, dict) or len(source) > _SOURCE_KEYS_LIMIT:
            raise ParseError("bad_type", "source is not an object of at most 8 members")
        for key, item in source.items():
            if isinstance(item, bool) or not isinstance(item, str | int | None):
                raise ParseError("bad_type", f"source.{key[:40]} is a {type_name(item)}")
            if isinstance(item, str) and len(item) > SOURCE_VALUE_LIMIT:
                raise ParseError("too_large", f"source.{key[:40]} is too long")
        if ("raw" in obj) == ("raw_b64" in obj):
            raise ParseError("missing_field", "exactly one of raw, raw_b64")
        if "raw" in obj:
            raw = rules.text(obj["raw"], "raw", RAW_LIMIT).encode("utf-8")
        else:
            encoded = rules.text(obj["raw_b64"], "raw_b64", 2 * RAW_LIMIT)
            try:
                raw = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise ParseError("bad_type", "raw_b64 is not base64") from None
        if len(raw) > RAW_LIMIT:
            raise ParseError("too_large", f"raw holds {len(raw)} bytes, at most {RAW_LIMIT}")
        size = rules.integer(obj.get("raw_bytes"), "raw_bytes", len(raw), 2**40)
        digest = rules.text(obj.get("raw_sha256"), "raw_sha256", 64)
        return cls(
            reason=reason,
            detail=rules.text(obj.get("detail", ""), "detail"),
            raw=raw,
            source=source,
            ts_ms=rules.integer(obj.get("ts_ms"), "ts_ms", 0, rules.MAX_TS_MS),
            raw_bytes=size,
            raw_sha256=digest,
        )
