"""The OpenAPI 3.1 document of the gateway's REST API (served at ``/openapi.json``; schemathesis
runs against it in the test suite)."""

from __future__ import annotations

from typing import Any

from candlewax.codec.records import ALERT_FIELDS
from candlewax.codec.rules import SYMBOL_PATTERN, VENUE_PATTERN
from candlewax.settings.gateway import GatewaySettings

_DECIMAL = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}
_ERROR = {
    "description": "Invalid request, in Binance's error shape",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["code", "msg"],
                "properties": {"code": {"type": "integer"}, "msg": {"type": "string"}},
                "additionalProperties": False,
            }
        }
    },
}
_MS = {"type": "integer", "minimum": 0, "maximum": 999_999_999_999_999}


def _symbol(required: bool) -> dict[str, Any]:
    symbol = SYMBOL_PATTERN.replace("A-Z", "A-Za-z")
    return {
        "name": "symbol",
        "in": "query",
        "required": required,
        "description": "venue:SYMBOL (binance:BTCUSDT), or SYMBOL of the default venue",
        "schema": {"type": "string", "pattern": f"^(?:{VENUE_PATTERN}:)?{symbol}$"},
    }


def _ok(schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": schema}}}


def document(config: GatewaySettings, intervals: tuple[str, ...]) -> dict[str, Any]:
    kline = {
        "type": "array",
        "description": "[open time, open, high, low, close, volume, close time, quote volume, "
        "trades, taker buy base volume, taker buy quote volume, ignore]",
        # Each member an integer (times, trades) or a decimal string; the order is above.
        # (Not prefixItems: schemathesis reads a tuple schema as the items of OpenAPI 3.0.)
        "items": {"anyOf": [_MS, _DECIMAL]},
        "minItems": 12,
        "maxItems": 12,
    }
    alert = {
        "type": "object",
        "required": list(ALERT_FIELDS),
        "properties": {
            "id": {"type": "string"},
            "rule": {"type": "string"},
            "venue": {"type": "string"},
            "symbol": {"type": "string"},
            "interval": {"type": "string"},
            "window_start_ms": _MS,
            "ts_ms": _MS,
            "value": _DECIMAL,
            "threshold": _DECIMAL,
            "price": _DECIMAL,
            "severity": {"enum": ["warning", "critical"]},
            "text": {"type": "string"},
            "v": {"type": "integer"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "candlewax gateway",
            "version": "1",
            "description": "Binance-format klines from the flow's exact bars, recent alerts, "
            "and health. The WebSocket streams are described in docs/gateway.md.",
        },
        "paths": {
            "/api/v3/klines": {
                "get": {
                    "operationId": "klines",
                    "summary": "Bars of one symbol, oldest first; the last may be forming",
                    "parameters": [
                        _symbol(True),
                        {
                            "name": "interval",
                            "in": "query",
                            "required": True,
                            "schema": {"enum": list(intervals)},
                        },
                        {"name": "startTime", "in": "query", "schema": _MS},
                        {"name": "endTime", "in": "query", "schema": _MS},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": config.klines_limit_max,
                                "default": config.klines_limit_default,
                            },
                        },
                    ],
                    "responses": {
                        "200": _ok({"type": "array", "items": kline}, "Klines"),
                        "400": _ERROR,
                    },
                }
            },
            "/api/v1/alerts": {
                "get": {
                    "operationId": "alerts",
                    "summary": "Recent alerts (those the gateway holds), oldest first",
                    "parameters": [
                        _symbol(False),
                        {"name": "since", "in": "query", "schema": _MS},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": config.alerts_kept,
                            },
                        },
                    ],
                    "responses": {
                        "200": _ok({"type": "array", "items": alert}, "Alerts"),
                        "400": _ERROR,
                    },
                }
            },
            "/api/v1/markets": {
                "get": {
                    "operationId": "markets",
                    "summary": "The symbols seen and the intervals served",
                    "responses": {
                        "200": _ok(
                            {
                                "type": "object",
                                "required": ["default_venue", "intervals", "symbols"],
                                "properties": {
                                    "default_venue": {"type": ["string", "null"]},
                                    "intervals": {"type": "array", "items": {"type": "string"}},
                                    "symbols": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["venue", "symbol"],
                                            "properties": {
                                                "venue": {"type": "string"},
                                                "symbol": {"type": "string"},
                                            },
                                        },
                                    },
                                },
                            },
                            "Markets",
                        )
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "200 while the Kafka feed is reading, 503 otherwise",
                    "responses": {
                        "200": _ok({"type": "object", "required": ["status"]}, "Reading"),
                        "503": _ok({"type": "object", "required": ["status"]}, "Not reading"),
                    },
                }
            },
        },
    }
