"""The live connection loop shared by every venue: websocket → normalized trades → ``trades``.

One :class:`LiveConnector` per ``candlewax connect VENUE`` process. Symbols are split over as
many connections as the venue's per-connection limit needs, one thread each. Every connection:

- connects (at most ``max_connects_per_5min`` attempts per 5 minutes, the Binance IP limit),
  sends its subscriptions paced under the venue's incoming-message limit;
- reads frames with a short timeout, answers server pings (websocket-client does), sends its own
  ping every ``ping_interval_s`` and declares the connection **stale** when nothing at all — data,
  ping or pong — arrived for ``stale_after_s``;
- reconnects on any failure with capped exponential backoff plus jitter, reset once a connection
  stayed healthy for ``healthy_after_s``; rotates proactively before the venue's connection
  lifetime (Binance: 24 h, jittered so processes do not reconnect in lock-step);
- where trade ids are sequential, tracks the last id per symbol: duplicates are dropped, and a
  gap — or a reconnect — triggers a REST backfill of the missing trades, published in order
  before the live ones. What cannot be backfilled is logged and counted as unrecovered. An id
  far from its symbol's sequence (more than ``max_id_jump`` away) is held until the next trade
  of the symbol: if that one continues from it, the sequence moved (a long gap); if it
  continues the old sequence, the held trade is dead-lettered ``implausible_id`` and the
  sequence is left as it was;
- dead-letters every frame its parser rejects (venue, stream, reason; secrets masked) and goes
  on reading;
- wherever it knows trades are lost (an id gap or a reconnect it could not backfill, a blind
  reconnect on a venue without ids), publishes a :class:`~candlewax.codec.Gap` marker of the
  symbol's time range into ``trades``, keyed like its trades, so the flow can mark the bars.

**Start-up fill** (``options.fill``, on in ``candlewax connect``): a connector that starts —
or restarts — knows nothing of the trades before its first frame, so the first window of
every symbol would be partial. Where the venue's REST history allows it (:class:`History`:
Binance spot and USDⓈ-M, Coinbase), once every connection has subscribed, the connector plans
per symbol the longest configured interval whose current window ``fill_max_requests`` requests
can fetch completely (:func:`~connectors.venues.plan_fill`), publishes a
:class:`~candlewax.codec.Since` marker at that window's start, then the window's trades up to
the newest one at planning (the *seam*), all symbols merged in time order (the flow's
watermark is per partition: a symbol's old trades after another's new ones would be late).
Connections read meanwhile but hold their trades; once the fill is done, the seam is each
symbol's last id and the held trades go through the usual id logic: those up to the seam are
duplicates, a jump past it is a gap, backfilled. What the fill could not fetch after claiming
it is a Gap marker; a symbol without a claim (no history, budget too small, REST failing) has
no Since marker, and its first window is partial. One log line per symbol says what it got.

**Connections never die quietly.** A connection thread that raises is logged with its
traceback, counted (``cause="crash"``) and restarted with the same backoff; a thread that ended
without being asked to is restarted by the supervisor. More than ``max_crashes`` crashes within
``crash_window_s`` mean the connector cannot recover: it stops and :meth:`LiveConnector.run`
raises, so ``candlewax connect`` exits non-zero instead of reporting success with data missing.

Heartbeats carry the newest exchange time that *every* connection has reached (the slowest
one's), so the flow's watermark never runs ahead of a lagging connection.

**Recording** (``candlewax record``, :mod:`connectors.record`): given a ``recorder`` instead of a
producer, the same connections hand every text and binary frame, with its receive time
(``time.time_ns()`` right after the read), to ``recorder.frame`` — before control messages are
acted on, so acks and notices are recorded too — and parse nothing: no trades, no dead letters,
no REST backfill (a recorder writes what the socket delivered). ``recorder.tick()`` runs every
0.1 s of :meth:`LiveConnector.run`; an exception from it stops the connector.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
import websocket

from candlewax import metrics
from candlewax.backoff import Backoff
from candlewax.calendar import Calendar
from candlewax.codec import INTERVALS, DeadLetter, Gap, Since, Trade, normalize_symbol
from candlewax.errors import CandlewaxError, ParseError
from candlewax.logs import SECRETS
from connectors.producer import TradeProducer
from connectors.venues import (
    BackfillBanned,
    BadAnswer,
    FillPlan,
    FillStopped,
    History,
    Pacer,
    RestRejection,
    VenueSpec,
    fill_starts,
    plan_fill,
)

log = logging.getLogger(__name__)

#: Trades a connection holds while the start-up fill runs; beyond, the oldest are dropped
#: (the id logic backfills them as a gap once the fill is done).
MAX_HELD_LIVE = 200_000
#: What a REST call of the backfill or the fill may raise on a bad answer or a bad network.
_REST_ERRORS = (CandlewaxError, httpx.HTTPError, ValueError, KeyError, TypeError)


def wall_ms() -> int:
    return int(time.time() * 1000)


def _utc(ts_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts_ms // 1000))


@dataclass
class LiveOptions:
    ws_url: str | None = None
    rest_url: str | None = None
    connect_timeout_s: float = 10.0
    ping_interval_s: float = 20.0
    stale_after_s: float = 60.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    healthy_after_s: float = 60.0
    #: Rotate after this long (default: the venue's lifetime minus up to 10 % jitter).
    max_lifetime_s: float | None = None
    heartbeat_ms: int = 1_000
    rest_timeout_s: float = 10.0
    #: The venue's URL token (Finnhub) and REST API key (Binance), read at the entry point.
    token: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    #: A sequential id further than this from its symbol's last one is held (see above).
    max_id_jump: int = 1_000_000
    #: Crashes of one connection tolerated within crash_window_s before the connector gives up.
    max_crashes: int = 5
    crash_window_s: float = 300.0
    #: The start-up fill (module docstring): on in ``candlewax connect`` (``--no-fill``: off).
    fill: bool = False
    #: Intervals whose current windows it tries to complete (connect: ``settings.intervals``).
    fill_intervals: tuple[str, ...] = tuple(INTERVALS)
    #: The calendar of the flow's ``1d`` windows (its day time zone), for the fill's window.
    fill_calendar: Calendar | None = None
    #: REST requests per symbol, probes included (Binance spot: 120 × weight 25 = half of the
    #: 6,000 per minute, at most 120,000 trades).
    fill_max_requests: int = 120
    #: Seconds between the fill's requests (None: the venue's, half of its request budget).
    fill_pace_s: float | None = None
    #: Exchange "now" in epoch ms: the fill's window starts, the end of blind gaps.
    clock_ms: Callable[[], int] = field(default=wall_ms, repr=False)


class FrameSink(Protocol):
    """Where a recording connector's frames go (:class:`connectors.record.FrameWriter`)."""

    def frame(self, recv_ns: int, payload: bytes) -> object:
        """One text or binary frame as received, from any connection thread."""
        ...

    def tick(self) -> None:
        """Periodic work (flush, rotation) from the supervisor; raise to stop the connector."""
        ...


def redact(url: str) -> str:
    """A URL fit for logs and dead letters: no query string (tokens), no credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class _ConnectLimiter:
    """At most ``limit`` connection attempts per sliding 5 minutes, across all connections."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.attempts: collections.deque[float] = collections.deque()
        self.lock = threading.Lock()

    def wait_time(self) -> float:
        with self.lock:
            now = time.monotonic()
            while self.attempts and now - self.attempts[0] > 300:
                self.attempts.popleft()
            if len(self.attempts) < self.limit:
                self.attempts.append(now)
                return 0.0
            return 300 - (now - self.attempts[0])


@dataclass
class ConnectionStats:
    connects: int = 0
    reconnects: dict[str, int] = field(default_factory=dict)
    messages: int = 0
    trades: int = 0
    duplicates: int = 0
    gaps: int = 0
    backfilled: int = 0
    unrecovered: int = 0
    rejected: int = 0
    implausible: int = 0
    crashes: int = 0
    #: Trades of the start-up fill (counted in ``trades`` too).
    filled: int = 0
    #: REST rows refused (bad rows, ids outside the asked range), dead-lettered.
    rest_rejected: int = 0


class _Connection:
    def __init__(
        self,
        connector: LiveConnector,
        index: int,
        symbols: list[str],
    ) -> None:
        self.c = connector
        self.spec = connector.spec
        self.parser = self.spec.parser()
        self.name = self.spec.name
        self.index = index
        self.symbols = symbols
        #: Our symbol → its configured spelling (what REST requests are built from).
        self.spelled = {normalize_symbol(s): s for s in symbols}
        self.stats = ConnectionStats()
        self.last_id: dict[str, int] = {}
        self.last_ts: dict[str, int] = {}
        #: Per symbol, a trade whose id was far from the sequence, waiting for the next one.
        self.held: dict[str, Trade] = {}
        self.newest_ts: int | None = None
        #: Set once the subscriptions went out (the start-up fill waits for every connection).
        self.subscribed = threading.Event()
        #: Live trades received while the start-up fill runs, published once it is done.
        self.held_live: list[Trade] = []
        base = connector.options.ws_url or self.parser.ws_url
        self.url = self.parser.stream_url(base, symbols, connector.options.token)
        lifetime = connector.options.max_lifetime_s or self.parser.max_lifetime_s
        self.lifetime_s = None if lifetime is None else lifetime * (1 - 0.1 * random.random())
        self.backoff = Backoff(connector.options.backoff_initial_s, connector.options.backoff_max_s)
        self.crash_times: collections.deque[float] = collections.deque()
        self.thread = self._thread()

    def _thread(self) -> threading.Thread:
        return threading.Thread(target=self.run, name=f"{self.name}-ws-{self.index}", daemon=True)

    def restart(self) -> None:
        """A new thread for this connection (its state — last ids, clocks — carries over)."""
        self.thread = self._thread()
        self.thread.start()

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Connect, read, reconnect until stopped; a crash is logged, counted and followed by a
        reconnect with backoff, until too many crashes make the connector give up."""
        opts = self.c.options
        while not self.c.stop.is_set():
            try:
                self._connect_loop()
                return
            except Exception:
                now = time.monotonic()
                self.stats.crashes += 1
                metrics.CONNECTOR_RECONNECTS.labels(self.name, "crash").inc()
                self.crash_times.append(now)
                while self.crash_times and now - self.crash_times[0] > opts.crash_window_s:
                    self.crash_times.popleft()
                log.exception("%s[%d]: connection crashed", self.name, self.index)
                self._drop_held("the connection crashed before it was confirmed")
                if len(self.crash_times) > opts.max_crashes:
                    self.c.fail(
                        f"{self.name}[{self.index}] crashed {len(self.crash_times)} times within "
                        f"{opts.crash_window_s:.0f} s; see the log for the errors"
                    )
                    return
                if self.c.stop.wait(self.backoff.next()):
                    return

    def _connect_loop(self) -> None:
        opts = self.c.options
        backoff = self.backoff
        while not self.c.stop.is_set():
            wait = self.c.limiter.wait_time()
            if wait > 0:
                log.warning("%s: connection attempt limit reached; waiting %.0f s", self.name, wait)
                if self.c.stop.wait(wait):
                    return
                continue
            started = time.monotonic()
            cause = self._session()
            self._drop_held("the connection ended before it was confirmed")
            if cause is None:  # stopped
                return
            self.stats.reconnects[cause] = self.stats.reconnects.get(cause, 0) + 1
            metrics.CONNECTOR_RECONNECTS.labels(self.name, cause).inc()
            if time.monotonic() - started >= opts.healthy_after_s or cause == "rotation":
                backoff.reset()
            delay = 0.0 if cause == "rotation" else backoff.next()
            log.info("%s[%d]: reconnecting in %.1f s (%s)", self.name, self.index, delay, cause)
            if self.c.stop.wait(delay):
                return

    def _session(self) -> str | None:
        """One connection, until it fails (returns the cause) or we stop (returns None)."""
        opts = self.c.options
        try:
            ws = websocket.create_connection(self.url, timeout=opts.connect_timeout_s)
        except (OSError, websocket.WebSocketException) as exc:
            log.warning(
                "%s[%d]: cannot connect to %s: %s",
                self.name,
                self.index,
                redact(self.url),
                exc,
            )
            return "connect_failed"
        self.stats.connects += 1
        log.info(
            "%s[%d]: connected to %s (%d symbols)",
            self.name,
            self.index,
            redact(self.url),
            len(self.symbols),
        )
        try:
            ws.settimeout(0.25)
            for i, message in enumerate(self.parser.subscribe_messages(self.symbols)):
                if i and self.c.stop.wait(1.0 / max(self.spec.max_sends_per_s - 1, 1)):
                    return None
                ws.send(message)
            self.subscribed.set()
            # While the start-up fill runs, its seam and the id logic cover a reconnect.
            if self.stats.connects > 1 and self.c.recorder is None and self.c.live.is_set():
                if self.parser.sequential_ids:
                    self._backfill_after_reconnect()
                else:
                    self._record_blind_gaps()
            return self._read(ws)
        finally:
            # Closing a broken socket can fail in many ways; nothing is left to lose.
            with contextlib.suppress(Exception):
                ws.close(timeout=1)

    def _read(self, ws: websocket.WebSocket) -> str | None:
        opts = self.c.options
        recorder = self.c.recorder
        opened = last_frame = last_ping = time.monotonic()
        while not self.c.stop.is_set():
            if self.held_live and self.c.live.is_set():
                self._publish([])  # the start-up fill is done: what was held goes out now
            now = time.monotonic()
            if self.lifetime_s is not None and now - opened >= self.lifetime_s:
                return "rotation"
            if now - last_frame >= opts.stale_after_s:
                log.warning(
                    "%s[%d]: no data, ping or pong for %.0f s: stale",
                    self.name,
                    self.index,
                    now - last_frame,
                )
                return "stale"
            ping = self.parser.ping
            ping_every = min(opts.ping_interval_s, ping[0]) if ping else opts.ping_interval_s
            if now - last_ping >= ping_every:
                try:
                    if ping is not None:
                        ws.send(ping[1])
                    else:
                        ws.ping()
                except (OSError, websocket.WebSocketException):
                    return "dropped"
                last_ping = now
            try:
                opcode, frame = ws.recv_data_frame(True)
            except websocket.WebSocketTimeoutException:
                continue
            except (OSError, websocket.WebSocketException):
                return "dropped"
            last_frame = time.monotonic()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return "server_close"
            if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                continue  # ping/pong: liveness only
            data = frame.data if hasattr(frame, "data") else frame
            if recorder is not None:
                recorder.frame(time.time_ns(), data)
                self.stats.messages += 1
                metrics.CONNECTOR_MESSAGES.labels(self.name).inc()
            label = self.parser.control(data)
            if label == "reconnect":
                log.info("%s[%d]: the server asked clients to reconnect", self.name, self.index)
                return "server_shutdown"
            if label == "error":
                text = data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")
                log.error(
                    "%s[%d]: the venue rejected a request: %s",
                    self.name,
                    self.index,
                    SECRETS.redact(text[:300]),
                )
                continue
            if label is not None or recorder is not None:
                continue
            self._on_frame(data)
        return None

    # ------------------------------------------------------------------ frames and gaps

    def _on_frame(self, data: bytes | str) -> None:
        recv_ms = int(time.time() * 1000)
        self.stats.messages += 1
        metrics.CONNECTOR_MESSAGES.labels(self.name).inc()
        try:
            trades = self.parser.parse_frame(data, recv_ms)
        except ParseError as exc:
            raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape")
            self._dead(exc.reason, exc.detail, raw)
            self.stats.rejected += 1
            return
        if trades:
            self._publish(trades)

    def _dead(self, reason: str, detail: str, raw: bytes) -> None:
        source = {"venue": self.name, "stream": redact(self.url)}
        self.c.publisher().dead_letter(
            DeadLetter(reason, SECRETS.redact(detail), SECRETS.redact_bytes(raw), source)
        )

    def _publish(self, trades: list[Trade]) -> None:
        if not self.c.live.is_set():  # the start-up fill runs: hold them
            self.held_live.extend(trades)
            if len(self.held_live) > MAX_HELD_LIVE:
                dropped = len(self.held_live) - MAX_HELD_LIVE
                del self.held_live[:dropped]
                log.warning(
                    "%s[%d]: holding more than %d live trades during the start-up fill: "
                    "dropped the %d oldest (backfilled later as a gap)",
                    self.name, self.index, MAX_HELD_LIVE, dropped,
                )  # fmt: skip
            return
        if self.held_live:
            trades, self.held_live = [*self.held_live, *trades], []
        out: list[Trade] = []
        for trade in trades:
            got = self._in_sequence(trade) if self.parser.sequential_ids else [trade]
            for t in got:
                self.last_ts[t.symbol] = max(t.ts_ms, self.last_ts.get(t.symbol, 0))
            out.extend(got)
        self._send(out)

    def _in_sequence(self, trade: Trade) -> list[Trade]:
        """The trades to publish for ``trade`` of a venue with consecutive ids: none (a
        duplicate, or held), the gap's backfill and the trade, or a held trade the sequence
        has now confirmed."""
        symbol, tid = trade.symbol, int(trade.id)
        jump = self.c.options.max_id_jump
        last = self.last_id.get(symbol)
        held = self.held.pop(symbol, None)
        if last is None or last < tid <= last + jump:  # the sequence goes on
            if held is not None:
                self._implausible(held, last, "the next trade continued the sequence")
            self.last_id[symbol] = tid
            gap = (
                self._fill_gap(symbol, last + 1, tid - 1, trade.ts_ms)
                if last is not None and tid > last + 1
                else []
            )
            return [*gap, trade]
        if last - jump <= tid <= last:
            self.stats.duplicates += 1
            metrics.CONNECTOR_DUPLICATES.labels(self.name).inc()
            if held is not None:
                self.held[symbol] = held  # a duplicate says nothing either way
            return []
        # Far from the sequence: does it start a new one (confirmed by the previous held id)?
        held_id = None if held is None else int(held.id)
        if held is not None and held_id is not None and held_id < tid <= held_id + jump:
            log.warning(
                "%s: trade ids of %s moved from %d to %d; following the new sequence",
                self.name, symbol, last, held_id,
            )  # fmt: skip
            self.last_id[symbol] = tid
            gap = (
                self._fill_gap(symbol, last + 1, held_id - 1, held.ts_ms)
                if held_id > last + 1
                else []
            )
            between = (
                self._fill_gap(symbol, held_id + 1, tid - 1, trade.ts_ms, held.ts_ms)
                if tid > held_id + 1
                else []
            )
            return [*gap, held, *between, trade]
        if held is not None:
            self._implausible(held, last, "the next trade did not continue it")
        self.held[symbol] = trade
        return []

    def _implausible(self, trade: Trade, last: int | None, why: str) -> None:
        self.stats.implausible += 1
        detail = (
            f"{trade.symbol} id {trade.id} is more than max_id_jump "
            f"{self.c.options.max_id_jump} from the last id {last}; {why}"
        )
        self._dead("implausible_id", detail, trade.encode())

    def _drop_held(self, why: str) -> None:
        """Held trades when the connection ends: dead-lettered (a reconnect backfills from the
        last confirmed id, so a real one comes back)."""
        for symbol, trade in list(self.held.items()):
            self._implausible(trade, self.last_id.get(symbol), why)
        self.held.clear()

    def _send(self, trades: list[Trade]) -> None:
        if not trades:
            return
        self.c.publisher().send(trades)
        self.stats.trades += len(trades)
        newest = max(t.ts_ms for t in trades)
        if self.newest_ts is None or newest > self.newest_ts:
            self.newest_ts = newest
        self.c._last_trade[0] = time.time()

    def history(self, symbol: str, pacer: Pacer | None = None) -> History | None:
        """The venue's REST trade history of ``symbol`` (our spelling), None without one."""
        if self.spec.history is None or self.c.rest is None:
            return None
        return self.spec.history(
            self.c.rest, self.spelled.get(symbol, symbol), self.c.options.api_key,
            reject=self._rest_rejected, pacer=pacer,
        )  # fmt: skip

    def _rest_rejected(self, rejection: RestRejection) -> None:
        """A REST row the parser refused (or outside the asked range): dead-lettered."""
        self.stats.rest_rejected += 1
        self._dead_rest(rejection.reason, rejection.detail, rejection.raw, rejection.path)

    def _dead_rest(self, reason: str, detail: str, raw: bytes, path: str) -> None:
        rest = self.c.rest
        stream = redact(f"{str(rest.base_url).rstrip('/')}{path}") if rest else path
        self.c.publisher().dead_letter(
            DeadLetter(reason, SECRETS.redact(detail), SECRETS.redact_bytes(raw),
                       {"venue": self.name, "stream": stream})
        )  # fmt: skip

    def rest_failed(self, exc: BaseException) -> str:
        """What a failed REST call says, for a log line: a bad answer is dead-lettered, a ban
        ends REST for this process. httpx texts carry the request URL: the class name and a
        redacted text only."""
        if isinstance(exc, BadAnswer):
            self.stats.rest_rejected += 1
            self._dead_rest(exc.reason, exc.detail, exc.raw, exc.path)
        if isinstance(exc, BackfillBanned):
            log.error("%s: %s — REST disabled for this process", self.name, exc)
            self.c.rest = None
        return f"{type(exc).__name__}: {SECRETS.redact(str(exc))[:200]}"

    def _fetch(self, symbol: str, first: int, last: int | None) -> list[Trade] | None:
        """Trades first..last (last None: up to now) over REST, in id order; None on failure
        (logged and counted as unrecovered)."""
        history = self.history(symbol)
        if history is None:
            self._unrecovered(symbol, first, last, "no trade backfill for this venue/process")
            return None
        try:
            got = history.range(first, last)
        except _REST_ERRORS as exc:
            self._unrecovered(symbol, first, last, self.rest_failed(exc))
            return None
        got = [t for t in got if int(t.id) >= first and (last is None or int(t.id) <= last)]
        got.sort(key=lambda t: int(t.id))
        self.stats.backfilled += len(got)
        metrics.CONNECTOR_BACKFILLED.labels(self.name).inc(len(got))
        return got

    def gap(self, symbol: str, from_ms: int, to_ms: int) -> None:
        """Trades of ``symbol`` with from_ms <= ts_ms < to_ms may be missing: a Gap marker."""
        self.c.publisher().marker(Gap(self.name, symbol, from_ms, max(from_ms, to_ms)))

    def _fill_gap(
        self, symbol: str, first: int, last: int, next_ts: int, from_ts: int | None = None
    ) -> list[Trade]:
        """A gap seen in the live stream: ids first..last are missing, between the symbol's
        last trade (or ``from_ts``) and the trade at ``next_ts`` that revealed them."""
        self.stats.gaps += 1
        got = self._fetch(symbol, first, last)
        wanted = last - first + 1
        if got is None or len(got) < wanted:
            start = self.last_ts.get(symbol, next_ts) if from_ts is None else from_ts
            self.gap(symbol, start, next_ts + 1)
        if got is None:
            return []
        if len(got) < wanted:
            self._unrecovered(symbol, first, last, f"REST returned {len(got)} of {wanted} trades")
        else:
            metrics.CONNECTOR_GAPS.labels(self.name, "backfilled").inc()
            log.info(
                "%s: backfilled %d trades of %s (ids %d..%d)",
                self.name,
                len(got),
                symbol,
                first,
                last,
            )
        return got

    def _unrecovered(self, symbol: str, first: int, last: int | None, why: str) -> None:
        self.stats.unrecovered += 1
        metrics.CONNECTOR_GAPS.labels(self.name, "unrecovered").inc()
        log.error(
            "%s: trades %d..%s of %s are missing and were not backfilled: %s",
            self.name,
            first,
            "now" if last is None else last,
            symbol,
            why,
        )

    def _record_blind_gaps(self) -> None:
        """Venues without trade ids (Finnhub): what happened while disconnected cannot be known
        or fetched. Say so — metric, log, a Gap marker in ``trades`` and a ``gap`` record in
        ``deadletter`` naming the time range — instead of producing bars that silently miss
        trades."""
        now_ms = self.c.options.clock_ms()
        for symbol, last_ts in self.last_ts.items():
            self.stats.gaps += 1
            detail = f"{symbol}: no trades received from ts_ms {last_ts} until reconnect at {now_ms}; venue has no backfill"
            self._unrecovered(symbol, last_ts, now_ms, "no trade backfill for this venue")
            raw = orjson.dumps(
                {
                    "venue": self.name,
                    "symbol": symbol,
                    "from_ts_ms": last_ts,
                    "to_ts_ms": now_ms,
                }
            )
            self._dead("gap", detail, raw)
            self.gap(symbol, last_ts, now_ms)

    def _backfill_after_reconnect(self) -> None:
        """After a reconnect, fetch everything since the last trade seen, per symbol: what was
        missed while disconnected is a gap only if there was something to miss."""
        for symbol, last in list(self.last_id.items()):
            got = self._fetch(symbol, last + 1, None)
            if got is None:
                now_ms = self.c.options.clock_ms()
                self.gap(symbol, self.last_ts.get(symbol, now_ms), now_ms)
            if got:
                self.stats.gaps += 1
                metrics.CONNECTOR_GAPS.labels(self.name, "backfilled").inc()
                log.info(
                    "%s: backfilled %d trades of %s missed while disconnected",
                    self.name,
                    len(got),
                    symbol,
                )
                self.last_id[symbol] = int(got[-1].id)
                self._send(got)


class _FillOut:
    """The start-up fill's output: trades in batches, a marker only after the trades before it."""

    def __init__(self, producer: TradeProducer) -> None:
        self.producer = producer
        self.batch: list[Trade] = []

    def trade(self, trade: Trade) -> None:
        self.batch.append(trade)
        if len(self.batch) >= 1000:
            self.flush()

    def marker(self, marker: Since | Gap) -> None:
        self.flush()
        self.producer.marker(marker)

    def flush(self) -> None:
        if self.batch:
            self.producer.send(self.batch)
            self.producer.flush_ready()
            self.batch = []


class _SymbolFill:
    """The start-up fill of one symbol: its plan, its trades as a stream, its outcome."""

    def __init__(self, conn: _Connection, symbol: str, history: History | None) -> None:
        self.conn = conn
        self.name = conn.name
        self.symbol = symbol
        self.history = history
        self.plan: FillPlan | None = None
        #: The Since marker's time: the start of the window claimed complete (None: no claim).
        self.claimed: int | None = None
        self.count = 0
        self.first: Trade | None = None
        self.last: Trade | None = None
        self.holes = 0
        self.why = ""
        #: The id after the last one the fill published (or skipped as a hole).
        self.next_id: int | None = None

    def plan_with(self, starts: list[tuple[str, int]], budget: int) -> None:
        if self.history is None:
            self.why = "REST is disabled for this process"
            return
        try:
            self.plan = plan_fill(self.history, starts, budget)
        except FillStopped:
            self.why = "stopped"
            return
        except _REST_ERRORS as exc:
            self.why = self.conn.rest_failed(exc)
            return
        self.claimed = self.plan.since_ms
        self.why = self.plan.why

    def stream(self, out: _FillOut, budget: int) -> Iterator[Trade]:
        """The claimed window's trades in id order. An id the venue did not give (a refused
        row, a failed request, the budget spent) is a hole: a Gap marker from the trade before
        to the trade after it (or the seam), counted and logged; nothing here raises."""
        plan, history = self.plan, self.history
        if self.claimed is None or plan is None or plan.seam is None or history is None:
            return
        seam, before_ts = plan.seam, self.claimed
        expected = seam.id + 1 if plan.first_id is None else plan.first_id
        self.next_id = expected
        try:
            for page in plan.pages(history, budget):
                for trade in page:
                    tid = int(trade.id)
                    if tid < expected:
                        continue
                    if tid > expected:
                        self._hole(out, expected, tid - 1, before_ts, trade.ts_ms + 1, "not given")
                    expected, before_ts = tid + 1, trade.ts_ms
                    self.next_id = expected
                    self.count += 1
                    self.first = self.first or trade
                    self.last = trade
                    yield trade
            why = "not given"
        except FillStopped:
            why = "stopped"
        except _REST_ERRORS as exc:
            why = self.conn.rest_failed(exc)
        if expected <= seam.id:
            self._hole(out, expected, seam.id, before_ts, seam.ts_ms + 1, why)

    def _hole(
        self, out: _FillOut, first: int, last: int, from_ms: int, to_ms: int, why: str
    ) -> None:
        self.holes += 1
        self.conn.stats.unrecovered += 1
        metrics.CONNECTOR_GAPS.labels(self.name, "unrecovered").inc()
        log.error(
            "%s: start-up fill of %s is missing trades %d..%d (%s); a gap marker covers %s..%s",
            self.name, self.symbol, first, last, why, _utc(from_ms), _utc(to_ms),
        )  # fmt: skip
        out.marker(Gap(self.name, self.symbol, from_ms, max(from_ms, to_ms)))

    def done(self) -> None:
        """Where the fill ended becomes the connection's last id (the seam, when it got there:
        live trades up to it are duplicates; short of it, live trades after the last one
        published are kept and the id logic backfills the rest as a gap); count; log."""
        conn = self.conn
        if self.claimed is not None and self.next_id is not None:
            conn.last_id[self.symbol] = self.next_id - 1
            conn.last_ts[self.symbol] = self.last.ts_ms if self.last else self.claimed
        if self.last is not None:
            conn.newest_ts = max(conn.newest_ts or 0, self.last.ts_ms)
        conn.stats.filled += self.count
        conn.stats.trades += self.count
        metrics.CONNECTOR_FILLED.labels(self.name).inc(self.count)
        requests = self.history.requests if self.history else 0
        if self.claimed is None:
            log.warning(
                "%s: no start-up fill of %s (%s): its first window is partial",
                self.name, self.symbol, self.why or "no plan",
            )  # fmt: skip
            return
        plan = self.plan
        assert plan is not None
        log.info(
            "%s: start-up fill of %s: %d trades from %s (start of the current %s window)%s, "
            "%d requests%s",
            self.name, self.symbol, self.count, _utc(self.claimed), plan.interval,
            f", ids {self.first.id}..{self.last.id}" if self.first and self.last else "",
            requests, f", {self.holes} gap(s)" if self.holes else "",
        )  # fmt: skip


class LiveConnector:
    """``candlewax connect VENUE``: symbols over connections, trades into Kafka — or, with a
    ``recorder`` (and no producer), ``candlewax record VENUE``: raw frames into files."""

    def __init__(
        self,
        spec: VenueSpec,
        symbols: list[str],
        producer: TradeProducer | None,
        options: LiveOptions | None = None,
        stop: threading.Event | None = None,
        recorder: FrameSink | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.symbols = symbols
        self.producer = producer
        self.recorder = recorder
        self.options = options or LiveOptions()
        self.stop = stop or threading.Event()
        self.limiter = _ConnectLimiter(spec.max_connects_per_5min)
        # Unknown symbol spellings and a missing token fail here, not in a connection thread.
        parser = spec.parser()
        parser.subscribe_messages(symbols)
        parser.stream_url(self.options.ws_url or parser.ws_url, symbols, self.options.token)
        SECRETS.add(self.options.token, self.options.api_key)
        self.failure: str | None = None
        rest_url = self.options.rest_url or parser.rest_url
        self.rest: httpx.Client | None = (
            httpx.Client(base_url=rest_url, timeout=self.options.rest_timeout_s)
            if rest_url and recorder is None
            else None
        )
        self._last_trade: list[float | None] = [None]  # wall time of the last trade published
        #: Set once live trades may be published: at once, or when the start-up fill is done.
        self.live = threading.Event()
        self.fills = bool(
            self.options.fill and self.options.fill_intervals and recorder is None
            and producer is not None and spec.history is not None and self.rest is not None
        )  # fmt: skip
        if not self.fills:
            self.live.set()
        size = parser.max_symbols_per_connection
        self.connections = [
            _Connection(self, i, symbols[start : start + size])
            for i, start in enumerate(range(0, len(symbols), size))
        ]
        # The gauge's callback lives in the global registry: it must not keep the connector
        # (and its producer) alive, so it holds only the clock.
        clock = self._last_trade
        metrics.CONNECTOR_LAST_TRADE_AGE.labels(spec.name).set_function(
            lambda: float("nan") if clock[0] is None else time.time() - clock[0]
        )

    def publisher(self) -> TradeProducer:
        """The producer; a recording connector has none and never parses a frame to need it."""
        if self.producer is None:
            raise CandlewaxError(f"{self.name}: this connector records frames, it has no producer")
        return self.producer

    def stats(self) -> ConnectionStats:
        total = ConnectionStats()
        for conn in self.connections:
            for name in (
                "connects",
                "messages",
                "trades",
                "duplicates",
                "gaps",
                "backfilled",
                "unrecovered",
                "rejected",
                "implausible",
                "crashes",
                "filled",
                "rest_rejected",
            ):
                setattr(total, name, getattr(total, name) + getattr(conn.stats, name))
            for cause, n in conn.stats.reconnects.items():
                total.reconnects[cause] = total.reconnects.get(cause, 0) + n
        return total

    def fail(self, why: str) -> None:
        """A connection cannot recover: stop everything; :meth:`run` raises ``why``."""
        if self.failure is None:
            self.failure = why
            log.error("%s: giving up: %s", self.name, why)
        self.stop.set()

    def run(self, exit_after_s: float | None = None) -> ConnectionStats:
        """Run until ``stop`` is set (SIGTERM/Ctrl-C) or ``exit_after_s``; flush; return stats.

        Raises CandlewaxError when a connection could not recover (after flushing what was
        received)."""
        for conn in self.connections:
            conn.thread.start()
        deadline = None if exit_after_s is None else time.monotonic() + exit_after_s
        next_beat: int | None = None
        if self.options.fill and not self.fills and self.recorder is None:
            log.info(
                "%s: no start-up fill (%s): the first window of every symbol is partial",
                self.name,
                "no REST trade history for this venue" if self.spec.history is None
                else "no REST URL" if self.rest is None else "no intervals",
            )  # fmt: skip
        try:
            if self.fills:
                try:
                    if self._wait_for_subscriptions(deadline):
                        self._startup_fill()
                finally:
                    self.live.set()
            while not self.stop.wait(0.1):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._supervise()
                if self.recorder is not None:
                    self.recorder.tick()
                else:
                    next_beat = self._heartbeat(next_beat)
                    self.publisher().flush_ready()
        finally:
            self.stop.set()
            for conn in self.connections:
                conn.thread.join(timeout=10)
            if self.rest is not None:
                self.rest.close()
            if self.producer is not None:
                self.producer.flush()
        if self.failure is not None:
            raise CandlewaxError(f"{self.name} connector stopped: {self.failure}")
        return self.stats()

    # ------------------------------------------------------------------ the start-up fill

    def _wait_for_subscriptions(self, deadline: float | None) -> bool:
        """Wait until every connection has subscribed (so the fill's seam is after the start of
        every live stream); False if stopped first."""
        while not all(conn.subscribed.is_set() for conn in self.connections):
            if self.stop.wait(0.05):
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._supervise()
        return True

    def _startup_fill(self) -> None:
        """Plan every symbol, publish the Since markers, then every window's trades merged in
        time order; the seams become the connections' last ids (module docstring)."""
        opts = self.options
        starts = fill_starts(opts.fill_intervals, opts.clock_ms(), opts.fill_calendar)
        history_type = self.spec.history
        assert history_type is not None
        pace = history_type.fill_pace_s if opts.fill_pace_s is None else opts.fill_pace_s
        pacer = Pacer(pace, self.stop)  # one for all symbols: the venue's limits are per IP
        fills: dict[str, _SymbolFill] = {}
        for conn in self.connections:
            for symbol in conn.spelled:
                if symbol in fills or self.stop.is_set():
                    continue
                fill = fills[symbol] = _SymbolFill(conn, symbol, conn.history(symbol, pacer))
                fill.plan_with(starts, opts.fill_max_requests)
        out = _FillOut(self.publisher())
        for fill in fills.values():
            if fill.claimed is not None:
                out.marker(Since(self.name, fill.symbol, fill.claimed))
        streams = [fill.stream(out, opts.fill_max_requests) for fill in fills.values()]
        for trade in heapq.merge(*streams, key=lambda t: t.ts_ms):
            out.trade(trade)
        out.flush()
        for fill in fills.values():
            fill.done()
        if any(f.count for f in fills.values()):
            self._last_trade[0] = time.time()

    def _supervise(self) -> None:
        """Restart a connection thread that ended although nobody asked it to."""
        for conn in self.connections:
            if not conn.thread.is_alive() and not self.stop.is_set():
                log.error(
                    "%s[%d]: connection thread ended unexpectedly; restarting it",
                    self.name,
                    conn.index,
                )
                metrics.CONNECTOR_RECONNECTS.labels(self.name, "crash").inc()
                conn.stats.crashes += 1
                conn.restart()

    def _heartbeat(self, next_beat: int | None) -> int | None:
        step = self.options.heartbeat_ms
        clocks = [c.newest_ts for c in self.connections if c.newest_ts is not None]
        if step <= 0 or not clocks:
            return next_beat
        low = min(clocks)
        if next_beat is None:
            return low - low % step + step
        if low >= next_beat:
            self.publisher().heartbeat(self.name, low)
            return low - low % step + step
        return next_beat
