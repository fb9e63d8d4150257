"""Bybit websocket frames → normalized :class:`~candlewax.codec.Trade` records (pure, no I/O).

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
:func:`~candlewax.codec.normalize_symbol`. ``BT`` (block trade) and ``RPI`` trades are kept:
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

from typing import Any, NamedTuple

import orjson

from candlewax.codec import Trade
from candlewax.codec import rules as codec_rules
from candlewax.errors import ParseError
from connectors.venue import Venue, json_object, keys, string_field, type_name

TOPIC = "publicTrade"
#: Subscription args per request on spot (Bybit v5 docs).
ARGS_PER_REQUEST = 10

_SIDES = {"Buy": "buy", "Sell": "sell"}


class Bybit(Venue):
    name = "bybit"
    ws_url = "wss://stream.bybit.com/v5/public/spot"
    #: None: ``/v5/market/recent-trade`` has no cursor (latest ≤ 60 spot trades only).
    rest_url = None
    sequential_ids = False
    #: Our choice: far inside the 21,000-character args budget of a public connection (200
    #: topics of ≈ 20 characters), and a moderate load per connection.
    max_symbols_per_connection = 200
    #: Bybit recommends ``{"op":"ping"}`` every 20 s.
    ping = (20.0, '{"op":"ping"}')
    control_markers = (b'"op"', b'"success"')

    def native_symbol(self, symbol: str) -> str:
        """Our symbol → Bybit's: ``BTCUSDT`` → ``BTCUSDT``, ``btc-usdt`` / ``BTC/USDT`` →
        ``BTCUSDT``. Bybit spells spot symbols like ours (upper case, no separator). Raises
        :class:`~candlewax.errors.ConfigError` for an empty symbol."""
        return super().native_symbol(symbol)

    def subscribe_messages(self, symbols: list[str]) -> list[str]:
        """The text frames to send after connecting, ≤ 10 topics each (the spot limit).

        ``["BTCUSDT"]`` → ``['{"op":"subscribe","args":["publicTrade.BTCUSDT"]}']``.
        Duplicates are subscribed once.
        """
        topics = list(dict.fromkeys(f"{TOPIC}.{self.native_symbol(s)}" for s in symbols))
        return [
            orjson.dumps({"op": "subscribe", "args": topics[i : i + ARGS_PER_REQUEST]}).decode()
            for i in range(0, len(topics), ARGS_PER_REQUEST)
        ]

    def trades(self, obj: Any, recv_ms: int | None) -> list[Trade]:
        """The trades of one Bybit frame, v5 or legacy, decoded (``[]`` for frames without any).

        ParseError: ``venue_frame`` for JSON that is not a Bybit message (or a trade push
        without its ``data`` list), ``missing_field``/``bad_type``/``bad_side`` for a trade
        without valid fields, and the codec's reasons for bad values.
        """
        obj = json_object(obj, "a Bybit frame")
        if obj.get("topic") is None:
            if "op" in obj or "success" in obj:  # acks, pongs, errors
                return []
            raise ParseError("venue_frame", f"no 'topic', 'op' or 'success' (keys: {keys(obj)})")
        topic = string_field(obj, "topic")
        name, _, topic_symbol = topic.partition(".")
        names = {TOPIC: _V5, "trade": _LEGACY}.get(name)
        if names is None:
            return []
        return [self._item(item, names, topic_symbol, recv_ms) for item in _data(obj, topic)]

    def control_label(self, obj: dict[str, Any]) -> str | None:
        """Answers to ``{"op":"ping"}`` → ``"pong"``; a successful subscribe →
        ``"subscribed"``; any ``"success": false`` answer (e.g. an unknown topic; the loop logs
        it) → ``"error"``. Both v5 (``op`` at the top) and legacy (``request.op``) acks."""
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

    def _item(self, item: Any, names: _Names, topic_symbol: str, recv_ms: int | None) -> Trade:
        """One trade of a push, by the field names of its API version."""
        item = json_object(item, "a trade")
        return self.trade(
            symbol=item.get(names.symbol, topic_symbol),
            id=item.get(names.id),
            price=item.get(names.price),
            qty=item.get(names.qty),
            side=_side(item.get(names.side), names.side),
            # digit text or an integer (legacy realtime_public sends "1618677785116")
            ts_ms=codec_rules.timestamp_text(item.get(names.ts), names.ts),
            recv_ms=recv_ms,
            symbol_field=names.symbol,
            id_field=names.id,
        )


class _Names(NamedTuple):
    symbol: str
    id: str
    price: str
    qty: str
    side: str
    ts: str


_V5 = _Names(symbol="s", id="i", price="p", qty="v", side="S", ts="T")
_LEGACY = _Names(symbol="symbol", id="trade_id", price="price", qty="size", side="side",
                 ts="trade_time_ms")  # fmt: skip


def _data(obj: dict[str, Any], topic: str) -> list[Any]:
    data = obj.get("data")
    if not isinstance(data, list):
        raise ParseError(
            "venue_frame", f"a {topic[:40]} push without a data list ({type_name(data)})"
        )
    return data


def _side(side: Any, field: str) -> str:
    if side is None:
        raise ParseError("missing_field", field)
    if not isinstance(side, str) or side not in _SIDES:
        raise ParseError("bad_side", f"{field}={str(side)[:20]!r}, expected Buy or Sell")
    return _SIDES[side]
