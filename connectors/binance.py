"""Binance websocket frames → normalized :class:`~candlewax.codec.Trade` records (pure, no I/O).

One parser for every Binance venue candlewax reads; the venue name only labels the records:

==================  =========================================  ==============================
venue               websocket                                  symbols
==================  =========================================  ==============================
``binance``         ``wss://stream.binance.com:9443``          ``BTCUSDT``
``binance-us``      ``wss://stream.binance.us:9443``           ``BTCUSDT``
``binance-usdm``    ``wss://fstream.binance.com`` (USDⓈ-M)     ``BTCUSDT``
``binance-coinm``   ``wss://dstream.binance.com`` (COIN-M)     ``BTCUSD_PERP`` → ``BTCUSDPERP``
==================  =========================================  ==============================

Frames are either the combined-stream envelope ``{"stream": "btcusdt@trade", "data": {...}}`` or
the bare event of a raw stream. ``trade`` events (id ``t``) and ``aggTrade`` events (id ``a``)
become trades; every other event (``depthUpdate``, ``bookTicker``, ``kline``, REST depth
snapshots, subscription acks ``{"result": null, "id": 1}``) yields ``[]``.

Field mapping, the same on every venue:

- ``ts_ms`` is the trade time ``T`` — never the event time ``E``, never the receive time.
- ``side`` is the aggressor: ``m`` ("is the buyer the maker?") true → the taker sold → ``"sell"``;
  false → ``"buy"``. Binance's kline taker-buy volume ``V`` is the sum over ``m == false``.
- ``price``/``qty`` are ``p``/``q`` exactly as sent (``"61837.63000000"``). COIN-M ``q`` counts
  contracts, not coins.
- ``symbol`` is ``s`` through :func:`candlewax.codec.normalize_symbol`, on every venue, so
  COIN-M contracts lose their underscore: ``BTCUSD_PERP`` → ``BTCUSDPERP``, ``BTCUSD_240927`` →
  ``BTCUSD240927``. Nothing is lost in practice (Binance never lists two contracts that differ
  only by the underscore, and the venue separates COIN-M from spot), and every venue follows the
  one rule of the wire format (docs/architecture.md): upper case without separators.
- ``id`` is ``t`` (trades) or ``a`` (aggTrades): a JSON integer, as Binance sends it; anything
  else (``"abc"``, a float, a negative number) is ``bad_type``/``out_of_range``.
- Every trade goes through :meth:`Venue.trade <connectors.venue.Venue.trade>`, the shared
  validation; its reasons (``bad_decimal``, ``non_positive``, ``bad_timestamp``, ...) pass
  through unchanged.

**USDⓈ-M / COIN-M ``X`` (execution type) — only ``MARKET`` is kept.** Futures ``@trade`` frames
carry ``X``: ``MARKET`` (a fill in the order book), ``INSURANCE_FUND``, ``ADL`` or ``NA``. Binance
documents that its market-trade data excludes the other kinds: "Market trades means trades
filled in the order book. Only market trades will be returned, which means the insurance fund
trades and ADL trades won't be returned" (Recent Trades List, ``/fapi/v1/trades`` and
``/dapi/v1/trades``), and "Only market trades will be aggregated, which means the insurance fund
trades and ADL trades won't be aggregated" (USDⓈ-M Aggregate Trade Streams,
developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/
Aggregate-Trade-Streams). Klines are the bars of those market trades (the kline's ``n`` equals
``L - f + 1`` over the trade ids, and in ``BINANCE_FUTURES.ws.1.0`` every kline whose trades were
captured equals the sum of the captured aggTrades — see the unit tests). Non-market executions
are also not tradeable prices: insurance-fund fills come off the tick grid, and ``NA`` /
``INSURANCE_FUND`` frames are seen with ``"p": "0", "q": "0"`` sentinels, which the shared
validation would reject. Binance does not state the kline rule in words; keeping exactly the
kinds its trade and aggTrade data keep is the reading that makes bars equal klines. Spot frames
have no ``X`` and are always kept.

Binance's own 1m klines (:func:`parse_kline`) are exposed so tests can compare our bars with the
exchange's numbers, field for field.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from candlewax.codec import Trade, normalize_symbol
from candlewax.errors import ConfigError, ParseError
from connectors.venue import Frame, Venue, json_object, load_json, type_name

#: Values of the futures ``X`` field kept as trades: fills in the order book, the trades
#: Binance's trade lists, aggTrades and klines are made of (see the module docstring).
KLINE_TRADE_TYPES = frozenset({"MARKET"})

#: Event types that carry trades, and the field holding each one's id.
_ID_FIELD = {"trade": "t", "aggTrade": "a"}

#: Combined-stream channels (the part after the first ``@``) that can carry trades.
TRADE_CHANNELS = frozenset({"trade", "aggTrade"})

_STREAM_CHANNEL_RE = re.compile(r"^[^@]*@([^@]+)")
_KLINE_DECIMALS = ("o", "h", "l", "c", "v", "q", "V", "Q")
_KLINE_INTS = ("t", "T", "n", "f", "L")


class Binance(Venue):
    """Binance spot: ``@trade`` streams in the URL, ids ``t`` consecutive per symbol."""

    name = "binance"
    ws_url = "wss://stream.binance.com:9443"
    rest_url = "https://api.binance.com"
    sequential_ids = True
    # ≤ 1024 streams per connection; the URL form stays well below URL length limits at 200.
    max_symbols_per_connection = 200
    max_lifetime_s = 24 * 3600
    ping = None  # the server pings every 20 s; websocket-client answers with pongs
    control_markers = (b'"result"', b'"error"', b'"code"', b"serverShutdown")
    #: The stream subscribed per symbol (``<symbol>@<stream>``).
    stream: ClassVar[str] = "trade"

    def stream_url(self, base: str, symbols: list[str], token: str | None = None) -> str:
        streams = "/".join(f"{self.native_symbol(s).lower()}@{self.stream}" for s in symbols)
        return f"{base.rstrip('/')}/stream?streams={streams}"

    def trades(self, obj: Any, recv_ms: int | None) -> list[Trade]:
        """The trades of one Binance frame, decoded (``[]`` for frames that carry none).

        A spot ``@trade`` frame, as recorded (``spot_btcusdt_20240808.gz``)::

            {"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT",
             "t":3735683259,"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,
             "M":true}}

        → ``Trade(venue="binance", symbol="BTCUSDT", id="3735683259",
        price="61837.63000000", qty="0.02000000", side="sell", ts_ms=1723161255342,
        recv_ms=recv_ms)``.

        A USDⓈ-M ``@trade`` frame (``usdm_btcusdt_20240808.gz``), kept because ``X`` is
        ``MARKET``::

            {"stream":"btcusdt@trade","data":{"e":"trade","E":1723161256322,"T":1723161256322,
             "s":"BTCUSDT","t":5266583935,"p":"61800.30","q":"0.006","X":"MARKET","m":false}}

        A COIN-M ``@aggTrade`` frame (``BINANCE_DELIVERY.ws.1.0``; ``q`` in contracts)::

            {"stream":"bchusd_perp@aggTrade","data":{"e":"aggTrade","E":1626916404006,
             "a":11285749,"s":"BCHUSD_PERP","p":"427.91","q":"3","f":16034449,"l":16034449,
             "T":1626916403852,"m":true}}

        Frames are the combined-stream envelope or a bare event; a JSON array (the
        ``!...@arr`` all-market streams) is a list of events. ParseError: ``venue_frame`` for
        JSON that is not a Binance message, ``missing_field``/``bad_type`` for a trade event
        without its fields, and the codec's reasons for invalid values.
        """
        if isinstance(obj, list):
            return [t for event in obj for t in self._event(event, recv_ms)]
        obj = json_object(obj, "a Binance frame")
        data = _unwrap(obj)
        if isinstance(data, list):
            return [t for event in data for t in self._event(event, recv_ms)]
        return self._event(data, recv_ms)

    def control_label(self, obj: dict[str, Any]) -> str | None:
        """``{"result": null, "id": 1}`` → subscribed; ``{"error": ...}`` → error;
        ``serverShutdown`` events (enveloped or bare) → reconnect."""
        data = obj.get("data", obj)
        if isinstance(data, dict) and data.get("e") == "serverShutdown":
            return "reconnect"
        if "result" in obj and "id" in obj:
            return "subscribed"
        if "error" in obj or ("code" in obj and "msg" in obj):
            return "error"
        return None

    def _event(self, event: Any, recv_ms: int | None) -> list[Trade]:
        event = json_object(event, "a Binance event")
        kind = event.get("e")
        if kind is None:
            if _is_eventless(event):
                return []
            raise ParseError(
                "venue_frame",
                f"no event type 'e' (keys: {','.join(str(k)[:20] for k in list(event)[:8])})",
            )
        if not isinstance(kind, str):
            raise ParseError("venue_frame", f"event type 'e' is a {type_name(kind)}")
        id_field = _ID_FIELD.get(kind)
        if id_field is None:
            return []
        if kind == "trade" and "X" in event:
            execution = event["X"]
            if not isinstance(execution, str):
                raise ParseError("bad_type", f"X is a {type_name(execution)}, expected a string")
            if execution not in KLINE_TRADE_TYPES:
                return []  # insurance-fund / ADL / NA executions: not market trades
        for name in ("s", id_field, "p", "q", "T", "m"):
            if event.get(name) is None:
                raise ParseError("missing_field", name)
        maker = event["m"]
        if not isinstance(maker, bool):
            raise ParseError("bad_type", f"m is a {type_name(maker)}, expected a boolean")
        trade = self.trade(
            symbol=event["s"],
            id=event[id_field],
            price=event["p"],
            qty=event["q"],
            side="sell" if maker else "buy",
            ts_ms=event["T"],
            recv_ms=recv_ms,
            symbol_field="s",
            id_field=id_field,
        )
        return [trade]


class BinanceUs(Binance):
    name = "binance-us"
    ws_url = "wss://stream.binance.us:9443"
    rest_url = "https://api.binance.us"


class BinanceUsdm(Binance):
    """USDⓈ-M futures: ``@aggTrade`` (its REST backfill, ``/fapi/v1/aggTrades``, needs no key)."""

    name = "binance-usdm"
    ws_url = "wss://fstream.binance.com"
    rest_url = "https://fapi.binance.com"
    stream = "aggTrade"


class BinanceCoinm(Binance):
    """COIN-M futures: ``@aggTrade``, quantities in contracts."""

    name = "binance-coinm"
    ws_url = "wss://dstream.binance.com"
    rest_url = "https://dapi.binance.com"
    stream = "aggTrade"


#: The Binance family by venue name.
VARIANTS: dict[str, type[Binance]] = {
    cls.name: cls for cls in (Binance, BinanceUs, BinanceUsdm, BinanceCoinm)
}
VENUES = tuple(VARIANTS)


def for_venue(venue: str) -> Binance:
    """A parser for one of :data:`VENUES`; ConfigError for any other name (a wiring mistake,
    not bad data)."""
    try:
        return VARIANTS[venue]()
    except KeyError:
        raise ConfigError(
            f"unknown Binance venue {venue!r}; expected one of {', '.join(VENUES)}"
        ) from None


def stream_channel(stream: str) -> str:
    """The channel of a combined-stream name: ``"btcusdt@depth@100ms"`` → ``"depth"``."""
    match = _STREAM_CHANNEL_RE.match(stream)
    return match.group(1) if match else ""


def parse_kline(frame: Frame) -> dict[str, Any] | None:
    """Binance's own bar from a ``kline`` event; ``None`` for every other frame.

    A USDⓈ-M ``@kline_1m`` frame, the closing update of its minute (``BINANCE_FUTURES.ws.1.0``)::

        {"stream":"sushiusdt@kline_1m","data":{"e":"kline","E":1626992760203,"s":"SUSHIUSDT",
         "k":{"t":1626992700000,"T":1626992759999,"s":"SUSHIUSDT","i":"1m","f":126902874,
         "L":126902986,"o":"7.6080","c":"7.6170","h":"7.6180","l":"7.6070","v":"3005","n":113,
         "x":true,"q":"22875.8590","V":"1900","Q":"14464.6960","B":"0"}}}

    → ``{"symbol": "SUSHIUSDT", "interval": "1m", "start_ms": 1626992700000,
    "end_ms": 1626992760000, "open": "7.6080", "high": "7.6180", "low": "7.6070",
    "close": "7.6170", "volume": "3005", "quote_volume": "22875.8590", "trades": 113,
    "buy_volume": "1900", "buy_quote_volume": "14464.6960", "first_id": "126902874",
    "last_id": "126902986", "closed": True}``.

    ``end_ms`` is exclusive (``T + 1``) like :class:`~candlewax.codec.Bar`; decimals are kept as
    sent; ``first_id``/``last_id`` are *trade* ids (not aggTrade ids) as strings, as in a Bar.
    The running kline (``closed`` false) is the bar so far. On COIN-M, ``volume`` counts contracts
    and ``quote_volume`` is Binance's *base-asset* volume (coins), so it is not Σprice·qty.

    Raises :class:`ParseError` for text that is not JSON or a kline event missing its fields.
    """
    obj = load_json(frame)
    if not isinstance(obj, dict):
        return None
    data = _unwrap(obj)
    if not isinstance(data, dict) or data.get("e") != "kline":
        return None
    k = data.get("k")
    if not isinstance(k, dict):
        raise ParseError("missing_field", "k")
    for name in _KLINE_INTS:
        value = k.get(name)
        if value is None:
            raise ParseError("missing_field", f"k.{name}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParseError("bad_type", f"k.{name} is a {type_name(value)}")
    for name in _KLINE_DECIMALS:
        value = k.get(name)
        if value is None:
            raise ParseError("missing_field", f"k.{name}")
        if not isinstance(value, str):
            raise ParseError("bad_type", f"k.{name} is a {type_name(value)}")
    closed = k.get("x")
    if not isinstance(closed, bool):
        raise ParseError("missing_field" if closed is None else "bad_type", "k.x")
    symbol = k.get("s", data.get("s"))
    if not isinstance(symbol, str) or not symbol:
        raise ParseError("missing_field", "k.s")
    interval = k.get("i")
    return {
        "symbol": normalize_symbol(symbol),
        "interval": interval if isinstance(interval, str) else None,
        "start_ms": k["t"],
        "end_ms": k["T"] + 1,
        "open": k["o"],
        "high": k["h"],
        "low": k["l"],
        "close": k["c"],
        "volume": k["v"],
        "quote_volume": k["q"],
        "trades": k["n"],
        "buy_volume": k["V"],
        "buy_quote_volume": k["Q"],
        "first_id": str(k["f"]),
        "last_id": str(k["L"]),
        "closed": closed,
    }


# --------------------------------------------------------------------------- internals


def _unwrap(obj: dict[str, Any]) -> Any:
    """The event inside a combined-stream envelope, or the object itself."""
    if "stream" not in obj:
        return obj
    if not isinstance(obj["stream"], str) or "data" not in obj:
        raise ParseError("venue_frame", "combined-stream envelope without a stream name and data")
    return obj["data"]


def _is_eventless(obj: dict[str, Any]) -> bool:
    """Binance messages without an ``e`` that carry no trades."""
    if "id" in obj and ("result" in obj or "error" in obj):  # subscription ack / error
        return True
    if "lastUpdateId" in obj:  # REST depth snapshot, partial book depth stream
        return True
    return {"u", "s", "b", "a"} <= obj.keys()  # spot bookTicker
