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
  on reading.

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
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
import websocket

from candlewax import metrics
from candlewax.backoff import Backoff
from candlewax.codec import DeadLetter, Trade
from candlewax.errors import CandlewaxError, ParseError
from candlewax.logs import SECRETS
from connectors.producer import TradeProducer
from connectors.venues import BackfillBanned, VenueSpec

log = logging.getLogger(__name__)


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
        self.stats = ConnectionStats()
        self.last_id: dict[str, int] = {}
        self.last_ts: dict[str, int] = {}
        #: Per symbol, a trade whose id was far from the sequence, waiting for the next one.
        self.held: dict[str, Trade] = {}
        self.newest_ts: int | None = None
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
            if self.stats.connects > 1 and self.c.recorder is None:
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
        out: list[Trade] = []
        for trade in trades:
            if self.parser.sequential_ids:
                out.extend(self._in_sequence(trade))
            else:
                out.append(trade)
        for trade in out:
            self.last_ts[trade.symbol] = max(trade.ts_ms, self.last_ts.get(trade.symbol, 0))
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
                self._fill_gap(symbol, last + 1, tid - 1)
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
            gap = self._fill_gap(symbol, last + 1, held_id - 1) if held_id > last + 1 else []
            between = self._fill_gap(symbol, held_id + 1, tid - 1) if tid > held_id + 1 else []
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

    def _fetch(self, symbol: str, first: int, last: int | None) -> list[Trade] | None:
        """Trades first..last (last None: up to now) over REST, in id order; None on failure
        (logged and counted as unrecovered)."""
        if self.spec.backfill is None or self.c.rest is None:
            self._unrecovered(symbol, first, last, "no trade backfill for this venue/process")
            return None
        try:
            got = self.spec.backfill(self.c.rest, symbol, first, last, self.c.options.api_key)
        except BackfillBanned as exc:
            log.error("%s: %s — backfill disabled for this process", self.name, exc)
            self.c.rest = None
            self._unrecovered(symbol, first, last, str(exc))
            return None
        except (CandlewaxError, httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            # httpx texts carry the request URL: the class name and a redacted text only.
            self._unrecovered(
                symbol, first, last, f"{type(exc).__name__}: {SECRETS.redact(str(exc))[:200]}"
            )
            return None
        got = [t for t in got if int(t.id) >= first and (last is None or int(t.id) <= last)]
        got.sort(key=lambda t: int(t.id))
        self.stats.backfilled += len(got)
        metrics.CONNECTOR_BACKFILLED.labels(self.name).inc(len(got))
        return got

    def _fill_gap(self, symbol: str, first: int, last: int) -> list[Trade]:
        """A gap seen in the live stream: ids first..last are missing."""
        self.stats.gaps += 1
        got = self._fetch(symbol, first, last)
        if got is None:
            return []
        wanted = last - first + 1
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
        or fetched. Say so — metric, log, and a ``gap`` record in ``deadletter`` naming the time
        range — instead of producing bars that silently miss trades."""
        now_ms = int(time.time() * 1000)
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

    def _backfill_after_reconnect(self) -> None:
        """After a reconnect, fetch everything since the last trade seen, per symbol: what was
        missed while disconnected is a gap only if there was something to miss."""
        for symbol, last in list(self.last_id.items()):
            got = self._fetch(symbol, last + 1, None)
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
        try:
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
