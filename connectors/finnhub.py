"""Finnhub websocket frames → normalized :class:`~candlewax.records.Trade` records (pure, no I/O).

Venue ``finnhub``: ``wss://ws.finnhub.io`` — the caller appends ``?token=...``; the token never
passes through this module and must never be logged. Finnhub aggregates many markets; symbols
are its own spelling: ``BINANCE:BTCUSDT`` (crypto, exchange prefix), ``AAPL`` (US stocks),
``OANDA:EUR_USD`` (forex). A trade message — a line of the derived fixture
``finnhub_envelope_from_binance_btcusdt_20240808.jsonl`` (no licensed Finnhub recording exists;
its shape is Finnhub's documented one)::

    {"data":[{"c":null,"p":61837.63,"s":"BINANCE:BTCUSDT","t":1723161255342,"v":0.02}],
     "type":"trade"}

→ ``Trade(venue="finnhub", symbol="BINANCE:BTCUSDT", id="1723161255342-0-e60d0af2bbc8",
price="61837.63", qty="0.02", side=None, ts_ms=1723161255342)``.

Field mapping (Finnhub docs, Trades - Last Price Updates: ``data`` "List of trades or price
updates", ``s`` symbol, ``p`` last price, ``t`` "UNIX milliseconds timestamp", ``v`` volume,
``c`` trade conditions):

- ``ts_ms`` is ``t``; ``price``/``qty`` are ``p``/``v``. They arrive as JSON numbers; the shared
  validation turns them into exact decimal strings (``61837.63`` → ``"61837.63"``, ``9e-05`` →
  ``"0.00009"``, ``61836`` → ``"61836"``), so nothing is rounded.
- ``side`` is ``None``: Finnhub does not say who the aggressor was.
- **Items with ``v == 0`` are skipped**: the docs call ``data`` "trades or price updates", and a
  price update carries no volume; it is not a trade (and the validation would reject it).
  ``c`` (stock trade conditions) is not interpreted: every trade with volume is kept.
- ``symbol`` is ``s`` through :func:`~candlewax.records.normalize_symbol` **with its exchange
  prefix kept**: ``BINANCE:BTCUSDT`` → ``BINANCE:BTCUSDT``, ``OANDA:EUR_USD`` → ``OANDA:EURUSD``,
  ``AAPL`` → ``AAPL``. Stripping the prefix would merge different markets into one symbol —
  ``BINANCE:BTCUSDT`` with another exchange's ``BTCUSDT``, ``COINBASE:BTC-USD`` with
  ``BITSTAMP:btcusd``, ``OANDA:EUR_USD`` with ``FXCM:EUR/USD`` — and their bars would silently
  mix two order books. ``normalize_symbol`` removes only ``-_/`` and spaces, so the ``:`` stays
  and the symbol is still upper case without those separators. Consequence: the Kafka key is
  ``finnhub:BINANCE:BTCUSDT``; a reader splitting a key must split at the *first* ``:`` only
  (venue names never contain one).
- ``id``: Finnhub has no trade id. It is derived deterministically from the trade and its place
  in the message — ``"<t>-<index in data>-<hash of (symbol, t, price, qty, index)>"``, over the
  validated canonical values — so re-parsing the same message, as text or decoded, gives the
  same ids. **It is not unique across messages**: two messages each holding an identical trade
  (same ``t``, ``p``, ``v``) at the same position get the same id, and identical trades are
  common (the fixture repeats ``p=61837.63, v=0.00009`` within one millisecond; 4 of its 9,757
  trades share their id with another message's trade). Never deduplicate Finnhub trades by id
  (``SEQUENTIAL_IDS`` is False, so the connection loop does not).

Other messages yield ``[]``: ``{"type":"ping"}`` (Finnhub's application heartbeat; no answer is
needed — finnhubio/Finnhub-API#109 shows idle subscriptions receiving only these) and
``{"type":"error","msg":"Invalid symbol ..."}`` (finnhubio/Finnhub-API#20). :func:`control` labels
them ``"heartbeat"`` and ``"error"``. Finnhub has no subscription ack and no reconnect notice;
users report the free tier's connection being dropped every few hours (finnhubio/Finnhub-API#517)
— the loop reconnects. Limits: 50 symbols on the free plan (250 on Basic,
finnhubio/Finnhub-API#252), hence :data:`MAX_SYMBOLS_PER_CONNECTION`; one ``subscribe`` message
per symbol. No trade backfill by id exists (``REST_URL`` is None).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import orjson

from candlewax.errors import ConfigError, ParseError
from candlewax.records import Heartbeat, Trade, decode_trade, normalize_symbol
from connectors.frames import control_object, load_json, type_name

VENUE = "finnhub"
#: The caller appends ``?token=...`` (never stored or logged here).
WS_URL = "wss://ws.finnhub.io"
REST_URL: str | None = None
SEQUENTIAL_IDS = False
#: The free plan's websocket symbol limit.
MAX_SYMBOLS_PER_CONNECTION = 50
#: None: Finnhub pings (``{"type":"ping"}``); protocol-level pings from the loop suffice.
PING: tuple[float, str] | None = None

_CONTROL_MARKERS = (b'"ping"', b'"error"')

Frame = bytes | bytearray | memoryview | str | dict[str, Any] | list[Any]


def native_symbol(symbol: str) -> str:
    """Finnhub symbols are passed through as given (trimmed): ``BINANCE:BTCUSDT``, ``AAPL``.

    Finnhub's namespace mixes exchanges and asset classes; only the user knows the spelling.
    Raises :class:`~candlewax.errors.ConfigError` for an empty symbol.
    """
    text = symbol.strip() if isinstance(symbol, str) else ""
    if not text:
        raise ConfigError(f"Finnhub symbol {symbol!r} is empty; pass e.g. BINANCE:BTCUSDT or AAPL")
    return text


def subscribe_messages(symbols: list[str]) -> list[str]:
    """One ``subscribe`` frame per symbol (Finnhub takes one symbol per message).

    ``["BINANCE:BTCUSDT"]`` → ``['{"type":"subscribe","symbol":"BINANCE:BTCUSDT"}']``.
    Duplicates are subscribed once.
    """
    return [
        orjson.dumps({"type": "subscribe", "symbol": s}).decode()
        for s in dict.fromkeys(native_symbol(s) for s in symbols)
    ]


def parse_frame(frame: Frame, recv_ms: int | None = None) -> list[Trade]:
    """The trades of one Finnhub websocket message (``[]`` for messages that carry none).

    ``frame`` is the raw text/bytes or the already decoded JSON; ``recv_ms`` is the local receive
    time written into every trade. Raises :class:`~candlewax.errors.ParseError`: ``json`` for
    text that is not JSON, ``venue_frame`` for JSON that is not a Finnhub message (no string
    ``type``, or a trade message without its ``data`` list), ``missing_field``/``bad_type`` for
    a trade without its symbol, and :func:`~candlewax.records.decode_trade`'s reasons for bad
    values.
    """
    obj = load_json(frame)
    if not isinstance(obj, dict):
        raise ParseError("venue_frame", f"a Finnhub message is a JSON object, got {type_name(obj)}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ParseError("venue_frame", f"'type' is a {type_name(kind)}, expected a string")
    if kind != "trade":
        return []  # ping, error, and message types of other products (news, ...)
    data = obj.get("data")
    if not isinstance(data, list):
        raise ParseError("venue_frame", f"a trade message without a data list ({type_name(data)})")
    trades: list[Trade] = []
    for index, item in enumerate(data):
        trade = _trade(item, index, recv_ms)
        if trade is not None:
            trades.append(trade)
    return trades


def control(frame: Any) -> str | None:
    """What the connection loop must react to, or ``None`` (never raises).

    ``{"type":"ping"}`` → ``"heartbeat"`` (nothing to answer); ``{"type":"error",...}`` (e.g.
    an invalid symbol or too many symbols; the loop logs it) → ``"error"``.
    """
    obj = control_object(frame, _CONTROL_MARKERS)  # trade frames are not decoded here
    if obj is None:
        return None
    kind = obj.get("type")
    if kind == "ping":
        return "heartbeat"
    if kind == "error":
        return "error"
    return None


def trade_id(symbol: str, ts_ms: int, price: str, qty: str, index: int) -> str:
    """The derived id of a Finnhub trade: ``"<t>-<index>-<12 hex digits>"``.

    The hash covers the normalized symbol, time, canonical price and quantity strings and the
    index in ``data``. Deterministic for the same message; not unique across messages (see the
    module docstring).
    """
    key = f"{symbol}|{ts_ms}|{price}|{qty}|{index}".encode()
    return f"{ts_ms}-{index}-{hashlib.blake2b(key, digest_size=6).hexdigest()}"


# --------------------------------------------------------------------------- internals


def _trade(item: Any, index: int, recv_ms: int | None) -> Trade | None:
    if not isinstance(item, dict):
        raise ParseError("venue_frame", f"a trade is a JSON object, got {type_name(item)}")
    volume = item.get("v")
    if isinstance(volume, int | float) and not isinstance(volume, bool) and volume == 0:
        return None  # a price update, not a trade
    symbol = item.get("s")
    if symbol is None or symbol == "":
        raise ParseError("missing_field", "s")
    if not isinstance(symbol, str):
        raise ParseError("bad_type", f"s is a {type_name(symbol)}")
    record = decode_trade(
        {
            "venue": VENUE,
            "symbol": normalize_symbol(symbol),
            "id": "-",  # replaced below, from the validated values
            "price": item.get("p"),
            "qty": volume,
            "side": None,
            "ts_ms": item.get("t"),
            "recv_ms": recv_ms,
        }
    )
    if isinstance(record, Heartbeat):  # pragma: no cover - no "type" key is ever passed
        raise ParseError("venue_frame", "not a trade")
    return replace(
        record, id=trade_id(record.symbol, record.ts_ms, record.price, record.qty, index)
    )
