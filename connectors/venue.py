"""The venue contract: one small base class, the venue-specific mapping in each subclass.

A venue is its facts, as class attributes (after cryptofeed's ``exchanges/*.py``: id, URLs,
limits), plus a pure frame parser: raw frame in, normalized :class:`~candlewax.codec.Trade` list
(or a :class:`~candlewax.errors.ParseError`) out, no I/O. What every venue shares lives here:

- the frame is read under the codec's JSON rules (:func:`candlewax.codec.strictjson.loads`:
  UTF-8, no repeated member, bounded size), or taken as already decoded JSON;
- every trade goes through :meth:`Venue.trade`, the one decode tail: the symbol is normalized,
  every field validated by :meth:`Trade.build <candlewax.codec.Trade.build>`, and on venues
  whose ids are consecutive integers the id must be one;
- control messages (acks, errors, reconnect notices, pongs) are labelled by :meth:`control`
  without decoding trade frames twice.

A subclass supplies :meth:`trades` (decoded frame → trades) and its control labels (a member
and its values: :attr:`~Venue.control_field`, :attr:`~Venue.control_labels`; or :meth:`control_label`), and
where it has them, :meth:`native_symbol`, :meth:`subscribe_messages`, :meth:`stream_url`.
Variants subclass their venue (``BinanceUsdm(Binance)``). One instance serves one connection,
so a parser may keep per-stream state (Finnhub numbers its trades).
"""

from __future__ import annotations

from typing import Any, ClassVar

from candlewax.codec import Trade, normalize_symbol
from candlewax.codec import rules as codec_rules
from candlewax.codec.rules import type_name
from candlewax.codec.strictjson import loads
from candlewax.errors import ConfigError, ParseError

Frame = bytes | bytearray | memoryview | str | dict[str, Any] | list[Any]

__all__ = [
    "Frame",
    "Venue",
    "chunks",
    "json_object",
    "keys",
    "load_json",
    "split_pair",
    "string_field",
    "type_name",
]


def load_json(frame: Any) -> Any:
    """A raw frame (text, bytes, or already-decoded JSON) → decoded JSON, or ParseError."""
    if isinstance(frame, dict | list):
        return frame
    if isinstance(frame, bytes | bytearray | memoryview | str):
        return loads(frame)
    raise ParseError(
        "venue_frame", f"a frame is text, bytes or decoded JSON, got {type_name(frame)}"
    )


def json_object(value: Any, what: str) -> dict[str, Any]:
    """``value`` when it is a JSON object, else the ``venue_frame`` error naming ``what``."""
    if not isinstance(value, dict):
        raise ParseError("venue_frame", f"{what} is a JSON object, got {type_name(value)}")
    return value


def string_field(obj: dict[str, Any], name: str) -> str:
    """``obj[name]`` when it is a string, else the ``venue_frame`` error naming the field."""
    value = obj.get(name)
    if not isinstance(value, str):
        raise ParseError("venue_frame", f"'{name}' is a {type_name(value)}, expected a string")
    return value


def keys(obj: dict[str, Any]) -> str:
    """The first keys of an object, for error details."""
    return ",".join(str(k)[:20] for k in list(obj)[:8])


def chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def split_pair(symbol: str, quotes: tuple[str, ...], venue: str, example: str) -> str:
    """``BTCUSDT`` → ``BTC-USDT`` by known quote currencies (longest first); a symbol already
    spelled with a separator (``-``, ``/``, ``_``) is the venue's own and is kept. ConfigError
    names the venue and an ``example`` of the expected spelling when nothing fits."""
    if not isinstance(symbol, str) or not symbol.strip():
        raise ConfigError(f"{venue} symbol {symbol!r} is empty; pass e.g. {example}")
    text = symbol.strip().upper().replace("/", "-").replace("_", "-")
    if "-" in text:
        if any(not part for part in text.split("-")):
            raise ConfigError(f"{venue} symbol {symbol!r} has an empty part; pass e.g. {example}")
        return text
    for quote in sorted(quotes, key=len, reverse=True):
        if text.endswith(quote) and len(text) > len(quote):
            return f"{text[: -len(quote)]}-{quote}"
    raise ConfigError(
        f"cannot tell the quote currency of {venue} symbol {symbol!r} (known quotes: "
        f"{', '.join(quotes)}); pass the venue spelling BASE-QUOTE, e.g. {example}"
    )


def _may_contain(frame: Any, markers: tuple[bytes, ...]) -> bool:
    """False for raw text/bytes holding none of ``markers``: a cheap scan that spares trade
    frames a second JSON decode in :meth:`Venue.control`. Decoded JSON always may."""
    if isinstance(frame, memoryview):
        frame = frame.tobytes()
    if isinstance(frame, str):
        return any(m.decode() in frame for m in markers)
    if isinstance(frame, bytes | bytearray):
        return any(m in frame for m in markers)
    return True


class Venue:
    """One venue's facts and frame parser. See the module docstring."""

    #: Venue name on every record (``binance``, ``okx``, ...): lower case, the codec's charset.
    name: ClassVar[str]
    ws_url: ClassVar[str]
    #: REST base URL of the trade backfill (None: the venue has none we can use).
    rest_url: ClassVar[str | None] = None
    #: Trade ids are consecutive integers per symbol: gaps and duplicates can be detected.
    sequential_ids: ClassVar[bool] = False
    max_symbols_per_connection: ClassVar[int] = 200
    #: Proactive reconnect before the venue drops the connection (Binance: 24 h).
    max_lifetime_s: ClassVar[float | None] = None
    #: Application-level keep-alive: (interval seconds, text frame), if the venue wants one.
    ping: ClassVar[tuple[float, str] | None] = None
    #: Environment variable holding the token this venue needs in its URL (Finnhub), if any.
    token_env: ClassVar[str | None] = None
    #: Bytes every control message contains (trade frames hold none of them).
    control_markers: ClassVar[tuple[bytes, ...]] = ()
    #: For venues that label control messages by one member: its name, and label by value.
    control_field: ClassVar[str] = ""
    control_labels: ClassVar[dict[str, str]] = {}

    # ------------------------------------------------------------------ connection facts

    def native_symbol(self, symbol: str) -> str:
        """Our symbol → the venue's spelling; ConfigError when it cannot be spelled."""
        text = normalize_symbol(symbol) if isinstance(symbol, str) else ""
        if not text:
            raise ConfigError(f"{self.name} symbol {symbol!r} is empty; pass e.g. BTCUSDT")
        return text

    def subscribe_messages(self, symbols: list[str]) -> list[str]:
        """Text frames to send after connecting (none where the URL names the streams)."""
        return []

    def stream_url(self, base: str, symbols: list[str], token: str | None = None) -> str:
        """The websocket URL for these symbols (Binance puts its streams in the URL)."""
        return base

    # ------------------------------------------------------------------ frames

    def parse_frame(self, frame: Frame, recv_ms: int | None = None) -> list[Trade]:
        """The trades of one frame (``[]`` for frames that carry none); ``recv_ms`` is the
        local receive time written into every trade. ParseError and nothing else on bad input."""
        return self.trades(load_json(frame), recv_ms)

    def trades(self, obj: Any, recv_ms: int | None) -> list[Trade]:
        """The venue-specific mapping: a decoded frame → its trades."""
        raise NotImplementedError

    def control(self, frame: Any) -> str | None:
        """What the connection loop must react to, or ``None`` (never raises): ``subscribed``,
        ``error``, ``reconnect``, ``pong``, ``heartbeat``."""
        if not _may_contain(frame, self.control_markers):
            return None
        try:
            obj = load_json(frame)
        except ParseError:
            return None
        return self.control_label(obj) if isinstance(obj, dict) else None

    def control_label(self, obj: dict[str, Any]) -> str | None:
        """The label of a decoded control message: by default the value of
        :attr:`control_field` looked up in :attr:`control_labels`."""
        value = obj.get(self.control_field) if self.control_field else None
        return self.control_labels.get(value) if isinstance(value, str) else None

    # ------------------------------------------------------------------ the shared decode tail

    def trade(
        self,
        *,
        symbol: Any,
        id: Any,
        price: Any,
        qty: Any,
        side: Any,
        ts_ms: Any,
        recv_ms: int | None,
        symbol_field: str = "symbol",
        id_field: str = "id",
    ) -> Trade:
        """One validated trade of this venue. ``*_field`` name the frame's own fields in
        error details."""
        if symbol is None or symbol == "":
            raise ParseError("missing_field", symbol_field)
        if not isinstance(symbol, str):
            raise ParseError("bad_type", f"{symbol_field} is a {type_name(symbol)}")
        if id is None or id == "":
            raise ParseError("missing_field", id_field)
        if self.sequential_ids:
            id = codec_rules.sequential_id(id, id_field)
        return Trade.build(
            venue=self.name,
            symbol=normalize_symbol(symbol),
            id=id,
            price=price,
            qty=qty,
            side=side,
            ts_ms=ts_ms,
            recv_ms=recv_ms,
        )
