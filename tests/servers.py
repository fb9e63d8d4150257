"""Real servers on 127.0.0.1 for connector tests: a websocket server that plays scripted
sessions of recorded frames, and Binance- and Coinbase-like REST servers answering trade
history by id and by time (the gap backfill and the start-up fill)."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
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


Answer = tuple[int, bytes, dict[str, str]]


class RestServer:
    """Binance's trade lists over a list of trade rows, oldest first, as Binance answers them.

    ``GET {path}?symbol=&limit=`` and ``fromId=`` (rows from that id), ``startTime=``/``endTime=``
    (rows in that time range, both inclusive), or neither (the newest rows): spot's
    ``historicalTrades`` rows (``id``, ``time``) by default, USDⓈ-M's ``aggTrades`` with
    ``path="/fapi/v1/aggTrades", id_field="a", time_field="T"``. With ``agg_path`` (spot's
    ``/api/v3/aggTrades``) it also answers the aggregates of the rows: consecutive trades of one
    time, side and price are one aggregate, numbered from ``agg_base`` (unlike trade ids), with
    their first and last trade ids in ``f`` and ``l``.

    ``rows`` may also map symbols to their rows (the ``symbol`` parameter chooses). Only trades
    with id <= ``available_until`` and time before ``available_before_ms`` exist yet (the test
    moves them as "time" passes). At most ``max_limit`` rows per answer. The first ``rate_limited`` requests get HTTP 429 with
    ``Retry-After: 1``; ``banned`` makes every request a 418; ``hook(path, query)``, when set,
    runs first on every other request and may answer it instead (a test's script).
    """

    def __init__(
        self,
        rows: list[dict[str, Any]] | dict[str, list[dict[str, Any]]],
        path: str = "/api/v3/historicalTrades",
        id_field: str = "id",
        time_field: str = "time",
        agg_path: str | None = None,
        agg_base: int = 900_000_000,
    ) -> None:
        self.rows = rows
        self.path = path
        self.id_field = id_field
        self.time_field = time_field
        self.agg_path = agg_path
        self.agg_base = agg_base
        self.available_until = -1
        self.available_before_ms: int | None = None
        self.max_limit = 1000
        self.rate_limited = 0
        self.banned = False
        self.hook: Callable[[str, dict[str, str]], Answer | None] | None = None
        self.requests: list[tuple[float, dict[str, str], int]] = []
        #: The path of every request, in order.
        self.paths: list[str] = []
        #: The headers of every request, in order.
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                status, body, headers = server._answer(parts.path, query)
                server.requests.append((time.monotonic(), query, status))
                server.paths.append(parts.path)
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

    def _answer(self, path: str, query: dict[str, str]) -> Answer:
        if self.banned:
            return 418, b'{"code":-1003,"msg":"banned"}', {"Retry-After": "600"}
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return 429, b'{"code":-1003,"msg":"Too many requests"}', {"Retry-After": "1"}
        if self.hook is not None:
            answer = self.hook(path, query)
            if answer is not None:
                return answer
        return self.answer(path, query)

    def answer(self, path: str, query: dict[str, str]) -> Answer:
        """What the venue answers (no rate limits, no hook)."""
        rows = (
            self.rows.get(query.get("symbol", ""), []) if isinstance(self.rows, dict) else self.rows
        )
        before = self.available_before_ms
        available = [
            r
            for r in rows
            if r[self.id_field] <= self.available_until
            and (before is None or r[self.time_field] < before)
        ]
        if path == self.path:
            rows, id_field, time_field = available, self.id_field, self.time_field
        elif path == self.agg_path:
            rows, id_field, time_field = self.aggregates(available), "a", "T"
        else:
            return 404, b'{"code":-1,"msg":"no such endpoint"}', {}
        limit = min(int(query.get("limit", "500")), self.max_limit)
        if "fromId" in query:
            rows = [r for r in rows if r[id_field] >= int(query["fromId"])][:limit]
        elif "startTime" in query or "endTime" in query:
            start, end = int(query.get("startTime", 0)), int(query.get("endTime", 1 << 62))
            rows = [r for r in rows if start <= r[time_field] <= end][:limit]
        else:
            rows = rows[-limit:]
        return 200, orjson.dumps(rows), {}

    def aggregates(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Spot trade rows as Binance's aggregate trades."""
        out: list[dict[str, Any]] = []
        for row in rows:
            last = out[-1] if out else None
            same = (row["time"], row["isBuyerMaker"], row["price"])
            if last is not None and (last["T"], last["m"], last["p"]) == same:
                last["q"] = str(Decimal(last["q"]) + Decimal(row["qty"]))
                last["l"] = row["id"]
                continue
            out.append({"a": self.agg_base + len(out), "p": row["price"], "q": row["qty"],
                        "f": row["id"], "l": row["id"], "T": row["time"],
                        "m": row["isBuyerMaker"], "M": True})  # fmt: skip
        return out

    def __enter__(self) -> RestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


class CoinbaseRest(RestServer):
    """``GET /products/{id}/trades?after=N&limit=``: newest first, ids below N (Coinbase's
    cursor), at most ``max_limit`` per page, of the rows (``trade_id``) that exist yet."""

    def answer(self, path: str, query: dict[str, str]) -> Answer:
        if not path.endswith("/trades"):
            return 404, b'{"message":"NotFound"}', {}
        after = int(query["after"]) if "after" in query else 1 << 62
        limit = min(int(query.get("limit", "100")), self.max_limit)
        rows = [
            r for r in self.rows if r["trade_id"] < after and r["trade_id"] <= self.available_until
        ]
        rows.sort(key=lambda r: -r["trade_id"])
        return 200, orjson.dumps(rows[:limit]), {}


def trade_frames(path: Path, limit: int | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """The raw ``@trade`` frames of an hftbacktest capture (``<ns> <json>`` lines, gzip), in
    order, at most ``limit``, and their data objects: what a local Binance server replays."""
    frames: list[str] = []
    data: list[dict[str, Any]] = []
    with gzip.open(path, "rt") as f:
        for line in f:
            _, _, text = line.rstrip("\n").partition(" ")
            obj = orjson.loads(text)
            if obj.get("stream", "").endswith("@trade"):
                frames.append(text)
                data.append(obj["data"])
                if limit is not None and len(frames) == limit:
                    break
    return frames, data
