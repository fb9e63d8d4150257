"""Requests a client sends over the socket, parsed as Binance's stream servers parse them, and
the replies in Binance's shapes. Pure: text in, :class:`Request` or :class:`ProtocolError` out.

    {"method": "SUBSCRIBE", "params": ["binance:btcusdt@kline_1m"], "id": 1}
    → {"result": null, "id": 1}
    {"method": "LIST_SUBSCRIPTIONS", "id": 3}
    → {"result": ["binance:btcusdt@kline_1m"], "id": 3}
    {"method": "SET_PROPERTY", "params": ["combined", true], "id": 5}
    → {"result": null, "id": 5}
    {"method": "LOGIN", "params": {"apiKey": "...", "timestamp": 1723075200000,
                                   "signature": "<hex HMAC-SHA256>"}, "id": 7}
    → {"result": {"user": "..."}, "id": 7}

An error is ``{"error": {"code": N, "msg": "..."}, "id": <the request's id or null>}`` with
Binance's codes: 0 unknown property, 1 invalid value type, 2 invalid request, 3 invalid JSON.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

METHODS: Final = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY", "LOGIN")  # fmt: skip
_ID_TEXT = re.compile(r"[A-Za-z0-9]{1,36}")
_MEMBERS: Final = frozenset({"method", "params", "id"})
RequestId = int | str | None


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    params: Any
    id: RequestId


class ProtocolError(Exception):
    def __init__(self, code: int, msg: str, id: RequestId = None) -> None:
        super().__init__(msg)
        self.code, self.msg, self.id = code, msg, id

    def reply(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "msg": self.msg}, "id": self.id}


def _id(value: Any) -> RequestId:
    if value is None or (type(value) is int and -(2**63) <= value < 2**63):
        return value
    if isinstance(value, str) and _ID_TEXT.fullmatch(value):
        return value
    raise ProtocolError(
        2, "Invalid request: id must be a 64-bit integer, up to 36 letters and digits, or null"
    )


def parse_request(text: str | bytes) -> Request:
    """One client message → Request (ProtocolError: the reply to send instead)."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(3, f"Invalid JSON: {str(exc)[:120]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(2, "Invalid request: expected a JSON object")
    rid = _id(obj.get("id"))
    extra = sorted(str(k)[:40] for k in obj if k not in _MEMBERS)
    if extra:
        raise ProtocolError(2, f"Invalid request: unknown field `{extra[0]}`", rid)
    method = obj.get("method")
    if method is None:
        raise ProtocolError(2, "Invalid request: missing field `method`", rid)
    if not isinstance(method, str) or method not in METHODS:
        shown = str(method)[:40] if isinstance(method, str) else type(method).__name__
        expected = ", ".join(f"`{m}`" for m in METHODS)
        raise ProtocolError(2, f"Invalid request: unknown variant `{shown}`, expected one of {expected}", rid)  # fmt: skip
    params = obj.get("params")
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if not isinstance(params, list) or not params:
            raise ProtocolError(2, "Invalid request: params must be a non-empty array of stream names", rid)  # fmt: skip
    elif method == "SET_PROPERTY":
        if not (isinstance(params, list) and len(params) == 2):
            raise ProtocolError(2, "Invalid request: params must be [name, value]", rid)
        if params[0] != "combined":
            raise ProtocolError(0, "Unknown property", rid)
        if not isinstance(params[1], bool):
            raise ProtocolError(1, "Invalid value type: expected Boolean", rid)
    elif method == "GET_PROPERTY":
        if params != ["combined"]:
            raise ProtocolError(0, "Unknown property", rid)
    elif method == "LOGIN":
        if not isinstance(params, dict):
            raise ProtocolError(2, "Invalid request: params must be {apiKey, timestamp, signature}", rid)  # fmt: skip
    elif params not in (None, []):
        raise ProtocolError(2, "Invalid request: too many parameters", rid)
    return Request(method, params, rid)


def result(value: Any, rid: RequestId) -> dict[str, Any]:
    return {"result": value, "id": rid}
