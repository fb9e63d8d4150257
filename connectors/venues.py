"""What the shared connection loop (connectors/live.py) needs to know about each venue.

A :class:`VenueSpec` pairs a venue's :class:`~connectors.venue.Venue` class (its facts and its
pure frame parser) with the I/O the parser must not do: its public trade history over REST
(a :class:`History`, read by the gap backfill and by the start-up fill), and the connection
limits of its API. Parsers live in one module per venue (``connectors/binance.py``, ...); this
registry only wires them.

Trade history, by venue (docs/connectors.md, "Start-up fill"):

==================  ===========================================================================
``binance``         trades by id: ``GET /api/v3/historicalTrades?fromId=`` (weight 25); by
                    time: ``GET /api/v3/aggTrades?startTime=`` (weight 4), whose ``f`` is the
                    first trade id of the first aggregate at or after the time
``binance-usdm``    ``GET /fapi/v1/aggTrades`` (weight 20) by id (``fromId``) and by time
                    (``startTime``): the connector's ids are the aggregates' own ``a``
``coinbase``        ``GET /products/{id}/trades``, newest first, paged back by the ``after``
                    trade-id cursor; nothing finds a trade by time
``okx``, ``bybit``,  none (see the docs for why)
``finnhub``
==================  ===========================================================================

REST answers are untrusted input like frames: bodies are read under the codec's JSON rules,
every row goes through the venue's parser, rows it refuses are handed to ``reject`` (the
connector dead-letters them), and rows outside the asked range are refused too
(``out_of_range``). Nothing a server answers makes these functions raise anything but
:class:`BadAnswer`, :class:`FillIncomplete`, :class:`FillStopped`, :class:`BackfillBanned` and
httpx's errors.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import httpx
import orjson

from candlewax.calendar import Calendar
from candlewax.codec import Trade
from candlewax.codec import rules as codec_rules
from candlewax.codec.strictjson import loads
from candlewax.errors import CandlewaxError, ConfigError, ParseError
from connectors.binance import Binance, BinanceUsdm
from connectors.bybit import Bybit
from connectors.coinbase import Coinbase
from connectors.finnhub import Finnhub
from connectors.okx import Okx
from connectors.venue import Venue, json_object, type_name

log = logging.getLogger(__name__)


class BackfillBanned(CandlewaxError):
    """The venue banned this IP (Binance HTTP 418): stop backfilling until it says otherwise."""


class BadAnswer(CandlewaxError):
    """A REST answer that cannot be used as a whole: not JSON, not the expected shape, or
    contradicting what was asked. ``reason`` is one of the codec's rejection reasons; ``raw``
    the body, for the dead letter."""

    def __init__(self, path: str, reason: str, detail: str, raw: bytes = b"") -> None:
        super().__init__(f"{path}: {reason}: {detail}")
        self.path = path
        self.reason = reason
        self.detail = detail
        self.raw = raw


class FillIncomplete(CandlewaxError):
    """The venue did not give the trades asked for (an empty page before the newest id, the
    request budget spent): nothing is wrong with a single answer."""


class FillStopped(CandlewaxError):
    """The connector is stopping: the start-up fill sends no further request."""


class Point(NamedTuple):
    """A trade's place in a venue's history."""

    id: int
    ts_ms: int


class RestRejection(NamedTuple):
    """One REST row the venue's parser refused, or one outside the asked range."""

    reason: str
    detail: str
    raw: bytes
    #: The endpoint that answered it.
    path: str = ""


class Page(NamedTuple):
    """One answer of a trade-list endpoint: its usable trades (id order, no duplicates, in the
    asked range) and how many rows it had (0: the venue has nothing there)."""

    trades: list[Trade]
    rows: int


Reject = Callable[[RestRejection], None]


def _log_rejection(rejection: RestRejection) -> None:
    log.warning("REST trade row rejected: %s: %s", rejection.reason, rejection.detail)


def _raw(row: Any) -> bytes:
    try:
        return orjson.dumps(row)
    except (TypeError, orjson.JSONEncodeError):
        return repr(row)[:2000].encode("utf-8", "replace")


def _get_with_limits(
    client: httpx.Client, path: str, params: dict[str, Any], headers: dict[str, str] | None = None
) -> bytes:
    """GET honouring rate-limit answers: 429 → wait Retry-After and retry (bounded), 418 (Binance
    IP ban) → BackfillBanned, 5xx/timeouts → capped backoff, 3 tries. Returns the body."""
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
            try:
                wait = min(max(float(resp.headers.get("Retry-After", "1") or 1), 0.0), 60.0)
            except ValueError:
                wait = 1.0
            log.warning("backfill rate-limited (HTTP 429): waiting %.0f s as asked", wait)
            time.sleep(wait)
            continue
        if resp.status_code >= 500 and attempt < 2:
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        resp.raise_for_status()
        return resp.content
    raise CandlewaxError(f"backfill {path} still rate-limited after retries")


class Pacer:
    """Requests at least ``interval_s`` apart, across every :class:`History` sharing it (the
    start-up fill's share of the venue's request budget); none once ``stop`` is set."""

    def __init__(self, interval_s: float, stop: threading.Event | None = None) -> None:
        self.interval_s = interval_s
        self.stop = stop
        self._sent_at: float | None = None

    def wait(self) -> None:
        """Return when the next request may go; FillStopped once the connector stops."""
        wait = 0.0
        if self._sent_at is not None:
            wait = self._sent_at + self.interval_s - time.monotonic()
        if self.stop is not None and (self.stop.is_set() or (wait > 0 and self.stop.wait(wait))):
            raise FillStopped("the connector is stopping")
        if wait > 0 and self.stop is None:
            time.sleep(wait)
        self._sent_at = time.monotonic()


class History:
    """One symbol's public trade history on one venue, over REST.

    ``symbol`` is the configured spelling (the venue's own is derived from it). Every request
    goes through :meth:`rows`: paced by ``pacer`` (if any), counted in :attr:`requests`, its
    body read as untrusted JSON. Subclasses say how rows become trades and which queries exist.
    """

    venue: ClassVar[type[Venue]]
    #: Most trades one request returns (the venue's largest ``limit``).
    page_size: ClassVar[int] = 1000
    #: Seconds between two requests of a start-up fill: half of the venue's public request
    #: budget, so that gap backfills and other clients on the IP keep the other half.
    fill_pace_s: ClassVar[float] = 0.0
    #: True: :meth:`first_at` finds a trade by time, and a fill pages forward from it.
    #: False: only an id cursor from the newest trade backwards (:meth:`page_before`).
    by_time: ClassVar[bool] = False

    def __init__(
        self,
        client: httpx.Client,
        symbol: str,
        api_key: str | None = None,
        reject: Reject | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self.client = client
        self.parser = self.venue()
        self.native = self.parser.native_symbol(symbol)
        self.headers: dict[str, str] = {}
        self.reject = reject or _log_rejection
        self.pacer = pacer
        self.requests = 0

    # ------------------------------------------------------------------ requests

    def rows(self, path: str, params: dict[str, Any]) -> tuple[list[Any], bytes]:
        """One request: its rows and its body. BadAnswer for a body that is not a JSON array
        under the codec's rules."""
        if self.pacer is not None:
            self.pacer.wait()
        self.requests += 1
        body = _get_with_limits(self.client, path, params, self.headers)
        try:
            return self.read_rows(body), body
        except ParseError as exc:
            raise BadAnswer(path, exc.reason, exc.detail, body) from None

    # ------------------------------------------------------------------ rows → trades

    @staticmethod
    def read_rows(body: bytes) -> list[Any]:
        """A trade-list body → its rows (pure): a JSON array under the codec's rules, or
        ParseError."""
        obj = loads(body)
        if not isinstance(obj, list):
            raise ParseError(
                "venue_frame", f"expected a JSON array of trades, got {type_name(obj)}"
            )
        return obj

    def event(self, row: dict[str, Any]) -> dict[str, Any]:
        """A REST row → the venue's websocket event for the same trade (so the one parser reads
        both)."""
        raise NotImplementedError

    def trades_of(self, rows: list[Any]) -> tuple[list[Trade], list[RestRejection]]:
        """Rows → their trades and the rows the parser refused (pure, no I/O)."""
        trades: list[Trade] = []
        rejected: list[RestRejection] = []
        for row in rows:
            try:
                trades.extend(self.parser.parse_frame(self.event(json_object(row, "a trade row"))))
            except ParseError as exc:
                rejected.append(RestRejection(exc.reason, exc.detail, _raw(row)))
        return trades, rejected

    def page(self, path: str, rows: list[Any], lo: int, hi: int | None) -> Page:
        """The usable trades of ``rows``: parsed, those with ids outside lo..hi refused
        (``out_of_range``), duplicates dropped, in id order. Refusals go to ``reject``."""
        trades, rejected = self.trades_of(rows)
        by_id: dict[int, Trade] = {}
        for trade in trades:
            tid = int(trade.id)
            if tid < lo or (hi is not None and tid > hi):
                asked = f"{lo}..{'' if hi is None else hi}"
                detail = f"{trade.symbol} id {tid} is outside the asked ids {asked}"
                rejected.append(RestRejection("out_of_range", detail, trade.encode()))
                continue
            by_id.setdefault(tid, trade)
        for rejection in rejected:
            self.reject(rejection._replace(path=path))
        return Page([by_id[i] for i in sorted(by_id)], len(rows))

    # ------------------------------------------------------------------ queries

    def latest(self) -> Point | None:
        """The newest trade (None: the symbol has none)."""
        raise NotImplementedError

    def first_at(self, ts_ms: int) -> Point | None:
        """The first trade at or after ``ts_ms`` (None: none yet); ``by_time`` venues only."""
        raise NotImplementedError

    def page_from(self, from_id: int) -> Page:
        """Trades from ``from_id`` on, oldest first (``by_time`` venues)."""
        raise NotImplementedError

    def page_before(self, below: int | None) -> Page:
        """Trades below id ``below`` (None: the newest), newest first (cursor venues)."""
        raise NotImplementedError

    def forward(self, first: int, last: int, budget: int | None = None) -> Iterator[list[Trade]]:
        """Pages of the trades ``first..last``, in id order (``by_time`` venues). Raises
        FillIncomplete when an answer has none of them, or ``budget`` requests are spent."""
        next_id = first
        while next_id <= last:
            if budget is not None and self.requests >= budget:
                raise FillIncomplete(
                    f"the request budget of {budget} was spent at id {next_id} of {first}..{last}"
                )
            page = self.page_from(next_id)
            trades = [t for t in page.trades if int(t.id) <= last]
            if not trades:
                raise FillIncomplete(
                    f"no usable trade from id {next_id} ({page.rows} rows) although the newest "
                    f"is {last}"
                )
            yield trades
            next_id = int(trades[-1].id) + 1

    def range(self, first: int, last: int | None) -> list[Trade]:
        """The gap backfill: trades ``first..last`` (last None: up to now), in id order."""
        out: list[Trade] = []
        if self.by_time:
            next_id = first
            while last is None or next_id <= last:
                page = self.page_from(next_id)
                got = [t for t in page.trades if last is None or int(t.id) <= last]
                out.extend(got)
                # A page whose rows were all refused gives no safe place to continue from; a
                # short page is "now" when no end was asked.
                if not got or (last is None and page.rows < self.page_size):
                    break
                next_id = int(got[-1].id) + 1
            return out
        below = None if last is None else last + 1
        while True:
            page = self.page_before(below)
            if not page.trades:
                break
            out.extend(page.trades)
            below = int(page.trades[0].id)
            if below <= first:
                break
        by_id = {int(t.id): t for t in out if int(t.id) >= first}
        return [by_id[i] for i in sorted(by_id)]

    def _point(self, path: str, row: Any, id_field: str, body: bytes) -> Point:
        try:
            obj = json_object(row, "a trade row")
            return Point(
                codec_rules.sequential_id(obj.get(id_field), id_field),
                codec_rules.timestamp(obj.get("T"), "T"),  # type: ignore[arg-type]
            )
        except ParseError as exc:
            raise BadAnswer(path, exc.reason, exc.detail, body) from None


class BinanceHistory(History):
    """Binance spot: trade ids are ``historicalTrades``' ``id``; ``aggTrades`` finds them by
    time (an aggregate's ``f``..``l`` are the trade ids it holds)."""

    venue = Binance
    by_time = True
    #: historicalTrades weighs 25 of the 6,000 per minute per IP: half of it is 120 per minute.
    fill_pace_s = 0.5
    trades_path: ClassVar[str] = "/api/v3/historicalTrades"
    agg_path: ClassVar[str] = "/api/v3/aggTrades"
    #: The aggTrades members holding the first and the last trade id of an aggregate.
    first_field: ClassVar[str] = "f"
    last_field: ClassVar[str] = "l"

    def __init__(self, client: httpx.Client, symbol: str, api_key: str | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(client, symbol, api_key, **kwargs)
        # Binance counts keyed requests against the key's limits instead of the IP's.
        if api_key:
            self.headers["X-MBX-APIKEY"] = api_key

    def event(self, row: dict[str, Any]) -> dict[str, Any]:
        """``{"id":3735683259,"price":"61837.63000000","qty":"0.02000000","quoteQty":"...",
        "time":1723161255342,"isBuyerMaker":true,"isBestMatch":true}`` → a ``trade`` event."""
        return {"e": "trade", "s": self.native, "t": row.get("id"), "p": row.get("price"),
                "q": row.get("qty"), "T": row.get("time"), "m": row.get("isBuyerMaker")}  # fmt: skip

    def latest(self) -> Point | None:
        rows, body = self.rows(self.agg_path, {"symbol": self.native, "limit": 1})
        return self._point(self.agg_path, rows[-1], self.last_field, body) if rows else None

    def first_at(self, ts_ms: int) -> Point | None:
        params = {"symbol": self.native, "startTime": ts_ms, "limit": 1}
        rows, body = self.rows(self.agg_path, params)
        if not rows:
            return None
        point = self._point(self.agg_path, rows[0], self.first_field, body)
        if point.ts_ms < ts_ms:
            raise BadAnswer(
                self.agg_path, "out_of_range",
                f"asked for the first trade from ts {ts_ms}, got one at {point.ts_ms}", body,
            )  # fmt: skip
        return point

    def page_from(self, from_id: int) -> Page:
        params = {"symbol": self.native, "fromId": from_id, "limit": self.page_size}
        rows, _ = self.rows(self.trades_path, params)
        return self.page(self.trades_path, rows, from_id, None)


class BinanceUsdmHistory(BinanceHistory):
    """USDⓈ-M: everything from ``aggTrades`` (public); the connector's ids are its ``a``."""

    venue = BinanceUsdm
    #: aggTrades weighs 20 of the 2,400 per minute per IP: half of it is 60 per minute.
    fill_pace_s = 1.0
    trades_path = "/fapi/v1/aggTrades"
    agg_path = "/fapi/v1/aggTrades"
    first_field = "a"
    last_field = "a"

    def event(self, row: dict[str, Any]) -> dict[str, Any]:
        """``{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,
        "T":1498793709153,"m":true}`` → an ``aggTrade`` event."""
        return {"e": "aggTrade", "s": self.native, "a": row.get("a"), "p": row.get("p"),
                "q": row.get("q"), "T": row.get("T"), "m": row.get("m")}  # fmt: skip


class CoinbaseHistory(History):
    """Coinbase Exchange: ``/products/{id}/trades`` pages by ``trade_id`` only, newest first:
    ``after=N`` gives the trades below N (Pagination, "after: request page after (older) this
    pagination id"; at most 1,000 per page)."""

    venue = Coinbase
    #: Public endpoints allow 10 requests per second per IP: half of it is 5.
    fill_pace_s = 0.2

    @property
    def path(self) -> str:
        return f"/products/{self.native}/trades"

    def event(self, row: dict[str, Any]) -> dict[str, Any]:
        """``{"time":"2021-04-17T16:43:37.121358Z","trade_id":1568268,"price":"0.791",
        "size":"450","side":"sell"}`` → a ``match`` (its ``side`` is the maker's too)."""
        return {"type": "match", "trade_id": row.get("trade_id"), "product_id": self.native,
                "price": row.get("price"), "size": row.get("size"), "side": row.get("side"),
                "time": row.get("time")}  # fmt: skip

    def page_before(self, below: int | None) -> Page:
        params: dict[str, Any] = {"limit": self.page_size}
        if below is not None:
            params["after"] = below
        rows, _ = self.rows(self.path, params)
        return self.page(self.path, rows, 0, None if below is None else below - 1)


# --------------------------------------------------------------------------- the start-up fill


def fill_starts(
    intervals: Sequence[str], now_ms: int, calendar: Calendar | None = None
) -> list[tuple[str, int]]:
    """(interval, start of its current window) for ``intervals``, longest first, one per
    distinct start (1h and 30m often share it: the longer one is kept). A ``1d`` window is the
    ``calendar``'s day (its ``day_timezone``; default UTC).

    >>> fill_starts(["1m", "1h", "5m"], 1723161450000)  # 23:57:30 UTC
    [('1h', 1723158000000), ('5m', 1723161300000), ('1m', 1723161420000)]
    """
    out: list[tuple[str, int]] = []
    for name in sorted(set(intervals), key=lambda n: -codec_rules.INTERVALS[n]):
        start = now_ms - now_ms % codec_rules.INTERVALS[name]
        if name in codec_rules.CALENDAR_INTERVALS:
            day = (calendar or Calendar()).day_of("", now_ms)
            start = start if day is None else day[0]
        if all(start != s for _, s in out):
            out.append((name, start))
    return out


@dataclass
class FillPlan:
    """What the start-up fill of one symbol publishes: a :class:`~candlewax.codec.Since` at
    ``since_ms`` (None: no claim, and no trade), then trades ``first_id..seam.id``."""

    #: The newest trade when planning: live trades continue after it (None: no trade yet).
    seam: Point | None
    since_ms: int | None = None
    #: The interval whose current window starts at ``since_ms``.
    interval: str | None = None
    #: The first trade id of the window (the fill publishes first_id..seam.id).
    first_id: int | None = None
    #: Trades fetched while planning (cursor venues): the window's, in id order.
    fetched: list[Trade] = field(default_factory=list)
    #: Why nothing is claimed, for the log.
    why: str = ""

    def pages(self, history: History, budget: int) -> Iterator[list[Trade]]:
        """The window's trades in id order; forward venues fetch them now, lazily."""
        if self.since_ms is None or self.seam is None or self.first_id is None:
            return
        if self.fetched:
            yield self.fetched
        elif history.by_time and self.first_id <= self.seam.id:
            yield from history.forward(self.first_id, self.seam.id, budget)


def plan_fill(history: History, starts: Sequence[tuple[str, int]], budget: int) -> FillPlan:
    """Choose the longest window of ``starts`` (see :func:`fill_starts`) whose trades ``budget``
    requests can fetch completely, counting every request of the plan.

    ``by_time`` venues probe: the newest trade, then the first trade of each window start,
    longest first, until the ids between fit the budget (``page_size`` per request); nothing
    is fetched yet. Cursor venues (Coinbase) walk back from the newest trade until a trade
    before the longest start or the budget, and claim the longest start that some fetched
    trade precedes — the proof that every later trade was fetched.
    """
    if not starts:
        return FillPlan(None, why="no intervals")
    if history.by_time:
        return _plan_forward(history, starts, budget)
    return _plan_backward(history, starts, budget)


def _plan_forward(history: History, starts: Sequence[tuple[str, int]], budget: int) -> FillPlan:
    seam = history.latest()
    interval, longest = starts[0]
    if seam is None:
        return FillPlan(None, longest, interval, why="no trade yet")
    for interval, start in starts:
        if seam.ts_ms < start:  # nothing traded since the start: nothing to fetch
            return FillPlan(seam, start, interval, seam.id + 1)
        if history.requests >= budget:
            break
        first = history.first_at(start)
        if first is None or first.id > seam.id:
            raise FillIncomplete(
                f"the newest trade is id {seam.id} at ts {seam.ts_ms}, but the venue gave "
                f"{'none' if first is None else first.id} as the first from ts {start}"
            )
        pages = -(-(seam.id - first.id + 1) // history.page_size)
        if history.requests + pages <= budget:
            return FillPlan(seam, start, interval, first.id)
    shortest = starts[-1][0]
    return FillPlan(
        seam, why=f"{budget} requests cannot fetch the current {shortest} window completely"
    )


def _plan_backward(history: History, starts: Sequence[tuple[str, int]], budget: int) -> FillPlan:
    longest_interval, longest = starts[0]
    got: dict[int, Trade] = {}
    below: int | None = None
    seam: Point | None = None
    whole_history = False  # an empty page: nothing older exists
    while history.requests < budget:
        page = history.page_before(below)
        if page.rows == 0:
            whole_history = True
            break
        if not page.trades:
            raise FillIncomplete(f"none of the {page.rows} rows of a page below {below} is usable")
        if seam is None:
            seam = Point(int(page.trades[-1].id), page.trades[-1].ts_ms)
        got.update((int(t.id), t) for t in page.trades)
        below = int(page.trades[0].id)
        if page.trades[0].ts_ms < longest:
            break
    if seam is None:
        if whole_history:
            return FillPlan(None, longest, longest_interval, why="no trade yet")
        return FillPlan(None, why=f"{budget} requests fetched nothing")
    trades = [got[i] for i in sorted(got)]
    oldest = trades[0]
    for interval, start in starts:
        if whole_history or oldest.ts_ms < start:
            window = [t for t in trades if t.ts_ms >= start]
            before = [int(t.id) for t in trades if t.ts_ms < start]
            first = max(before) + 1 if before else (int(window[0].id) if window else seam.id + 1)
            return FillPlan(seam, start, interval, first, [t for t in window if int(t.id) >= first])
    return FillPlan(
        seam,
        why=f"{budget} requests reached back to ts {oldest.ts_ms}, not to the start of the "
        f"current {starts[-1][0]} window",
    )


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class VenueSpec:
    """A venue as ``candlewax connect`` runs it."""

    venue: type[Venue]
    #: Its public trade history (None: none the connector can use: no backfill, no fill).
    history: type[History] | None = None
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


BINANCE = VenueSpec(Binance, history=BinanceHistory)
BINANCE_USDM = VenueSpec(BinanceUsdm, history=BinanceUsdmHistory)
OKX = VenueSpec(Okx)
COINBASE = VenueSpec(Coinbase, history=CoinbaseHistory)
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
