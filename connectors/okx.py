"""OKX v5 public websocket frames → normalized :class:`~candlewax.codec.Trade` records (pure).

Venue ``okx``: ``wss://ws.okx.com:8443/ws/v5/public``, channel ``trades``, one ``instId`` per
subscription argument (spot ``BTC-USDT``, and — if asked for by their OKX spelling — swaps
``BTC-USDT-SWAP`` and futures ``BTC-USD-220527``). A push, as recorded (``OKX.ws.1.0``)::

    {"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",
     "tradeId":"338476307","px":"30236","sz":"0.0002","side":"buy","ts":"1652459224818"}]}

→ ``Trade(venue="okx", symbol="BTCUSDT", id="338476307", price="30236", qty="0.0002",
side="buy", ts_ms=1652459224818)``. Every element of ``data`` is one trade.

Field mapping:

- ``ts_ms`` is ``ts``, the fill time in milliseconds, sent as a decimal string.
- ``side`` is ``side``: "Trade side of taker" (OKX v5 docs, WS / Trades channel and GET / Trades),
  i.e. already the aggressor.
- ``price``/``qty`` are ``px``/``sz`` exactly as sent. For SWAP/FUTURES/OPTION ``sz`` counts
  contracts, not coins (docs: "For spot trading, the unit is base currency; for FUTURES/SWAP/
  OPTION, the unit is contract").
- ``symbol`` is ``instId`` through :func:`~candlewax.codec.normalize_symbol`: ``BTC-USDT`` →
  ``BTCUSDT``, ``BTC-USDT-SWAP`` → ``BTCUSDTSWAP``, ``BTC-USD-220527`` → ``BTCUSD220527``.
  OKX instrument ids differ by more than their dashes, so nothing collides.
- ``id`` is ``tradeId`` (a string of digits).
- Every trade goes through :meth:`Venue.trade <connectors.venue.Venue.trade>`; its reasons
  pass through.

Non-trade frames yield ``[]``: subscription acks ``{"event":"subscribe","arg":{...}}``, errors
``{"event":"error","code":"60012",...}``, notices, other channels (``books``, ``tickers``), and
the keep-alive answer, the bare text ``pong``. :func:`control` labels the ones the connection loop
must act on.

**Trade ids are not consecutive on this channel (SEQUENTIAL_IDS = False).** Today the
``trades`` channel aggregates (it did not yet when the 2022 recording was made: its pushes carry
no ``count``): "The system will send only one message per taker order, filled
price, source. The ``count`` field will be used to represent the number of aggregated matches.
The ``tradeId`` field in the message becomes the last trade ID in the aggregation ... if
``tradeId`` = 123 and ``count`` = 3, it means the message aggregates the trades of ``tradeId`` =
123, 122, and 121" (OKX v5 docs, "WS / Trades channel", okx.com/docs-v5/en/#order-book-trading-
market-data-ws-trades-channel). Ids are therefore increasing per instrument but skip ``count - 1``
values after every aggregated push; a gap detector would see false gaps, and backfilling those
ids from REST would count the aggregated fills twice. The underlying ids *are* consecutive per
instrument: the 2022 recording (before aggregation) has 69 BTC-USDT and 4 BTC-USD-220527 trades
whose ids all step by exactly 1, and the docs describe ``tradeId`` - ``count`` + 1 ..
``tradeId`` as one run. The un-aggregated ``trades-all`` channel ("Every update contain only one
trade", served from ``/ws/v5/business``) is parsed by :func:`parse_frame` too; a connection that
subscribes to it instead gets consecutive ids. cryptofeed (``cryptofeed/exchanges/okx.py``)
reads ``trades`` the same way: ``side`` as is, ``ts`` as integer milliseconds, ``tradeId`` as id.

Keep-alive (OKX v5 docs, Overview / WebSocket): "The connection will break automatically if the
subscription is not established or data has not been pushed for more than 30 seconds ... If the
timer is triggered, which means that no new message is received within N seconds, send the
String 'ping'. Expect a 'pong' as a response." The loop sends ``ping`` every 20 s (:data:`PING`);
sending it on a busy connection too is harmless and keeps the rule simple. Limits: subscription
requests "cannot exceed 64 KB" in total length, 3 connection requests per second per IP, 480
subscribe/unsubscribe/login requests per connection per hour. OKX pushes
``{"event":"notice","code":"64008","msg":"The connection will soon be closed for a service
upgrade. Please reconnect."}`` 30 s before a service upgrade (OKX changelog): :func:`control`
labels it ``"reconnect"``.

REST backfill: ``GET https://www.okx.com/api/v5/market/history-trades?instId=..&type=1&after=
<tradeId>`` pages individual trades by trade id (100 per page, last 3 months, 20 requests per
2 s); ``side`` there is the taker side as well.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from candlewax.codec import Trade
from candlewax.codec import rules as codec_rules
from candlewax.errors import ParseError
from connectors.venue import (
    Frame,
    Venue,
    chunks,
    json_object,
    keys,
    load_json,
    split_pair,
    type_name,
)

#: Channels whose pushes carry trades (same fields): aggregated ``trades`` on ``/ws/v5/public``,
#: one-trade-per-push ``trades-all`` on ``/ws/v5/business``.
TRADE_CHANNELS = frozenset({"trades", "trades-all"})
CHANNEL = "trades"

#: Quote currencies recognised when splitting a normalized symbol (``BTCUSDT`` → ``BTC-USDT``),
#: tried longest first. Anything else must be given in OKX's own spelling (``BASE-QUOTE``).
QUOTES = ("USDT", "USDC", "USD", "EUR", "BTC", "ETH", "DAI", "OKB", "TRY", "BRL", "AUD", "SGD")

#: Subscription arguments per request: far below the 64 KB request limit (≈ 45 bytes each).
_ARGS_PER_REQUEST = 100


class Okx(Venue):
    name = "okx"
    ws_url = "wss://ws.okx.com:8443/ws/v5/public"
    #: ``/api/v5/market/history-trades`` pages trades by ``tradeId`` (``type=1``).
    rest_url = "https://www.okx.com"
    #: False: the ``trades`` channel sends one message per taker order and price (see above).
    sequential_ids = False
    #: Our choice: OKX documents no per-connection cap, only 64 KB per subscribe request and
    #: 480 requests per hour; 200 instruments keep one connection's blast radius moderate.
    max_symbols_per_connection = 200
    #: Send the text ``ping`` every 20 s (OKX drops a connection silent for 30 s).
    ping = (20.0, "ping")
    control_markers = (b'"event"',)  # trade pushes are not decoded by control
    #: subscribe ack, rejected request (logged), notice 64008 (service upgrade in 30 s).
    control_field = "event"
    control_labels: ClassVar[dict[str, str]] = {
        "subscribe": "subscribed",
        "error": "error",
        "notice": "reconnect",
    }

    def native_symbol(self, symbol: str) -> str:
        """Our symbol → OKX's ``instId``: ``BTCUSDT`` → ``BTC-USDT``, ``ethbtc`` → ``ETH-BTC``.

        A symbol already spelled with a separator is OKX's own spelling and is kept
        (upper-cased, ``/`` and ``_`` read as ``-``): ``BTC-USDT``, ``BTC-USDT-SWAP``,
        ``BTC/USDT`` → ``BTC-USDT``. Otherwise the quote currency is split off the end, trying
        :data:`QUOTES` longest first (``USDCUSDT`` → ``USDC-USDT``, ``BTCUSDC`` →
        ``BTC-USDC``). Raises :class:`~candlewax.errors.ConfigError` when no known quote fits:
        pass ``BASE-QUOTE`` then.
        """
        return split_pair(symbol, QUOTES, "OKX", "BTC-USDT")

    def subscribe_messages(self, symbols: list[str]) -> list[str]:
        """The text frames to send after connecting, ≤ 100 instruments each.

        ``["BTCUSDT"]`` →
        ``['{"op":"subscribe","args":[{"channel":"trades","instId":"BTC-USDT"}]}']``.
        Duplicates (after :meth:`native_symbol`) are subscribed once.
        """
        inst_ids = list(dict.fromkeys(self.native_symbol(s) for s in symbols))
        return [
            orjson.dumps(
                {"op": "subscribe", "args": [{"channel": CHANNEL, "instId": i} for i in chunk]}
            ).decode()
            for chunk in chunks(inst_ids, _ARGS_PER_REQUEST)
        ]

    def parse_frame(self, frame: Frame, recv_ms: int | None = None) -> list[Trade]:
        """The trades of one OKX public websocket frame (``[]`` for frames that carry none).

        ParseError: ``json`` for text that is neither JSON nor ``pong``, ``venue_frame`` for
        JSON that is not an OKX message (or a trades push without its ``data`` list),
        ``missing_field``/``bad_type`` for a trade without its fields, and the codec's reasons
        for bad values.
        """
        if isinstance(frame, bytes | bytearray | memoryview | str) and _is_pong(frame):
            return []
        return self.trades(load_json(frame), recv_ms)

    def trades(self, obj: Any, recv_ms: int | None) -> list[Trade]:
        obj = json_object(obj, "an OKX frame")
        if "event" in obj:  # subscribe / unsubscribe / error / notice / login acks
            return []
        arg = obj.get("arg")
        if not isinstance(arg, dict):
            raise ParseError("venue_frame", f"no 'event' and no 'arg' object (keys: {keys(obj)})")
        channel = arg.get("channel")
        if not isinstance(channel, str):
            raise ParseError(
                "venue_frame", f"arg.channel is a {type_name(channel)}, expected a string"
            )
        if channel not in TRADE_CHANNELS:
            return []
        data = obj.get("data")
        if not isinstance(data, list):
            raise ParseError(
                "venue_frame", f"a {channel[:20]} push without a data list ({type_name(data)})"
            )
        return [self._trade(item, arg.get("instId"), recv_ms) for item in data]

    def control(self, frame: Any) -> str | None:
        """``pong`` (the answer to our ``ping``) → ``"pong"``; ``{"event":"subscribe",...}`` →
        ``"subscribed"``; ``{"event":"error",...}`` (a rejected request; the loop logs it) →
        ``"error"``; ``{"event":"notice",...}`` (64008, service upgrade in 30 s) →
        ``"reconnect"``. Never raises."""
        if isinstance(frame, str | bytes | bytearray | memoryview) and _is_pong(frame):
            return "pong"
        return super().control(frame)

    def _trade(self, item: Any, arg_inst_id: Any, recv_ms: int | None) -> Trade:
        item = json_object(item, "a trade")
        if item.get("side") is None:  # the aggressor is always sent: its absence is a change
            raise ParseError("missing_field", "side")
        ts = item.get("ts")
        return self.trade(
            symbol=item.get("instId", arg_inst_id),
            id=item.get("tradeId"),
            price=item.get("px"),
            qty=item.get("sz"),
            side=item.get("side"),
            ts_ms=codec_rules.timestamp_text(ts, "ts"),  # "1652459224818"
            recv_ms=recv_ms,
            symbol_field="instId",
            id_field="tradeId",
        )


def _is_pong(frame: bytes | bytearray | memoryview | str) -> bool:
    """The keep-alive answer: the bare text ``pong`` (not JSON)."""
    if len(frame) > 8:
        return False
    text = frame if isinstance(frame, str) else bytes(frame).decode("latin-1")
    return text.strip() == "pong"
