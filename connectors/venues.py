"""What the shared connection loop (connectors/live.py) needs to know about each venue.

A :class:`VenueSpec` pairs a venue's :class:`~connectors.venue.Venue` class (its facts and its
pure frame parser) with the I/O the parser must not do: its REST trade backfill, and the
connection limits of its API. Parsers live in one module per venue (``connectors/binance.py``,
...); this registry only wires them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from candlewax.codec import Trade
from candlewax.errors import CandlewaxError, ConfigError, ParseError
from connectors.binance import Binance, BinanceUsdm
from connectors.bybit import Bybit
from connectors.coinbase import Coinbase
from connectors.finnhub import Finnhub
from connectors.okx import Okx
from connectors.venue import Venue

log = logging.getLogger(__name__)

#: ``backfill(client, symbol, from_id, to_id, api_key)`` → trades with from_id <= id (<= to_id).
Backfill = Callable[[httpx.Client, str, int, "int | None", "str | None"], list[Trade]]


class BackfillBanned(CandlewaxError):
    """The venue banned this IP (Binance HTTP 418): stop backfilling until it says otherwise."""


@dataclass(frozen=True)
class VenueSpec:
    """A venue as ``candlewax connect`` runs it."""

    venue: type[Venue]
    backfill: Backfill | None = None
    #: Most connection attempts per 5 minutes (Binance: 300 per IP).
    max_connects_per_5min: int = 300
    #: Most messages the client may send per second (Binance: 5).
    max_sends_per_s: float = 5.0

    @property
    def name(self) -> str:
        return self.venue.name

    def parser(self) -> Venue:
        """A fresh parser: one per connection."""
        return self.venue()


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


def _binance_backfill(venue: type[Binance], path: str, kind: str) -> Backfill:
    """Page ``path`` by ``fromId`` (1000 per page) from ``from_id`` up to ``to_id``. The API key,
    when there is one (``BINANCE_API_KEY``), goes in the ``X-MBX-APIKEY`` header: Binance counts
    keyed requests against the key's limits instead of the IP's."""

    def backfill(
        client: httpx.Client, symbol: str, from_id: int, to_id: int | None, api_key: str | None
    ) -> list[Trade]:
        parser = venue()
        headers = {"X-MBX-APIKEY": api_key} if api_key else None
        out: list[Trade] = []
        next_id = from_id
        while to_id is None or next_id <= to_id:
            rows = _get_with_limits(
                client, path, {"symbol": symbol, "fromId": next_id, "limit": 1000}, headers
            )
            if not isinstance(rows, list) or not rows:
                break
            page_last: int | None = None
            for row in rows:
                if not isinstance(row, dict):
                    raise ValueError(f"backfill row is a {type(row).__name__}, not an object")
                if kind == "trade":
                    event = {"e": "trade", "s": symbol, "t": row.get("id"), "p": row.get("price"),
                             "q": row.get("qty"), "T": row.get("time"), "m": row.get("isBuyerMaker")}  # fmt: skip
                else:
                    event = {"e": "aggTrade", "s": symbol, "a": row.get("a"), "p": row.get("p"),
                             "q": row.get("q"), "T": row.get("T"), "m": row.get("m")}  # fmt: skip
                try:
                    trades = parser.parse_frame(event)
                except ParseError as exc:
                    log.warning("backfilled trade of %s rejected: %s", symbol, exc)
                    continue
                for trade in trades:
                    tid = int(trade.id)
                    if to_id is not None and tid > to_id:
                        return out
                    out.append(trade)
                    page_last = tid if page_last is None else max(page_last, tid)
            # A page whose rows were all rejected gives no safe place to continue from.
            if page_last is None or page_last < next_id or len(rows) < 1000:
                break
            next_id = page_last + 1
        return out

    return backfill


BINANCE = VenueSpec(
    Binance, backfill=_binance_backfill(Binance, "/api/v3/historicalTrades", "trade")
)
BINANCE_USDM = VenueSpec(
    BinanceUsdm, backfill=_binance_backfill(BinanceUsdm, "/fapi/v1/aggTrades", "aggTrade")
)


def _coinbase_backfill(
    client: httpx.Client, symbol: str, first: int, last: int | None, api_key: str | None
) -> list[Trade]:
    """``GET /products/{id}/trades`` pages backwards (newest first): ``after=N`` returns trades
    with ids below N. Walk back from ``last`` (or from now) until ``first`` is reached."""
    parser = Coinbase()
    product = parser.native_symbol(symbol)
    out: list[Trade] = []
    cursor = None if last is None else last + 1
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor is not None:
            params["after"] = cursor
        rows = _get_with_limits(client, f"/products/{product}/trades", params)
        if not isinstance(rows, list) or not rows:
            break
        ids: list[int] = []
        for row in rows:
            if not isinstance(row, dict):
                raise ValueError(f"backfill row is a {type(row).__name__}, not an object")
            frame = {"type": "match", "trade_id": row.get("trade_id"), "product_id": product,
                     "price": row.get("price"), "size": row.get("size"), "side": row.get("side"),
                     "time": row.get("time")}  # fmt: skip
            try:
                got = parser.parse_frame(frame)
            except ParseError as exc:
                log.warning("backfilled trade of %s rejected: %s", symbol, exc)
                continue
            out.extend(got)
            ids.extend(int(t.id) for t in got)
        if not ids:
            break
        oldest = min(ids)
        if oldest <= first or len(rows) < 1000:
            break
        cursor = oldest
    return [t for t in out if int(t.id) >= first and (last is None or int(t.id) <= last)]


OKX = VenueSpec(Okx)
COINBASE = VenueSpec(Coinbase, backfill=_coinbase_backfill)
BYBIT = VenueSpec(Bybit)
FINNHUB = VenueSpec(Finnhub)

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
