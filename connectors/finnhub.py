"""Finnhub websocket frames → normalized :class:`~candlewax.codec.Trade` records (pure, no I/O).

Venue ``finnhub``: ``wss://ws.finnhub.io`` — the caller appends ``?token=...``; the token never
passes through this module and must never be logged. Finnhub aggregates many markets; symbols
are its own spelling: ``BINANCE:BTCUSDT`` (crypto, exchange prefix), ``AAPL`` (US stocks),
``OANDA:EUR_USD`` (forex). A trade message — a line of the derived fixture
``finnhub_envelope_from_binance_btcusdt_20240808.jsonl`` (no licensed Finnhub recording exists;
its shape is Finnhub's documented one)::

    {"data":[{"c":null,"p":61837.63,"s":"BINANCE:BTCUSDT","t":1723161255342,"v":0.02}],
     "type":"trade"}

→ ``Trade(venue="finnhub", symbol="BINANCE:BTCUSDT", id="1723161255342-0",
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
- ``symbol`` is ``s`` through :func:`~candlewax.codec.normalize_symbol` **with its exchange
  prefix kept**: ``BINANCE:BTCUSDT`` → ``BINANCE:BTCUSDT``, ``OANDA:EUR_USD`` → ``OANDA:EURUSD``,
  ``AAPL`` → ``AAPL``. Stripping the prefix would merge different markets into one symbol —
  ``BINANCE:BTCUSDT`` with another exchange's ``BTCUSDT``, ``COINBASE:BTC-USD`` with
  ``BITSTAMP:btcusd``, ``OANDA:EUR_USD`` with ``FXCM:EUR/USD`` — and their bars would silently
  mix two order books. ``normalize_symbol`` removes only ``-_/`` and spaces, so the ``:`` stays
  and the symbol is still upper case without those separators. Consequence: the Kafka key is
  ``finnhub:BINANCE:BTCUSDT``; a reader splitting a key must split at the *first* ``:`` only
  (venue names never contain one).
- ``id``: Finnhub has no trade id. The parser numbers the trades of each (symbol, ``t``) in the
  order they arrive on its connection: ``"<t>-<n>"``, ``n`` from 0. Identical trades are real
  and common (the fixture repeats ``p=61837.63, v=0.00009`` within one millisecond, in two
  messages), so the id cannot come from the trade's content; numbering makes every id unique
  in its stream, and the flow's deduplication by (venue, symbol, id) never drops a real trade.
  Re-reading the same stream from its start (a replay) gives the same ids. The counts of the
  last :data:`ID_MEMORY` (symbol, millisecond) pairs are kept (a trade arriving later for an
  older millisecond than that would reuse an id, and be dropped as a duplicate).

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

import collections
from typing import Any, ClassVar

import orjson

from candlewax.codec import Trade
from candlewax.errors import ConfigError, ParseError
from connectors.venue import Venue, json_object, string_field, type_name

#: (symbol, millisecond) pairs whose trade counts are remembered, per connection.
ID_MEMORY = 4096


class Finnhub(Venue):
    name = "finnhub"
    #: The token is appended as ``?token=...`` by :meth:`stream_url` (never stored or logged).
    ws_url = "wss://ws.finnhub.io"
    rest_url = None  # no trade backfill by id exists
    sequential_ids = False
    #: The free plan's websocket symbol limit.
    max_symbols_per_connection = 50
    #: None: Finnhub pings (``{"type":"ping"}``); protocol-level pings from the loop suffice.
    ping = None
    token_env = "FINNHUB_TOKEN"
    control_markers = (b'"ping"', b'"error"')
    #: ``{"type":"ping"}`` (nothing to answer), ``{"type":"error",...}`` (an invalid symbol,
    #: too many symbols; the loop logs it).
    control_field = "type"
    control_labels: ClassVar[dict[str, str]] = {"ping": "heartbeat", "error": "error"}

    def __init__(self) -> None:
        self._counts: collections.OrderedDict[tuple[str, int], int] = collections.OrderedDict()

    def native_symbol(self, symbol: str) -> str:
        """Finnhub symbols are passed through as given (trimmed): ``BINANCE:BTCUSDT``, ``AAPL``.

        Finnhub's namespace mixes exchanges and asset classes; only the user knows the spelling.
        Raises :class:`~candlewax.errors.ConfigError` for an empty symbol.
        """
        text = symbol.strip() if isinstance(symbol, str) else ""
        if not text:
            raise ConfigError(
                f"Finnhub symbol {symbol!r} is empty; pass e.g. BINANCE:BTCUSDT or AAPL"
            )
        return text

    def subscribe_messages(self, symbols: list[str]) -> list[str]:
        """One ``subscribe`` frame per symbol (Finnhub takes one symbol per message).

        ``["BINANCE:BTCUSDT"]`` → ``['{"type":"subscribe","symbol":"BINANCE:BTCUSDT"}']``.
        Duplicates are subscribed once.
        """
        return [
            orjson.dumps({"type": "subscribe", "symbol": s}).decode()
            for s in dict.fromkeys(self.native_symbol(s) for s in symbols)
        ]

    def stream_url(self, base: str, symbols: list[str], token: str | None = None) -> str:
        if not token:
            raise ConfigError(
                "FINNHUB_TOKEN is not set: Finnhub needs an API token "
                "(https://finnhub.io/dashboard); export it in the environment (or "
                "FINNHUB_TOKEN_FILE), never on the command line"
            )
        return f"{base}?token={token}"

    def trades(self, obj: Any, recv_ms: int | None) -> list[Trade]:
        """The trades of one Finnhub message, decoded (``[]`` for messages that carry none).

        ParseError: ``venue_frame`` for JSON that is not a Finnhub message (no string ``type``,
        or a trade message without its ``data`` list), ``missing_field``/``bad_type`` for a
        trade without its symbol, and the codec's reasons for bad values.
        """
        obj = json_object(obj, "a Finnhub message")
        kind = string_field(obj, "type")
        if kind != "trade":
            return []  # ping, error, and message types of other products (news, ...)
        data = obj.get("data")
        if not isinstance(data, list):
            raise ParseError(
                "venue_frame", f"a trade message without a data list ({type_name(data)})"
            )
        # Validate the whole message before numbering any of it: a rejected message must not
        # shift the numbers of the trades after it.
        checked = [self._checked(item, recv_ms) for item in data]
        return [self._numbered(trade) for trade in checked if trade is not None]

    def _checked(self, item: Any, recv_ms: int | None) -> Trade | None:
        item = json_object(item, "a trade")
        volume = item.get("v")
        if isinstance(volume, int | float) and not isinstance(volume, bool) and volume == 0:
            return None  # a price update, not a trade
        return self.trade(
            symbol=item.get("s"),
            id="-",  # numbered once the whole message is valid
            price=item.get("p"),
            qty=volume,
            side=None,
            ts_ms=item.get("t"),
            recv_ms=recv_ms,
            symbol_field="s",
        )

    def _numbered(self, trade: Trade) -> Trade:
        key = (trade.symbol, trade.ts_ms)
        n = self._counts.pop(key, 0)
        self._counts[key] = n + 1
        if len(self._counts) > ID_MEMORY:
            self._counts.popitem(last=False)
        return Trade(
            trade.venue, trade.symbol, f"{trade.ts_ms}-{n}", trade.price, trade.qty,
            trade.side, trade.ts_ms, trade.recv_ms,
        )  # fmt: skip
