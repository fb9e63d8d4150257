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
  before the live ones. What cannot be backfilled is logged and counted as unrecovered.

Heartbeats carry the newest exchange time that *every* connection has reached (the slowest
one's), so the flow's watermark never runs ahead of a lagging connection.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
import websocket

from candlewax import metrics
from candlewax.backoff import Backoff
from candlewax.errors import CandlewaxError, ParseError
from candlewax.records import DeadLetter, Trade
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


def redact(url: str) -> str:
    """A URL fit for logs: no query string (tokens), no credentials."""
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


class _Connection:
    def __init__(
        self,
        connector: LiveConnector,
        index: int,
        symbols: list[str],
    ) -> None:
        self.c = connector
        self.spec = connector.spec
        self.index = index
        self.symbols = symbols
        self.stats = ConnectionStats()
        self.last_id: dict[str, int] = {}
        self.last_ts: dict[str, int] = {}
        self.newest_ts: int | None = None
        base = connector.options.ws_url or self.spec.ws_url
        self.url = self.spec.url_for(base, symbols)
        lifetime = connector.options.max_lifetime_s or self.spec.max_lifetime_s
        self.lifetime_s = None if lifetime is None else lifetime * (1 - 0.1 * random.random())
        self.thread = threading.Thread(
            target=self.run, name=f"{self.spec.name}-ws-{index}", daemon=True
        )

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        opts = self.c.options
        backoff = Backoff(opts.backoff_initial_s, opts.backoff_max_s)
        while not self.c.stop.is_set():
            wait = self.c.limiter.wait_time()
            if wait > 0:
                log.warning(
                    "%s: connection attempt limit reached; waiting %.0f s", self.spec.name, wait
                )
                if self.c.stop.wait(wait):
                    return
                continue
            started = time.monotonic()
            cause = self._session()
            if cause is None:  # stopped
                return
            self.stats.reconnects[cause] = self.stats.reconnects.get(cause, 0) + 1
            metrics.CONNECTOR_RECONNECTS.labels(self.spec.name, cause).inc()
            if time.monotonic() - started >= opts.healthy_after_s or cause == "rotation":
                backoff.reset()
            delay = 0.0 if cause == "rotation" else backoff.next()
            log.info(
                "%s[%d]: reconnecting in %.1f s (%s)", self.spec.name, self.index, delay, cause
            )
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
                self.spec.name,
                self.index,
                redact(self.url),
                exc,
            )
            return "connect_failed"
        self.stats.connects += 1
        log.info(
            "%s[%d]: connected to %s (%d symbols)",
            self.spec.name,
            self.index,
            redact(self.url),
            len(self.symbols),
        )
        try:
            ws.settimeout(0.25)
            for i, message in enumerate(self.spec.subscribe(self.symbols)):
                if i and self.c.stop.wait(1.0 / max(self.spec.max_sends_per_s - 1, 1)):
                    return None
                ws.send(message)
            if self.stats.connects > 1:
                if self.spec.sequential_ids:
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
        opened = last_frame = last_ping = time.monotonic()
        while not self.c.stop.is_set():
            now = time.monotonic()
            if self.lifetime_s is not None and now - opened >= self.lifetime_s:
                return "rotation"
            if now - last_frame >= opts.stale_after_s:
                log.warning(
                    "%s[%d]: no data, ping or pong for %.0f s: stale",
                    self.spec.name,
                    self.index,
                    now - last_frame,
                )
                return "stale"
            ping_every = (
                min(opts.ping_interval_s, self.spec.ping[0])
                if self.spec.ping
                else opts.ping_interval_s
            )
            if now - last_ping >= ping_every:
                try:
                    if self.spec.ping is not None:
                        ws.send(self.spec.ping[1])
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
            label = self.spec.control(data)
            if label == "reconnect":
                log.info(
                    "%s[%d]: the server asked clients to reconnect", self.spec.name, self.index
                )
                return "server_shutdown"
            if label == "error":
                log.error(
                    "%s[%d]: the venue rejected a request: %s",
                    self.spec.name,
                    self.index,
                    bytes(data)[:300],
                )
                continue
            if label is not None:
                continue
            self._on_frame(data)
        return None

    # ------------------------------------------------------------------ frames and gaps

    def _on_frame(self, data: bytes | str) -> None:
        recv_ms = int(time.time() * 1000)
        self.stats.messages += 1
        metrics.CONNECTOR_MESSAGES.labels(self.spec.name).inc()
        try:
            trades = self.spec.parse(data, recv_ms)
        except ParseError as exc:
            raw = data if isinstance(data, bytes) else data.encode()
            self.c.producer.dead_letter(
                DeadLetter(
                    exc.reason,
                    exc.detail,
                    raw,
                    {"venue": self.spec.name, "stream": redact(self.url)},
                )
            )
            self.stats.rejected += 1
            return
        if trades:
            self._publish(trades)

    def _publish(self, trades: list[Trade]) -> None:
        out: list[Trade] = []
        for trade in trades:
            self.last_ts[trade.symbol] = max(trade.ts_ms, self.last_ts.get(trade.symbol, 0))
            if self.spec.sequential_ids:
                tid = int(trade.id)
                last = self.last_id.get(trade.symbol)
                if last is not None:
                    if tid <= last:
                        self.stats.duplicates += 1
                        metrics.CONNECTOR_DUPLICATES.labels(self.spec.name).inc()
                        continue
                    if tid > last + 1:
                        out.extend(self._fill_gap(trade.symbol, last + 1, tid - 1))
                self.last_id[trade.symbol] = tid
            out.append(trade)
        self._send(out)

    def _send(self, trades: list[Trade]) -> None:
        if not trades:
            return
        self.c.producer.send(trades)
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
            got = self.spec.backfill(self.c.rest, symbol, first, last)
        except BackfillBanned as exc:
            log.error("%s: %s — backfill disabled for this process", self.spec.name, exc)
            self.c.rest = None
            self._unrecovered(symbol, first, last, str(exc))
            return None
        except (CandlewaxError, httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            self._unrecovered(symbol, first, last, f"{type(exc).__name__}: {exc}")
            return None
        got = [t for t in got if int(t.id) >= first and (last is None or int(t.id) <= last)]
        got.sort(key=lambda t: int(t.id))
        self.stats.backfilled += len(got)
        metrics.CONNECTOR_BACKFILLED.labels(self.spec.name).inc(len(got))
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
            metrics.CONNECTOR_GAPS.labels(self.spec.name, "backfilled").inc()
            log.info(
                "%s: backfilled %d trades of %s (ids %d..%d)",
                self.spec.name,
                len(got),
                symbol,
                first,
                last,
            )
        return got

    def _unrecovered(self, symbol: str, first: int, last: int | None, why: str) -> None:
        self.stats.unrecovered += 1
        metrics.CONNECTOR_GAPS.labels(self.spec.name, "unrecovered").inc()
        log.error(
            "%s: trades %d..%s of %s are missing and were not backfilled: %s",
            self.spec.name,
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
                    "venue": self.spec.name,
                    "symbol": symbol,
                    "from_ts_ms": last_ts,
                    "to_ts_ms": now_ms,
                }
            )
            self.c.producer.dead_letter(
                DeadLetter(
                    "gap", detail, raw, {"venue": self.spec.name, "stream": redact(self.url)}
                )
            )

    def _backfill_after_reconnect(self) -> None:
        """After a reconnect, fetch everything since the last trade seen, per symbol: what was
        missed while disconnected is a gap only if there was something to miss."""
        for symbol, last in list(self.last_id.items()):
            got = self._fetch(symbol, last + 1, None)
            if got:
                self.stats.gaps += 1
                metrics.CONNECTOR_GAPS.labels(self.spec.name, "backfilled").inc()
                log.info(
                    "%s: backfilled %d trades of %s missed while disconnected",
                    self.spec.name,
                    len(got),
                    symbol,
                )
                self.last_id[symbol] = int(got[-1].id)
                self._send(got)


class LiveConnector:
    """``candlewax connect VENUE``: symbols over connections, trades into Kafka."""

    def __init__(
        self,
        spec: VenueSpec,
        symbols: list[str],
        producer: TradeProducer,
        options: LiveOptions | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.spec = spec
        self.symbols = symbols
        self.producer = producer
        self.options = options or LiveOptions()
        self.stop = stop or threading.Event()
        self.limiter = _ConnectLimiter(spec.max_connects_per_5min)
        spec.subscribe(symbols)  # unknown symbol spellings fail here, not in a connection thread
        rest_url = self.options.rest_url or spec.rest_url
        self.rest: httpx.Client | None = (
            httpx.Client(base_url=rest_url, timeout=self.options.rest_timeout_s)
            if rest_url
            else None
        )
        self._last_trade: list[float | None] = [None]  # wall time of the last trade published
        size = spec.max_symbols_per_connection
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
            ):
                setattr(total, name, getattr(total, name) + getattr(conn.stats, name))
            for cause, n in conn.stats.reconnects.items():
                total.reconnects[cause] = total.reconnects.get(cause, 0) + n
        return total

    def run(self, exit_after_s: float | None = None) -> ConnectionStats:
        """Run until ``stop`` is set (SIGTERM/Ctrl-C) or ``exit_after_s``; flush; return stats."""
        for conn in self.connections:
            conn.thread.start()
        deadline = None if exit_after_s is None else time.monotonic() + exit_after_s
        next_beat: int | None = None
        try:
            while not self.stop.wait(0.1):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                next_beat = self._heartbeat(next_beat)
                self.producer.flush_ready()
        finally:
            self.stop.set()
            for conn in self.connections:
                conn.thread.join(timeout=10)
            if self.rest is not None:
                self.rest.close()
            self.producer.flush()
        return self.stats()

    def _heartbeat(self, next_beat: int | None) -> int | None:
        step = self.options.heartbeat_ms
        clocks = [c.newest_ts for c in self.connections if c.newest_ts is not None]
        if step <= 0 or not clocks:
            return next_beat
        low = min(clocks)
        if next_beat is None:
            return low - low % step + step
        if low >= next_beat:
            self.producer.heartbeat(self.spec.name, low)
            return low - low % step + step
        return next_beat
