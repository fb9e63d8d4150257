"""Small pieces every venue parser needs: decoding a raw frame, describing a bad value, splitting
a pair into the venue's BASE-QUOTE spelling. Pure functions, no I/O."""

from __future__ import annotations

from typing import Any

import orjson

from candlewax.errors import ConfigError, ParseError


def type_name(value: Any) -> str:
    """A value's JSON-ish type name for error details (``null``, ``str``, ``dict``, ...)."""
    return "null" if value is None else type(value).__name__


def keys(obj: dict[str, Any]) -> str:
    """The first keys of an object, for error details."""
    return ",".join(str(k) for k in list(obj)[:8])


def load_json(frame: Any) -> Any:
    """A raw frame (text, bytes, or already-decoded JSON) → decoded JSON, or ParseError."""
    if isinstance(frame, dict | list):
        return frame
    if isinstance(frame, bytes | bytearray | memoryview | str):
        try:
            return orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            raise ParseError("json", str(exc)[:200]) from None
    raise ParseError(
        "venue_frame", f"a frame is text, bytes or decoded JSON, got {type_name(frame)}"
    )


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


def may_contain(frame: Any, markers: tuple[bytes, ...]) -> bool:
    """False for raw text/bytes holding none of ``markers``: a cheap scan that spares trade
    frames a second JSON decode in ``control`` (a control message must contain its key).
    Decoded JSON (dict/list) always may."""
    if isinstance(frame, memoryview):
        frame = frame.tobytes()
    if isinstance(frame, str):
        return any(m.decode() in frame for m in markers)
    if isinstance(frame, bytes | bytearray):
        return any(m in frame for m in markers)
    return True


def control_object(frame: Any, markers: tuple[bytes, ...]) -> dict[str, Any] | None:
    """The JSON object of a frame that may be a control message, else None (never raises).

    Frames holding none of ``markers`` are not decoded at all: trade frames, the hot path, are
    decoded once, by the parser.
    """
    if not may_contain(frame, markers):
        return None
    try:
        obj = load_json(frame)
    except ParseError:
        return None
    return obj if isinstance(obj, dict) else None
