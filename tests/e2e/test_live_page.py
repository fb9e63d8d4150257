"""The live chart page (sinks/gateway/static/index.html + chart.js) in headless Chromium against
a stand-in for the gateway that speaks the gateway's contract (markets, klines, alerts, the
combined /stream socket with SUBSCRIBE/UNSUBSCRIBE): history drawn, a live update changes the
last candle, a live alert makes a marker, a dropped socket comes back and the history is read
again, the symbol picker re-subscribes on the same socket. The real gateway and pipeline are
tested with the same driver in tests/integration/test_gateway*."""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.e2e.charts import LiveChartCheck

pytestmark = pytest.mark.e2e
STATIC = Path(__file__).resolve().parents[2] / "sinks" / "gateway" / "static"
T0 = 1_723_161_600_000
SYMBOLS = {"BTCUSDT": "61000.5", "ETHUSDT": "2600.25"}


def kline(start: int, base: str, i: int) -> list[Any]:
    o = float(base) + (i % 7) - 3
    c = o + (1.5 if i % 3 else -2.25)
    hi, lo = max(o, c) + 0.5, min(o, c) - 0.75
    return [start, f"{o:.2f}", f"{hi:.2f}", f"{lo:.2f}", f"{c:.2f}", "1.50000000",
            start + 59_999, "91500.75", 10 + i, "0.70000000", "42700.35", "0"]  # fmt: skip


def alert(symbol: str, start: int, n: int) -> dict[str, Any]:
    return {
        "id": f"{symbol}-{n}", "rule": "range", "venue": "binance", "symbol": symbol,
        "interval": "1m", "window_start_ms": start, "ts_ms": start + 1234,
        "value": "0.00123456", "threshold": "0.001", "price": "61000.5",
        "severity": "warning", "text": f"{symbol} 1m range <b>{n}</b>", "v": 1,
    }  # fmt: skip


class FakeGateway:
    """The gateway's HTTP and WebSocket contract, in memory, on a thread of its own."""

    def __init__(self) -> None:
        self.history = {
            s: [kline(T0 + i * 60_000, base, i) for i in range(40)] for s, base in SYMBOLS.items()
        }
        self.alerts = [alert("BTCUSDT", T0 + 10 * 60_000, 1)]
        self.requests: list[str] = []
        self.sockets: dict[ServerConnection, set[str]] = {}
        self.opened = 0
        self.methods: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.server: Server | None = None
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.server = await serve(self._socket, "127.0.0.1", 0, process_request=self._http)
            started.set()
            await self.server.serve_forever()

        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(main())

    @property
    def url(self) -> str:
        assert self.server is not None
        port = next(iter(self.server.sockets)).getsockname()[1]
        return f"http://127.0.0.1:{port}/"

    def _reply(self, status: int, body: bytes, kind: str) -> Response:
        headers = Headers([("Content-Type", kind), ("Content-Length", str(len(body)))])
        return Response(status, "OK" if status == 200 else "Not Found", headers, body)

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        self.requests.append(request.path)
        if parts.path == "/stream":
            return None  # the WebSocket
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/":
            return self._reply(200, (STATIC / "index.html").read_bytes(), "text/html")
        if parts.path.startswith("/static/"):
            file = STATIC / parts.path.removeprefix("/static/")
            if file.resolve().is_relative_to(STATIC) and file.is_file():
                kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                return self._reply(200, file.read_bytes(), kind)
        if parts.path == "/api/v1/markets":
            body = {
                "default_venue": "binance",
                "intervals": ["1m", "5m", "15m", "30m", "1h", "1d"],
                "symbols": [{"venue": "binance", "symbol": s} for s in SYMBOLS],
            }
            return self._reply(200, orjson.dumps(body), "application/json")
        if parts.path == "/api/v3/klines":
            symbol = q["symbol"].partition(":")[2]
            rows = self.history[symbol][-int(q.get("limit", 500)) :]
            return self._reply(200, orjson.dumps(rows), "application/json")
        if parts.path == "/api/v1/alerts":
            symbol = q["symbol"].partition(":")[2]
            mine = [a for a in self.alerts if a["symbol"] == symbol and a["ts_ms"] >= int(q["since"])]  # fmt: skip
            return self._reply(200, orjson.dumps(mine), "application/json")
        return self._reply(404, b"not found", "text/plain")

    async def _socket(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        names = parse_qs(urlsplit(ws.request.path).query).get("streams", [""])[0]
        self.sockets[ws] = {n for n in names.split("/") if n}
        self.opened += 1
        try:
            async for raw in ws:
                msg = orjson.loads(raw)
                self.methods.append(msg)
                subs = self.sockets[ws]
                if msg["method"] == "SUBSCRIBE":
                    subs.update(msg["params"])
                elif msg["method"] == "UNSUBSCRIBE":
                    subs.difference_update(msg["params"])
                await ws.send(orjson.dumps({"result": None, "id": msg["id"]}).decode())
        except ConnectionClosed:
            pass
        finally:
            self.sockets.pop(ws, None)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def push(self, stream: str, data: dict[str, Any]) -> int:
        """Send to every socket subscribed to ``stream``; how many got it."""

        async def send() -> int:
            text = orjson.dumps({"stream": stream, "data": data}).decode()
            targets = [ws for ws, subs in self.sockets.items() if stream in subs]
            for ws in targets:
                await ws.send(text)
            return len(targets)

        sent: int = self._call(send())
        return sent

    def drop(self) -> None:
        async def close() -> None:
            for ws in list(self.sockets):
                await ws.close(1012, "restart")

        self._call(close())

    def wait(self, what: Any, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.server is not None:
            self.loop.call_soon_threadsafe(self.server.close)
        self.thread.join(10)


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    fake = FakeGateway()
    yield fake
    fake.stop()


def kline_event(row: list[Any], close: str, final: bool) -> dict[str, Any]:
    start = row[0]
    return {
        "e": "kline", "E": start + 30_000, "s": "BTCUSDT", "venue": "binance",
        "k": {"t": start, "T": start + 59_999, "s": "BTCUSDT", "i": "1m", "f": 1, "L": 2,
              "o": row[1], "c": close, "h": max(row[2], close, key=float), "l": row[3],
              "v": "2.00000000", "n": 12, "x": final, "q": "1", "V": "1", "Q": "1", "B": "0"},
    }  # fmt: skip


def test_history_live_updates_alerts_reconnects_and_the_picker(gateway: FakeGateway) -> None:
    url = gateway.url + "#symbol=binance:BTCUSDT&interval=1m"
    with LiveChartCheck(url, "--timeout", "60", "--switch-to", "binance:ETHUSDT") as check:
        ready = check.ready()
        assert ready["event"] == "ready" and ready["ok"], ready
        assert ready["candles"] == 40 and ready["markers"] == 1
        assert ready["marker_ids"] == ["BTCUSDT-1"]
        last = gateway.history["BTCUSDT"][-1]
        assert ready["last"]["time"] == last[0] and ready["last"]["close"] == last[4]
        assert ready["state"]["connected"] and gateway.opened == 1
        assert gateway.sockets and next(iter(gateway.sockets.values())) == {
            "binance:btcusdt@kline_1m",
            "binance:btcusdt@alert",
        }

        # The socket drops: the page comes back by itself and reads the history again.
        klines_before = sum(p.startswith("/api/v3/klines") for p in gateway.requests)
        gateway.drop()
        gateway.wait(lambda: gateway.opened == 2 and len(gateway.sockets) == 1)
        gateway.wait(lambda: sum(p.startswith("/api/v3/klines") for p in gateway.requests) > klines_before)  # fmt: skip

        # A live update of the last bar, a new bar, and an alert on it.
        new_start = last[0] + 60_000
        assert gateway.push("binance:btcusdt@kline_1m", kline_event(last, "61234.56", True)) == 1
        gateway.push("binance:btcusdt@kline_1m", kline_event([new_start, *last[1:]], "61240.00", False))  # fmt: skip
        gateway.push("binance:btcusdt@alert", {"e": "alert", "E": 1, **alert("BTCUSDT", new_start, 2)})  # fmt: skip
        done = check.done()

    assert done["ok"], done["problems"]
    assert not done["errors"] and not done["external_requests"]
    assert done["waited"] == {"update": True, "alert": True} and done["last_changed"]
    after = done["after"]
    assert after["candles"] == 41 and after["last"]["time"] == new_start
    assert after["last"]["close"] == "61240.00"  # exact strings from the socket
    assert sorted(after["marker_ids"]) == ["BTCUSDT-1", "BTCUSDT-2"]
    assert new_start in after["marker_times"]
    # The picker changed the subscriptions on the same socket, and drew the other symbol.
    assert gateway.opened == 2
    methods = [(m["method"], m["params"]) for m in gateway.methods]
    assert ("UNSUBSCRIBE", ["binance:btcusdt@kline_1m", "binance:btcusdt@alert"]) in methods
    assert ("SUBSCRIBE", ["binance:ethusdt@kline_1m", "binance:ethusdt@alert"]) in methods
    switched = done["switched"]
    assert switched["changed"] and switched["candles"] == 40 and switched["markers"] == 0
    assert switched["last"]["close"] == gateway.history["ETHUSDT"][-1][4]
    assert done["attribution"]["link"] and done["pixels"]["colors"] > 10
