"""The gateway's ASGI app (Starlette): the WebSocket streams, the REST API, the chart page and
``/metrics``. :func:`create_app` wires a :class:`~sinks.gateway.service.Gateway` to it; the
Kafka feed and the push clock run in its lifespan.

Routes::

    /ws/<stream>[/<stream>...]  raw streams: each message is the event itself
    /ws                         raw, streams chosen with SUBSCRIBE
    /stream?streams=a/b         combined: each message is {"stream": name, "data": event}
    /api/v3/klines              Binance's klines (closed bars from Parquet + the forming bar)
    /api/v1/alerts              recent alerts
    /api/v1/markets             the symbols and intervals served
    /healthz                    200 when the Kafka feed is reading, else 503
    /openapi.json               the REST API's OpenAPI 3.1 document
    /metrics                    Prometheus
    /                           the live chart page
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import prometheus_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from candlewax import metrics
from candlewax.codec.rules import SYMBOL_PATTERN, VENUE_PATTERN
from candlewax.settings import Settings
from sinks.gateway.auth import Keys
from sinks.gateway.feed import Batch, Feed
from sinks.gateway.hub import FULL, RATE_LIMIT, Client, write_loop
from sinks.gateway.openapi import document
from sinks.gateway.protocol import ProtocolError, parse_request, result
from sinks.gateway.protocol import Request as WsRequest
from sinks.gateway.service import Gateway
from sinks.gateway.streams import Stream, StreamError, parse_stream

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
_BAD_ORIGIN = (1008, "origin not allowed")
#: How long a closing connection's writer may take to send its close frame.
_CLOSE_GRACE_S = 2.0


class Server:
    """A Gateway, its feed and its sockets."""

    def __init__(self, settings: Settings, feed: bool = True) -> None:
        self.settings = settings
        self.config = settings.gateway
        self.gateway = Gateway(settings)
        self.keys = Keys.load(self.config.keys_file)
        self.feed = Feed(settings, self._deliver) if feed else None
        self.loop: asyncio.AbstractEventLoop | None = None
        #: (client, stream, name, data, window): new subscribers' current values, to send
        self._snapshots: list[tuple[Client, Stream, str, bytes, int]] = []

    # ------------------------------------------------------------------ feed → loop

    def _deliver(self, batch: Batch) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.gateway.ingest, batch)

    async def _clock(self) -> None:
        interval = self.config.push_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                self.gateway.push()
            except Exception:  # one bad push must not end the clock
                log.exception("gateway push failed")

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.loop = asyncio.get_running_loop()
        warmed = await asyncio.to_thread(self.gateway.warm_up)
        log.info("gateway: %d 1m bars of the last 24 h from %s", warmed, self.settings.data_dir)
        if self.feed is not None:
            self.feed.start()
        clock = asyncio.create_task(self._clock())
        try:
            yield
        finally:
            clock.cancel()
            for client in list(self.gateway.hub.clients):
                client.close(1001, "server shutting down", reason="shutdown")
            if self.feed is not None:
                await asyncio.to_thread(self.feed.close)

    # ------------------------------------------------------------------ sockets

    def origin_allowed(self, ws: WebSocket) -> bool:
        """No Origin (not a browser), the page's own origin, or one listed."""
        origin = ws.headers.get("origin")
        if origin is None:
            return True
        allowed = self.config.allowed_origins
        if "*" in allowed or origin in allowed:
            return True
        host = ws.headers.get("host", "")
        return urlsplit(origin).netloc == host and host != ""

    def _streams(self, names: list[str]) -> list[tuple[Stream, str]]:
        out = []
        for name in names:
            stream = parse_stream(name, self.config.default_venue, self.gateway.intervals)
            if stream.kind == "user":
                raise StreamError("user needs a LOGIN first: subscribe to it after logging in")
            out.append((stream, name))
        if len(out) > self.config.max_streams:
            raise StreamError(f"too many streams: at most {self.config.max_streams} per connection")  # fmt: skip
        return out

    async def websocket(self, ws: WebSocket) -> None:
        combined = ws.url.path == "/stream"
        if combined:
            names = [n for n in ws.query_params.get("streams", "").split("/") if n]
        else:
            names = [n for n in ws.path_params.get("streams", "").split("/") if n]
        if not self.origin_allowed(ws):
            metrics.GATEWAY_DISCONNECTS.labels("origin").inc()
            await ws.close(*_BAD_ORIGIN)
            return
        try:
            streams = self._streams(names)
        except StreamError as exc:
            metrics.GATEWAY_DISCONNECTS.labels("bad_request").inc()
            await ws.send_denial_response(JSONResponse({"code": -1100, "msg": str(exc)}, 400))
            return
        client = Client(combined=combined, queue_size=self.config.queue_size)
        hub = self.gateway.hub
        if not hub.join(client):
            await ws.close(*FULL)
            return
        try:
            await ws.accept()
            for stream, name in streams:
                self._subscribe(client, stream, name)
            self._flush_snapshots()

            async def close(code: int, reason: str) -> None:
                with contextlib.suppress(Exception):
                    await ws.close(code, reason)

            writer = asyncio.create_task(
                write_loop(client, ws.send_text, close, self.config.ping_timeout_s)
            )
            reader = asyncio.create_task(self._read(ws, client))
            closing = asyncio.create_task(client.closed.wait())
            tasks = {writer, reader, closing}
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if client.closing is not None and not writer.done():
                # The writer sends the close frame, unless it is stuck in a send to a client
                # that stopped reading: then the connection is given up (uvicorn closes it).
                await asyncio.wait({writer}, timeout=_CLOSE_GRACE_S)
            for task in tasks:
                task.cancel()
        finally:
            hub.leave(client)

    async def _read(self, ws: WebSocket, client: Client) -> None:
        arrivals: deque[float] = deque()
        limit = self.config.max_incoming_per_s
        while client.closing is None:
            try:
                message = await ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            now = time.monotonic()
            arrivals.append(now)
            while arrivals and arrivals[0] <= now - 1.0:
                arrivals.popleft()
            if len(arrivals) > limit:
                client.close(*RATE_LIMIT, reason="rate_limit")
                return
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode("utf-8", "replace")
            reply = self.handle(client, text)
            client.put(orjson.dumps(reply).decode(), "reply", 0, None)
            self._flush_snapshots()

    def handle(self, client: Client, text: str) -> dict[str, Any]:
        """One request → its reply (Binance's shapes)."""
        try:
            request = parse_request(text)
            return self._apply(client, request)
        except ProtocolError as exc:
            return exc.reply()

    def _apply(self, client: Client, request: WsRequest) -> dict[str, Any]:
        hub, rid = self.gateway.hub, request.id
        if request.method == "LIST_SUBSCRIPTIONS":
            return result(sorted(client.streams.values()), rid)
        if request.method == "GET_PROPERTY":
            return result(client.combined, rid)
        if request.method == "SET_PROPERTY":
            client.combined = request.params[1]
            return result(None, rid)
        if request.method == "LOGIN":
            return self._login(client, request)
        streams = []
        for name in request.params:
            try:
                stream = parse_stream(name, self.config.default_venue, self.gateway.intervals)
            except StreamError as exc:
                raise ProtocolError(2, f"Invalid request: {exc}", rid) from None
            if stream.kind == "user" and client.user is None:
                raise ProtocolError(2, "Invalid request: user needs a LOGIN first", rid)
            streams.append((stream, name))
        if request.method == "SUBSCRIBE":
            new = {s.channel for s, _ in streams} - set(client.streams)
            if len(client.streams) + len(new) > self.config.max_streams:
                raise ProtocolError(2, f"Invalid request: too many streams: at most {self.config.max_streams} per connection", rid)  # fmt: skip
            for stream, name in streams:
                self._subscribe(client, stream, name)
        else:
            for stream, _name in streams:
                hub.unsubscribe(client, stream)
        return result(None, rid)

    def _subscribe(self, client: Client, stream: Stream, name: str) -> None:
        new = stream.channel not in client.streams
        self.gateway.hub.subscribe(client, stream, name)
        current = self.gateway.current(stream) if new else None
        if current is not None:  # sent after the request's reply (see _read)
            self._snapshots.append((client, stream, name, *current))

    def _flush_snapshots(self) -> None:
        for client, stream, name, data, window in self._snapshots:
            self.gateway.hub.send_one(client, stream, name, data, window)
        self._snapshots.clear()

    def _login(self, client: Client, request: WsRequest) -> dict[str, Any]:
        outcome, user = self.keys.check(request.params, int(time.time() * 1000), self.config.login_window_ms)  # fmt: skip
        metrics.GATEWAY_LOGINS.labels(outcome).inc()
        if user is None:
            # One answer for every failure: nothing tells a stranger which part was wrong.
            msg = "private streams are off" if outcome == "disabled" else "login refused"
            raise ProtocolError(2, f"Invalid request: {msg}", request.id)
        client.user = user
        return result({"user": user}, request.id)

    # ------------------------------------------------------------------ REST

    async def klines(self, request: Request) -> Response:
        try:
            q = _query(request, {"symbol", "interval", "startTime", "endTime", "limit", "timeZone"})
            venue, symbol = self._symbol(q)
            interval = q.get("interval")
            if not interval:
                raise _Bad(-1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")  # fmt: skip
            if interval not in self.gateway.intervals:
                raise _Bad(-1120, "Invalid interval.")
            start = _int(q, "startTime")
            end = _int(q, "endTime")
            limit = _int(q, "limit")
            if limit is None:
                limit = self.config.klines_limit_default
            if not 1 <= limit <= self.config.klines_limit_max:
                raise _Bad(-1130, f"Invalid data sent for a parameter: limit must be 1..{self.config.klines_limit_max}.")  # fmt: skip
        except _Bad as exc:
            return _error(request, "klines", exc)
        rows = await asyncio.to_thread(self.gateway.klines, venue, symbol, interval, start, end, limit)  # fmt: skip
        return _json(request, "klines", rows)

    async def alerts(self, request: Request) -> Response:
        try:
            q = _query(request, {"symbol", "since", "limit"})
            venue = symbol = None
            if "symbol" in q:
                venue, symbol = self._symbol(q)
            since = _int(q, "since") or 0
            limit = _int(q, "limit")
            limit = 500 if limit is None else limit
            if not 1 <= limit <= self.config.alerts_kept:
                raise _Bad(-1130, f"Invalid data sent for a parameter: limit must be 1..{self.config.alerts_kept}.")  # fmt: skip
        except _Bad as exc:
            return _error(request, "alerts", exc)
        return _json(request, "alerts", self.gateway.recent_alerts(since, venue, symbol, limit))

    def _symbol(self, q: dict[str, str]) -> tuple[str, str]:
        text = q.get("symbol")
        if not text:
            raise _Bad(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")  # fmt: skip
        venue, sep, symbol = text.partition(":")
        symbol = symbol.upper()
        # As in stream names: "venue:SYMBOL" when that reads, else a symbol of the default venue
        # (a symbol may hold ":", as Finnhub's BINANCE:BTCUSDT).
        if not (sep and _match(VENUE_PATTERN, venue) and _match(SYMBOL_PATTERN, symbol)):
            venue, symbol = self.config.default_venue or "", text.upper()
        if not venue or not _match(SYMBOL_PATTERN, symbol):
            raise _Bad(-1121, "Invalid symbol.")
        return venue, symbol

    async def markets(self, request: Request) -> Response:
        return _json(request, "markets", self.gateway.markets())

    async def healthz(self, request: Request) -> Response:
        feed = self.feed
        reading = feed is None or (feed.ready.is_set() and feed.thread.is_alive())
        body = {
            "status": "ok" if reading else "starting" if feed and feed.error is None else "failing",
            "kafka": None
            if feed is None
            else feed.error or ("reading" if reading else "connecting"),
            "connections": len(self.gateway.hub.clients),
        }
        return _json(request, "healthz", body, 200 if reading else 503)

    async def openapi(self, request: Request) -> Response:
        return _json(request, "openapi", document(self.config, self.gateway.intervals))

    async def page(self, request: Request) -> Response:
        index = STATIC / "index.html"
        if not index.is_file():
            return Response("the chart page is not built: run `make web`\n", 503)
        return FileResponse(index)

    async def metrics_page(self, request: Request) -> Response:
        return Response(prometheus_client.generate_latest(), media_type=prometheus_client.CONTENT_TYPE_LATEST)  # fmt: skip


class _Bad(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def _match(pattern: str, text: str) -> bool:
    return re.fullmatch(pattern, text) is not None


def _query(request: Request, known: set[str]) -> dict[str, str]:
    items = request.query_params.multi_items()
    names = [k for k, _ in items]
    if len(set(names)) != len(names):
        raise _Bad(-1101, "Duplicate values for a parameter detected.")
    unknown = sorted(set(names) - known)
    if unknown:
        raise _Bad(-1104, f"Not all sent parameters were read; unknown parameter '{unknown[0][:40]}'.")  # fmt: skip
    return dict(items)


def _int(q: dict[str, str], name: str) -> int | None:
    text = q.get(name)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 15):
        raise _Bad(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,15}}$'.")  # fmt: skip
    return int(text)


def _json(request: Request, route: str, body: Any, status: int = 200) -> Response:
    metrics.GATEWAY_REQUESTS.labels(route, str(status)).inc()
    return Response(orjson.dumps(body), status, media_type="application/json")


def _error(request: Request, route: str, exc: _Bad) -> Response:
    return _json(request, route, {"code": exc.code, "msg": exc.msg}, 400)


def create_app(settings: Settings, feed: bool = True) -> Starlette:
    """The gateway as an ASGI app (``feed=False``: no Kafka, for tests of the app alone)."""
    server = Server(settings, feed)
    routes = [
        Route("/", server.page),
        Route("/api/v3/klines", server.klines),
        Route("/api/v1/alerts", server.alerts),
        Route("/api/v1/markets", server.markets),
        Route("/healthz", server.healthz),
        Route("/openapi.json", server.openapi),
        Route("/metrics", server.metrics_page),
        WebSocketRoute("/ws", server.websocket),
        WebSocketRoute("/ws/{streams:path}", server.websocket),
        WebSocketRoute("/stream", server.websocket),
    ]
    if STATIC.is_dir():
        routes.append(Mount("/static", StaticFiles(directory=STATIC), name="static"))
    app = Starlette(routes=routes, lifespan=server.lifespan)
    app.state.server = server
    return app
