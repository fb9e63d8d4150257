"""Reading JSON from untrusted sources: one function, :func:`loads`, total over any input.

The rule is I-JSON (RFC 7493) for the parts that make two readers disagree, plus a size limit:

- UTF-8 only, and no lone surrogate, not even as a ``\\ud800`` escape (orjson refuses both);
- **no object names a member twice**: parsers disagree on which value wins (orjson keeps the
  last, Polars the first), so a message that repeats a key is rejected (``duplicate_key``);
- no ``NaN``/``Infinity``, nesting at most 1,024 deep (orjson's limit), and at most
  :data:`~candlewax.codec.rules.MAX_MESSAGE_BYTES` bytes (``too_large``).

Integers above 2**64 come back as floats (orjson): the record decoders refuse floats where an
integer belongs, so such a number is rejected rather than rounded.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from candlewax.codec.rules import MAX_MESSAGE_BYTES
from candlewax.errors import ParseError

Frame = bytes | bytearray | memoryview | str


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ParseError("duplicate_key", f"member {key[:40]!r} appears more than once")
            seen.add(key)
    return obj


def check_unique_keys(raw: bytes | str, obj: Any) -> None:
    """Raise ``duplicate_key`` if some object of ``raw`` (already parsed as ``obj``) names a
    member twice.

    Compact JSON as orjson writes it — every message candlewax writes, and most venues' frames
    — is recognized by re-encoding ``obj``: if that gives ``raw`` back byte for byte, each key
    of ``raw`` appears once. Anything else is read a second time by the standard library, which
    hands every object's members over as a list.
    """
    if not isinstance(obj, dict | list):
        return
    data = raw.encode() if isinstance(raw, str) else raw
    try:
        if orjson.dumps(obj) == data:
            return
    except TypeError:  # deeper than orjson writes (254): read it the slow way
        pass
    try:
        json.loads(data, object_pairs_hook=_unique)
    except ParseError:
        raise
    except RecursionError:
        raise ParseError("too_large", "nested too deeply") from None
    except ValueError as exc:  # orjson accepted what the standard library does not
        raise ParseError("json", str(exc)[:200]) from None


def loads(frame: Frame) -> Any:
    """Parse one JSON text under the rules above; ``ParseError`` (``json``, ``too_large``,
    ``duplicate_key``) and nothing else for any other input."""
    if isinstance(frame, memoryview | bytearray):
        frame = bytes(frame)
    if not isinstance(frame, bytes | str):
        raise ParseError("json", f"a message is text or bytes, got {type(frame).__name__}")
    if len(frame) > MAX_MESSAGE_BYTES:
        raise ParseError("too_large", f"{len(frame)} bytes, at most {MAX_MESSAGE_BYTES}")
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ParseError("json", str(exc)[:200]) from None
    except RecursionError:  # pragma: no cover - orjson stops at depth 1024 by itself
        raise ParseError("too_large", "nested too deeply") from None
    check_unique_keys(frame, obj)
    return obj
