"""Bybit websocket frames → normalized :class:`~candlewax.records.Trade` records (pure, no I/O).

Venue ``bybit``: Bybit v5 public **spot** stream ``wss://stream.bybit.com/v5/public/spot``, topic
``publicTrade.<SYMBOL>``. The documented push (Bybit v5 docs, WebSocket Stream / Public / Trade,
bybit-exchange.github.io/docs/v5/websocket/public/trade; quoted verbatim by cryptofeed's
``cryptofeed/exchanges/bybit.py``)::

    {"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,"data":[{
     "T":1672304486865,"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50","L":"PlusTick",
     "i":"20f43950-d8dd-5b31-9112-a178eb6023af","BT":false}]}

→ ``Trade(venue="bybit", symbol="BTCUSDT", id="20f43950-d8dd-5b31-9112-a178eb6023af",
price="16578.50", qty="0.001", side="buy", ts_ms=1672304486865)``. ``data`` holds one or more
trades ("sort by matching time in ascending order"), each one trade.

v5 field mapping (docs): ``T`` "The timestamp (ms) that the order is filled" → ``ts_ms`` (never
the message time ``ts``); ``S`` "Side of taker. Buy,Sell" → ``side`` (``Buy`` → ``buy``,
``Sell`` → ``sell``; anything else is ``bad_side``); ``v`` "Trade size" → ``qty``; ``p`` "Trade
price" → ``price`` (both exactly as sent); ``i`` "Trade ID" → ``id``; ``s`` → ``symbol`` through
:func:`~candlewax.records.normalize_symbol`. ``BT`` (block trade) and ``RPI`` trades are kept:
they are executions printed on the public tape (whether Bybit's klines count them is not
documented). ``L``, ``seq``, and the option-only ``mP``/``iP``/``mIv``/``iv`` are ignored.

**Legacy (pre-v5) frames** are parsed too, so the real recordings ``BYBIT.ws.25.0`` (USDT
perpetuals, ``wss://stream.bybit.com/realtime_public``) and ``BYBIT.ws.26.0`` (inverse,
``/realtime``) test this module. Topic ``trade.<SYMBOL>``, as recorded::

    {"topic":"trade.ETHUSDT","data":[{"symbol":"ETHUSDT","tick_direction":"ZeroMinusTick",
     "price":"2365.00","size":0.23,"timestamp":"2021-04-17T16:43:04.000Z",
     "trade_time_ms":"1618677784506","side":"Sell","trade_id":"b862869b-24da-5eef-b6fa-bfbe32cbfc69"}]}

``trade_time_ms`` (a digit string on ``realtime_public``, an integer on ``realtime``) → ``ts_ms``
(never the second-resolution ``timestamp``), ``side`` → ``side``, ``size``/``price``
(JSON numbers on ``realtime``: converted exactly by the shared validation) → ``qty``/``price``,
``trade_id`` → ``id``, ``symbol`` → ``symbol``. Those endpoints are retired and served
derivatives, whose symbols (``BTCUSDT`` perpetual) collide with spot ones and whose inverse
``size`` counts USD contracts: the legacy path exists for recorded traffic, not for live use.
The legacy docs call ``side`` just "side"; the recordings show it is the taker's: 219 of their
251 trades tick the way their side pushes (``PlusTick``/``ZeroPlusTick`` with ``Buy``,
``MinusTick``/``ZeroMinusTick`` with ``Sell``), as an aggressor's do.

Non-trade frames yield ``[]``: acks and pongs (``{"success":true,"ret_msg":"","conn_id":...,
"op":"subscribe"}``, legacy ``{"success":true,...,"request":{"op":"subscribe",...}}``), order
books, tickers, klines.

**Trade ids are not sequential (SEQUENTIAL_IDS = False).** ``i`` is a string and v5 documents
no order for it: the v5 example is a UUID, the legacy recordings carry UUIDs, and Bybit's v3
spot docs (bybit-exchange.github.io/doc-v3-offline/spot/ws-public/public-trade) show digit
strings (``"2290000000036455162"``) that are "shared across different symbols ... suppose in the
last 5 seconds 3 trades happened in ETHUSDT, BTCUSDT, and BHTBTC. Their tradeId (which is "v")
will be consecutive: 112, 113, 114" — consecutive across the venue, so one symbol's run skips,
and no gap can be read from it.

Keep-alive and limits (docs, WebSocket Connect): "we recommend that you send the ping heartbeat
packet every 20 seconds" — ``{"op":"ping"}`` (:data:`PING`), answered ``{"success":true,
"ret_msg":"pong","conn_id":...,"op":"ping"}`` on spot (``{"op":"pong",...}`` elsewhere);
"Spot can input up to 10 args for each subscription request" (so :func:`subscribe_messages`
splits); "for one public connection, you cannot have length of "args" array over 21,000
characters"; at most 500 connections per 5 minutes per IP. Bybit sends no reconnect notice.

No REST backfill (``REST_URL`` is None): ``GET /v5/market/recent-trade`` returns only the latest
trades ("spot: [1,60], default: 60"), with no id or time cursor.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from candlewax.errors import ConfigError, ParseError
from candlewax.records import Heartbeat, Trade, decode_trade, normalize_symbol
from connectors.frames import control_object, keys, load_json, type_name

VENUE = "bybit"
WS_URL = "wss://stream.bybit.com/v5/public/spot"
#: None: ``/v5/market/recent-trade`` has no cursor (latest ≤ 60 spot trades only).
REST_URL: str | None = None
SEQUENTIAL_IDS = False
#: Our choice: far inside the 21,000-character args budget of a public connection (200 topics of
#: ≈ 20 characters), and a moderate load per connection.
MAX_SYMBOLS_PER_CONNECTION = 200
#: Bybit recommends ``{"op":"ping"}`` every 20 s.
PING: tuple[float, str] | None = (20.0, '{"op":"ping"}')

TOPIC = "publicTrade"
#: Subscription args per request on spot (Bybit v5 docs).
ARGS_PER_REQUEST = 10

_SIDES = {"Buy": "buy", "Sell": "sell"}
_DIGITS_RE = re.compile(r"^[0-9]{1,19}$")
_CONTROL_MARKERS = (b'"op"', b'"success"')

Frame = bytes | bytearray | memoryview | str | dict[str, Any] | list[Any]


def native_symbol(symbol: str) -> str:
    """Our symbol → Bybit's: ``BTCUSDT`` → ``BTCUSDT``, ``btc-usdt`` / ``BTC/USDT`` → ``BTCUSDT``.

    Bybit spells spot symbols like ours (upper case, no separator). Raises
    :class:`~candlewax.errors.ConfigError` for an empty symbol.
    """
    text = normalize_symbol(symbol) if isinstance(symbol, str) else ""
    if not text:
        raise ConfigError(f"Bybit symbol {symbol!r} is empty; pass e.g. BTCUSDT")
    return text


def subscribe_messages(symbols: list[str]) -> list[str]:
    """The text frames to send after connecting, ≤ 10 topics each (the spot limit).

    ``["BTCUSDT"]`` → ``['{"op":"subscribe","args":["publicTrade.BTCUSDT"]}']``. Duplicates are
    subscribed once.
    """
    topics = list(dict.fromkeys(f"{TOPIC}.{native_symbol(s)}" for s in symbols))
    return [
        orjson.dumps({"op": "subscribe", "args": topics[i : i + ARGS_PER_REQUEST]}).decode()
        for i in range(0, len(topics), ARGS_PER_REQUEST)
    ]


def parse_frame(frame: Frame, recv_ms: int | None = None) -> list[Trade]:
    """The trades of one Bybit websocket frame, v5 or legacy (``[]`` for frames without any).

    ``frame`` is the raw text/bytes or the already decoded JSON; ``recv_ms`` is the local receive
    time written into every trade. Raises :class:`~candlewax.errors.ParseError`: ``json`` for
    text that is not JSON, ``venue_frame`` for JSON that is not a Bybit message (or a trade
    push without its ``data`` list), ``missing_field``/``bad_type``/``bad_side`` for a trade
    without valid fields, and :func:`~candlewax.records.decode_trade`'s reasons for bad values.
    """
    obj = load_json(frame)
    if not isinstance(obj, dict):
        raise ParseError("venue_frame", f"a Bybit frame is a JSON object, got {type_name(obj)}")
    topic = obj.get("topic")
    if topic is None:
        if "op" in obj or "success" in obj:  # acks, pongs, errors
            return []
        raise ParseError("venue_frame", f"no 'topic', 'op' or 'success' (keys: {keys(obj)})")
    if not isinstance(topic, str):
        raise ParseError("venue_frame", f"'topic' is a {type_name(topic)}, expected a string")
    name, _, topic_symbol = topic.partition(".")
    if name == TOPIC:
        return [_v5_trade(item, topic_symbol, recv_ms) for item in _data(obj, topic)]
    if name == "trade":
        return [_legacy_trade(item, topic_symbol, recv_ms) for item in _data(obj, topic)]
    return []


def control(frame: Any) -> str | None:
    """What the connection loop must react to, or ``None`` (never raises).

    Answers to ``{"op":"ping"}`` → ``"pong"``; a successful subscribe → ``"subscribed"``; any
    ``"success": false`` answer (e.g. an unknown topic; the loop logs it) → ``"error"``. Both v5 (``op`` at the top) and legacy (``request.op``) acks.
    """
    obj = control_object(frame, _CONTROL_MARKERS)  # trade frames are not decoded here
    if obj is None:
        return None
    op = obj.get("op")
    request = obj.get("request")
    if op is None and isinstance(request, dict):  # legacy: the request is echoed back
        op = request.get("op")
    if op == "pong" or (op == "ping" and obj.get("ret_msg") == "pong"):
        return "pong"
    if obj.get("success") is False:
        return "error"
    if op == "subscribe" and obj.get("success") is True:
        return "subscribed"
    return None


# --------------------------------------------------------------------------- internals


def _data(obj: dict[str, Any], topic: str) -> list[Any]:
    data = obj.get("data")
    if not isinstance(data, list):
        raise ParseError("venue_frame", f"a {topic} push without a data list ({type_name(data)})")
    return data


def _v5_trade(item: Any, topic_symbol: str, recv_ms: int | None) -> Trade:
    if not isinstance(item, dict):
        raise ParseError("venue_frame", f"a trade is a JSON object, got {type_name(item)}")
    return _trade(
        symbol=item.get("s", topic_symbol),
        side=item.get("S"),
        fields={"id": item.get("i"), "price": item.get("p"), "qty": item.get("v")},
        ts=item.get("T"),
        recv_ms=recv_ms,
        names=("s", "S"),
    )


def _legacy_trade(item: Any, topic_symbol: str, recv_ms: int | None) -> Trade:
    if not isinstance(item, dict):
        raise ParseError("venue_frame", f"a trade is a JSON object, got {type_name(item)}")
    return _trade(
        symbol=item.get("symbol", topic_symbol),
        side=item.get("side"),
        fields={"id": item.get("trade_id"), "price": item.get("price"), "qty": item.get("size")},
        ts=item.get("trade_time_ms"),
        recv_ms=recv_ms,
        names=("symbol", "side"),
    )


def _trade(
    symbol: Any,
    side: Any,
    fields: dict[str, Any],
    ts: Any,
    recv_ms: int | None,
    names: tuple[str, str],
) -> Trade:
    if symbol is None or symbol == "":
        raise ParseError("missing_field", names[0])
    if not isinstance(symbol, str):
        raise ParseError("bad_type", f"{names[0]} is a {type_name(symbol)}")
    if side is None:
        raise ParseError("missing_field", names[1])
    if not isinstance(side, str) or side not in _SIDES:
        raise ParseError("bad_side", f"{names[1]}={str(side)[:20]!r}, expected Buy or Sell")
    if isinstance(ts, str) and _DIGITS_RE.match(ts):
        ts = int(ts)  # legacy realtime_public sends "1618677785116"
    record = decode_trade(
        {
            "venue": VENUE,
            "symbol": normalize_symbol(symbol),
            **fields,
            "side": _SIDES[side],
            "ts_ms": ts,
            "recv_ms": recv_ms,
        }
    )
    if isinstance(record, Heartbeat):  # pragma: no cover - no "type" key is ever passed
        raise ParseError("venue_frame", "not a trade")
    return record
