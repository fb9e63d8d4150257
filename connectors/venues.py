"""What the shared connection loop (connectors/live.py) needs to know about each venue.

A :class:`VenueSpec` bundles a venue's endpoints, limits and keep-alive rules with its pure frame
parser and, where the venue has one, its REST trade backfill. Parsers live in one module per venue
(``connectors/binance.py``, ...); this registry only wires them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from candlewax.errors import CandlewaxError, ConfigError, ParseError
from candlewax.records import Trade
from connectors import binance, bybit, coinbase, finnhub, okx
from connectors.frames import control_object

log = logging.getLogger(__name__)


class BackfillBanned(CandlewaxError):
    """The venue banned this IP (Binance HTTP 418): stop backfilling until it says otherwise."""


@dataclass(frozen=True)
class VenueSpec:
    name: str
    ws_url: str
    rest_url: str | None
    #: Trade ids are consecutive integers per symbol: gaps and duplicates can be detected.
    sequential_ids: bool
    max_symbols_per_connection: int
    #: Proactive reconnect before the venue drops the connection (Binance: 24 h).
    max_lifetime_s: float | None
    #: Application-level keep-alive: (interval seconds, text frame), if the venue wants one.
    ping: tuple[float, str] | None
    #: The websocket URL for these symbols (Binance puts streams in the URL).
    url_for: Callable[[str, list[str]], str]
    subscribe: Callable[[list[str]], list[str]]
    parse: Callable[[str | bytes, int], list[Trade]]
    control: Callable[[str | bytes], str | None]
    #: ``backfill(client, symbol, from_id, to_id)`` → trades with from_id <= id (<= to_id).
    backfill: Callable[[httpx.Client, str, int, int | None], list[Trade]] | None = None
    #: Most connection attempts per 5 minutes (Binance: 300 per IP).
    max_connects_per_5min: int = 300
    #: Most messages the client may send per second (Binance: 5).
    max_sends_per_s: float = 5.0


# --------------------------------------------------------------------------- Binance


def _binance_control(frame: str | bytes) -> str | None:
    """``{"result": null, "id": 1}`` → subscribed; ``{"error": ...}`` → error;
    ``serverShutdown`` events (enveloped or bare) → reconnect."""
    # Trade frames hold none of these keys: they are decoded once, by the parser, not here too.
    obj = control_object(frame, (b'"result"', b'"error"', b'"code"', b"serverShutdown"))
    if obj is None:
        return None
    data = obj.get("data", obj)
    if isinstance(data, dict) and data.get("e") == "serverShutdown":
        return "reconnect"
    if "result" in obj and "id" in obj:
        return "subscribed"
    if "error" in obj or ("code" in obj and "msg" in obj):
        return "error"
    return None


def _binance_url(stream: str) -> Callable[[str, list[str]], str]:
    def url_for(base: str, symbols: list[str]) -> str:
        streams = "/".join(f"{s.lower()}@{stream}" for s in symbols)
        return f"{base.rstrip('/')}/stream?streams={streams}"

    return url_for


def _binance_headers() -> dict[str, str]:
    key = os.environ.get("BINANCE_API_KEY")
    return {"X-MBX-APIKEY": key} if key else {}


def _get_with_limits(
    client: httpx.Client, path: str, params: dict[str, Any], headers: dict[str, str] | None = None
) -> Any:
    """GET honouring rate-limit answers: 429 → wait Retry-After and retry (bounded), 418 (Binance
    IP ban) → BackfillBanned, 5xx/timeouts → capped backoff, 3 tries."""
    headers = headers or {}
    delay = 0.5
    for attempt in range(6):
        try:
            resp = client.get(path, params=params, headers=headers)
        except httpx.TransportError as exc:
            if attempt >= 2:
                raise
            log.warning(
                "backfill request failed (%s); retrying in %.1f s", type(exc).__name__, delay
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        if resp.status_code == 418:
            raise BackfillBanned(
                f"the venue banned this IP (HTTP 418, Retry-After {resp.headers.get('Retry-After')})"
            )
        if resp.status_code == 429:
            wait = min(float(resp.headers.get("Retry-After", "1") or 1), 60.0)
            log.warning("backfill rate-limited (HTTP 429): waiting %.0f s as asked", wait)
            time.sleep(wait)
            continue
        if resp.status_code >= 500 and attempt < 2:
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        resp.raise_for_status()
        return resp.json()
    raise CandlewaxError(f"backfill {path} still rate-limited after retries")


def _binance_backfill(venue: str, path: str, kind: str) -> Callable[..., list[Trade]]:
    """Page ``path`` by ``fromId`` (1000 per page) from ``from_id`` up to ``to_id``."""

    def backfill(client: httpx.Client, symbol: str, from_id: int, to_id: int | None) -> list[Trade]:
        out: list[Trade] = []
        next_id = from_id
        while to_id is None or next_id <= to_id:
            rows = _get_with_limits(
                client, path, {"symbol": symbol, "fromId": next_id, "limit": 1000}
            )
            if not isinstance(rows, list) or not rows:
                break
            for row in rows:
                if kind == "trade":
                    event = {"e": "trade", "s": symbol, "t": row["id"], "p": row["price"],
                             "q": row["qty"], "T": row["time"], "m": row["isBuyerMaker"]}  # fmt: skip
                else:
                    event = {"e": "aggTrade", "s": symbol, "a": row["a"], "p": row["p"],
                             "q": row["q"], "T": row["T"], "m": row["m"]}  # fmt: skip
                try:
                    trades = binance.parse_frame(event, venue=venue)
                except ParseError as exc:
                    log.warning("backfilled trade of %s rejected: %s", symbol, exc)
                    continue
                for trade in trades:
                    if to_id is not None and int(trade.id) > to_id:
                        return out
                    out.append(trade)
            last = int(rows[-1]["id"] if kind == "trade" else rows[-1]["a"])
            next_id = last + 1
            if len(rows) < 1000:
                break
        return out

    return backfill


def _binance_parse(venue: str) -> Callable[[str | bytes, int], list[Trade]]:
    def parse(frame: str | bytes, recv_ms: int) -> list[Trade]:
        return binance.parse_frame(frame, venue=venue, recv_ms=recv_ms)

    return parse


BINANCE = VenueSpec(
    name="binance",
    ws_url="wss://stream.binance.com:9443",
    rest_url="https://api.binance.com",
    sequential_ids=True,
    # ≤ 1024 streams per connection; the URL form stays well below URL length limits at 200.
    max_symbols_per_connection=200,
    max_lifetime_s=24 * 3600,
    ping=None,  # the server pings every 20 s; websocket-client answers with pongs
    url_for=_binance_url("trade"),
    subscribe=lambda symbols: [],
    parse=_binance_parse("binance"),
    control=_binance_control,
    backfill=_binance_backfill("binance", "/api/v3/historicalTrades", "trade"),
)

BINANCE_USDM = VenueSpec(
    name="binance-usdm",
    ws_url="wss://fstream.binance.com",
    rest_url="https://fapi.binance.com",
    sequential_ids=True,
    max_symbols_per_connection=200,
    max_lifetime_s=24 * 3600,
    ping=None,
    # aggTrade: its REST backfill (/fapi/v1/aggTrades) needs no API key.
    url_for=_binance_url("aggTrade"),
    subscribe=lambda symbols: [],
    parse=_binance_parse("binance-usdm"),
    control=_binance_control,
    backfill=_binance_backfill("binance-usdm", "/fapi/v1/aggTrades", "aggTrade"),
)

# --------------------------------------------------------------------------- other venues


def _module_spec(
    mod: Any,
    backfill: Callable[[httpx.Client, str, int, int | None], list[Trade]] | None = None,
    url_for: Callable[[str, list[str]], str] | None = None,
) -> VenueSpec:
    """A VenueSpec from a venue module's interface (VENUE, WS_URL, parse_frame, ...)."""
    return VenueSpec(
        name=mod.VENUE,
        ws_url=mod.WS_URL,
        rest_url=mod.REST_URL if backfill is not None else None,
        sequential_ids=mod.SEQUENTIAL_IDS,
        max_symbols_per_connection=mod.MAX_SYMBOLS_PER_CONNECTION,
        max_lifetime_s=None,
        ping=mod.PING,
        url_for=url_for or (lambda base, symbols: base),
        subscribe=mod.subscribe_messages,
        parse=lambda frame, recv_ms: mod.parse_frame(frame, recv_ms),
        control=mod.control,
        backfill=backfill,
    )


def _coinbase_backfill(
    client: httpx.Client, symbol: str, first: int, last: int | None
) -> list[Trade]:
    """``GET /products/{id}/trades`` pages backwards (newest first): ``after=N`` returns trades
    with ids below N. Walk back from ``last`` (or from now) until ``first`` is reached."""
    product = coinbase.native_symbol(symbol)
    out: list[Trade] = []
    cursor = None if last is None else last + 1
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor is not None:
            params["after"] = cursor
        rows = _get_with_limits(client, f"/products/{product}/trades", params)
        if not isinstance(rows, list) or not rows:
            break
        for row in rows:
            frame = {"type": "match", "trade_id": row["trade_id"], "product_id": product,
                     "price": row["price"], "size": row["size"], "side": row["side"],
                     "time": row["time"]}  # fmt: skip
            try:
                out.extend(coinbase.parse_frame(frame))
            except ParseError as exc:
                log.warning("backfilled trade of %s rejected: %s", symbol, exc)
        oldest = min(int(row["trade_id"]) for row in rows)
        if oldest <= first or len(rows) < 1000:
            break
        cursor = oldest
    return [t for t in out if int(t.id) >= first and (last is None or int(t.id) <= last)]


def _finnhub_url(base: str, symbols: list[str]) -> str:
    token = os.environ.get("FINNHUB_TOKEN")
    if not token:
        raise ConfigError(
            "FINNHUB_TOKEN is not set: Finnhub needs an API token (https://finnhub.io/dashboard); "
            "export it in the environment (never on the command line)"
        )
    return f"{base}?token={token}"


OKX = _module_spec(okx)
COINBASE = _module_spec(coinbase, backfill=_coinbase_backfill)
BYBIT = _module_spec(bybit)
FINNHUB = _module_spec(finnhub, url_for=_finnhub_url)

VENUES: dict[str, VenueSpec] = {
    spec.name: spec for spec in (BINANCE, BINANCE_USDM, OKX, COINBASE, BYBIT, FINNHUB)
}


def venue_spec(name: str) -> VenueSpec:
    try:
        return VENUES[name]
    except KeyError:
        raise ConfigError(
            f"unknown venue {name!r}: choose one of {', '.join(sorted(VENUES))}"
        ) from None
