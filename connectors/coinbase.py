"""Coinbase Exchange websocket frames → normalized :class:`~candlewax.codec.Trade` records (pure).

Venue ``coinbase``: the Coinbase Exchange feed ``wss://ws-feed.exchange.coinbase.com`` (formerly
``ws-feed.pro.coinbase.com``), channel ``matches``, products spelled ``BTC-USD``. A ``match``,
as recorded (``COINBASE.ws.28.0``)::

    {"type":"match","trade_id":280232,"maker_order_id":"2a0da34e-61f7-4c36-88e5-c9dd15927b16",
     "taker_order_id":"3c82abaa-c01e-4608-be59-6a1e69742891","side":"sell","size":"985",
     "price":"0.00001305","product_id":"SKL-BTC","sequence":177100030,
     "time":"2021-04-17T16:43:37.089723Z"}

→ ``Trade(venue="coinbase", symbol="SKLBTC", id="280232", price="0.00001305", qty="985",
side="buy", ts_ms=1618677817089)``.

Field mapping:

- ``side`` — **the ``side`` of a match is the maker's side**, so the aggressor is the opposite:
  "The aggressor or taker order is the one executing immediately after being received and the
  maker order is a resting order on the book. The side field indicates the maker order side. If
  the side is sell this indicates the maker was a sell order and the match is considered an
  up-tick. A buy side match is a down-tick" (Coinbase Exchange docs, Websocket channels, match;
  the REST ``/products/{id}/trades`` docs say the same of their ``side``). The recording agrees:
  each of its 107 matches also appears in the ``ticker`` channel (same ``trade_id``), whose
  ``side`` is the taker's, and the two sides are opposite every time. ``"sell"`` → ``"buy"``,
  ``"buy"`` → ``"sell"``; anything else is ``bad_side``.
- ``ts_ms`` is ``time`` (ISO 8601, microseconds, UTC ``Z``) converted with integer arithmetic and
  truncated to the millisecond: ``...T16:43:37.089723Z`` → ``...37089``. Truncation keeps a trade
  in the millisecond — and so the bar — it happened in; rounding could move a trade at
  ``59.9996 s`` into the next minute. Explicit ``±HH:MM`` offsets are honoured.
- ``price``/``qty`` are ``price``/``size`` exactly as sent; ``id`` is ``trade_id``; ``symbol`` is
  ``product_id`` through :func:`~candlewax.codec.normalize_symbol` (``SKL-BTC`` → ``SKLBTC``).
- ``last_match`` — sent once per product right after subscribing, the product's latest trade
  (same fields) — is a real trade and is returned like a ``match``. After a reconnect it usually
  repeats a trade already seen; the connection loop drops it by id (ids are sequential).
- Every trade goes through :meth:`Venue.trade <connectors.venue.Venue.trade>`; its reasons
  pass through.

Every other message (``subscriptions``, ``heartbeat``, ``ticker``, ``snapshot``, ``l2update``,
``error``, and types Coinbase adds later: "New message types can be added at any time. Clients
are expected to ignore messages they do not support") yields ``[]``.

**Trade ids are sequential per product (SEQUENTIAL_IDS = True).** The heartbeat channel carries
"sequence numbers and last trade IDs that can be used to verify that no messages were missed"
(docs, Heartbeat channel), the REST trade list pages by ``trade_id``, and in the recording all
97 matches and 10 last_matches of 10 products step by exactly 1 per product. The feed may drop
messages under load, so gap detection plus REST backfill is what makes it complete.

Limits (docs, Websocket rate limits / overview): a ``subscribe`` must arrive within 5 s of
connecting or the server disconnects; 8 connection requests per second per IP (20 burst); 100
client messages per second; since 2024-06-24 at most 10 subscriptions per product per channel
per account (duplicates count). Keep-alive is protocol-level only (:data:`PING` is ``None``).
(cryptofeed's ``cryptofeed/exchanges/coinbase.py`` now reads Coinbase *Advanced Trade*
``market_trades``, a different API with its own message shapes; it is no reference here.)
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime
from typing import Any, ClassVar

import orjson

from candlewax.codec import Trade
from candlewax.errors import ParseError
from connectors.venue import Venue, json_object, split_pair, string_field, type_name

CHANNEL = "matches"
#: Message types carrying one trade each.
TRADE_TYPES = frozenset({"match", "last_match"})
#: Quote currencies recognised when splitting a normalized symbol (``BTCUSD`` → ``BTC-USD``),
#: tried longest first. Anything else must be given in Coinbase's spelling (``BASE-QUOTE``).
QUOTES = ("USDT", "USDC", "USD", "EUR", "GBP", "BTC", "ETH", "DAI")

_AGGRESSOR = {"buy": "sell", "sell": "buy"}  # maker side → taker side
_ISO_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})"
)


class Coinbase(Venue):
    name = "coinbase"
    ws_url = "wss://ws-feed.exchange.coinbase.com"
    #: ``GET /products/{product_id}/trades`` pages by ``trade_id`` (``before``/``after``
    #: cursors, ≤ 1000 per page); its ``side`` is the maker side too.
    rest_url = "https://api.exchange.coinbase.com"
    sequential_ids = True
    #: Our choice: Coinbase documents no per-connection product cap, and advises spreading
    #: subscriptions over several connections; 50 products keep one connection's load moderate.
    max_symbols_per_connection = 50
    ping = None  # protocol-level websocket pings only
    control_markers = (b'"subscriptions"', b'"error"', b'"heartbeat"')
    #: ``{"type":"subscriptions",...}`` (the answer to a subscribe), ``{"type":"error",...}``
    #: (e.g. an unknown product; the loop logs it), heartbeats. No reconnect notice exists.
    control_field = "type"
    control_labels: ClassVar[dict[str, str]] = {
        "subscriptions": "subscribed",
        "error": "error",
        "heartbeat": "heartbeat",
    }

    def native_symbol(self, symbol: str) -> str:
        """Our symbol → Coinbase's ``product_id``: ``BTCUSD`` → ``BTC-USD``, ``ethbtc`` →
        ``ETH-BTC``.

        A symbol already spelled with a separator is Coinbase's own spelling and is kept
        (upper-cased, ``/`` and ``_`` read as ``-``). Otherwise the quote currency is split off
        the end, trying :data:`QUOTES` longest first (``BTCUSDC`` → ``BTC-USDC``, ``USDTUSD``
        → ``USDT-USD``). Raises :class:`~candlewax.errors.ConfigError` when no known quote
        fits.
        """
        return split_pair(symbol, QUOTES, "Coinbase", "BTC-USD")

    def subscribe_messages(self, symbols: list[str]) -> list[str]:
        """One ``subscribe`` frame for all products (Coinbase takes many per message).

        ``["BTCUSD"]`` →
        ``['{"type":"subscribe","product_ids":["BTC-USD"],"channels":["matches"]}']``; ``[]`` →
        ``[]``. Duplicates are subscribed once (each counts against the 10-subscription limit
        per product and channel).
        """
        products = list(dict.fromkeys(self.native_symbol(s) for s in symbols))
        if not products:
            return []
        message = {"type": "subscribe", "product_ids": products, "channels": [CHANNEL]}
        return [orjson.dumps(message).decode()]

    def trades(self, obj: Any, recv_ms: int | None) -> list[Trade]:
        """The trades of one Coinbase Exchange frame, decoded (``[]`` for frames without any).

        ParseError: ``venue_frame`` for JSON that is not a Coinbase message (no string
        ``type``), ``missing_field``/``bad_type``/``bad_side``/``bad_timestamp`` for a match
        without valid fields, and the codec's reasons for bad values.
        """
        obj = json_object(obj, "a Coinbase frame")
        kind = string_field(obj, "type")
        if kind not in TRADE_TYPES:
            return []
        maker = obj.get("side")
        if maker is None:
            raise ParseError("missing_field", "side")
        if not isinstance(maker, str) or maker not in _AGGRESSOR:
            raise ParseError("bad_side", f"side={str(maker)[:20]!r}, expected buy or sell")
        trade = self.trade(
            symbol=obj.get("product_id"),
            id=obj.get("trade_id"),
            price=obj.get("price"),
            qty=obj.get("size"),
            side=_AGGRESSOR[maker],
            ts_ms=iso_to_ms(obj.get("time")),
            recv_ms=recv_ms,
            symbol_field="product_id",
            id_field="trade_id",
        )
        return [trade]


def iso_to_ms(value: Any) -> int:
    """``"2021-04-17T16:43:37.089723Z"`` → ``1618677817089`` (UTC, truncated to the ms).

    Exact: integer arithmetic, no float. Raises ``ParseError("bad_timestamp")`` for a string that
    is not such a timestamp and ``missing_field`` for ``None``.
    """
    if value is None:
        raise ParseError("missing_field", "time")
    if not isinstance(value, str):
        raise ParseError("bad_timestamp", f"time is a {type_name(value)}, expected ISO 8601 text")
    match = _ISO_RE.fullmatch(value)
    if match is None:
        raise ParseError("bad_timestamp", f"time={value[:40]!r} is not ISO 8601 UTC")
    year, month, day, hour, minute, second, frac, zone = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError as exc:
        raise ParseError("bad_timestamp", f"time={value[:40]!r}: {exc}") from None
    seconds = calendar.timegm(moment.timetuple())
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds * 1000 + int((frac or "").ljust(3, "0")[:3])
