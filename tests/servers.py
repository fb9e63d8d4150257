"""Real servers on 127.0.0.1 for connector tests: a websocket server that plays scripted
sessions of recorded frames, and a Binance-like REST server for trade backfill."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, serve

Session = Callable[[ServerConnection, "WsServer"], Awaitable[None]]


class WsServer:
    """Each accepted connection runs the next scripted session (the last one repeats)."""

    def __init__(
        self,
        sessions: Sequence[Session],
        expect_subscribe: bool = False,
        ping_interval: float | None = None,
    ) -> None:
        self.sessions = list(sessions)
        self.ping_interval = ping_interval
        self.expect_subscribe = expect_subscribe
        self.connections = 0
        self.paths: list[str] = []
        #: Messages the client sent, per connection (the subscription, if expected; sessions
        #: that read append what they read).
        self.received: list[list[bytes]] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ws-server", daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def __enter__(self) -> WsServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("websocket test server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set_result, None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        async with serve(
            self._handle, "127.0.0.1", 0, ping_interval=self.ping_interval, ping_timeout=1.0
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stopped

    async def _handle(self, ws: ServerConnection) -> None:
        index = self.connections
        self.connections += 1
        self.paths.append(ws.request.path if ws.request else "")
        self.received.append([])
        session = self.sessions[min(index, len(self.sessions) - 1)]
        try:
            if self.expect_subscribe:
                message = await asyncio.wait_for(ws.recv(), timeout=5)
                self.received[index].append(
                    message.encode() if isinstance(message, str) else message
                )
            await session(ws, self)
        except Exception:  # the client went away mid-script: that is what some tests do
            return


# Session building blocks -------------------------------------------------------------


async def send_all(ws: ServerConnection, frames: Sequence[str | bytes]) -> None:
    for frame in frames:
        await ws.send(frame)


async def drop(ws: ServerConnection) -> None:
    """Cut the TCP connection without a close frame (a network failure)."""
    ws.transport.abort()


async def stall(ws: ServerConnection) -> None:
    """Stop reading and writing: no data and no pongs, as a hung server."""
    ws.transport.pause_reading()
    await asyncio.sleep(3600)


async def hold(ws: ServerConnection) -> None:
    """Keep the connection open and healthy until the client leaves."""
    await ws.wait_closed()


class RestServer:
    """``GET {prefix}/historicalTrades?symbol=&fromId=&limit=`` over a list of trade rows.

    Only trades with id <= ``available_until`` exist yet (the test moves it as "time" passes).
    The first ``rate_limited`` requests get HTTP 429 with ``Retry-After: 1``; ``banned`` makes
    every request a 418.
    """

    def __init__(self, rows: list[dict[str, Any]], path: str = "/api/v3/historicalTrades") -> None:
        self.rows = rows
        self.path = path
        self.available_until = -1
        self.rate_limited = 0
        self.banned = False
        self.requests: list[tuple[float, dict[str, str], int]] = []
        #: The headers of every request, in order.
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                status, body, headers = server._answer(parts.path, query)
                server.requests.append((time.monotonic(), query, status))
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def _answer(self, path: str, query: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        if self.banned:
            return 418, b'{"code":-1003,"msg":"banned"}', {"Retry-After": "600"}
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return 429, b'{"code":-1003,"msg":"Too many requests"}', {"Retry-After": "1"}
        if path != self.path:
            return 404, b"{}", {}
        first = int(query["fromId"])
        limit = min(int(query.get("limit", "500")), 1000)
        rows = [r for r in self.rows if first <= r["id"] <= self.available_until][:limit]
        return 200, orjson.dumps(rows), {}

    def __enter__(self) -> RestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
