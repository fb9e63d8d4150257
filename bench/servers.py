"""WebSocket fan-out of the candidate servers for ``candlewax serve``, each against the best
measured in the same run.

For each candidate a server process serves a bare broadcast app on 127.0.0.1 and a separate client
process opens ``--clients`` WebSocket connections to ``/ws``; once all are connected, a control
connection (``/control``) tells the server to broadcast kline events (363 bytes of Binance-style
JSON, the send time in ns and a sequence number inside) to every client, each client having its
own bounded ``asyncio.Queue`` (``--queue``) and writer task (the real gateway's design):

- ``steady``: ``--messages``, one every 1/``--rate`` s (the schedule is absolute; a message finding
  a client's queue full is dropped and counted, as the gateway would);
- ``max``: ``--max-messages`` as fast as the server takes them (the producer yields to the loop
  after each one and waits on a full queue: no drops, the slowest client sets the pace).

A fresh server and client process serve each candidate and mode; a run that passes its share of
``--budget`` stops there, and what was not received counts as lost.

Candidates (one process, one worker each): uvicorn with its ``websockets-sansio``, ``websockets``
(legacy) and ``wsproto`` implementations (httptools, uvloop), granian (ASGI, 1 worker, uvloop), both
serving the Starlette app of :func:`bare_asgi_app`; the ``websockets`` library's own asyncio server
(uvloop) with the same per-client queues (``websockets/queue``) and with its ``broadcast()``
(``websockets/broadcast``: no queue, no backpressure). No compression anywhere (the client offers
none).

Reported per candidate and mode: deliveries/s (messages × clients received, from the first send to
the last receipt), push latency (send time → receipt, both ``time.time_ns()`` on this machine),
server CPU seconds per 100 000 deliveries and cores used (the server's process tree: granian's
worker and its supervisor), server peak RSS (VmHWM, largest process of the tree), the client
process's cores (near 1.0 = the client may be the bottleneck: use ``--client-procs 2``), lost
deliveries (steady mode's drops at a full queue, or never received), and errors: failed sends,
disconnects, connections that failed or closed early, gaps or disorder in a client's sequence.
The ceiling is the candidate with the most deliveries/s in ``max`` mode; every row shows its
deliveries/s ÷ the ceiling's in the same mode.

The client side parses frames itself on asyncio Protocols (``--client-impl raw``, default: a few
µs per message) or uses the ``websockets`` client (``--client-impl websockets``: costlier).

``--probe`` instead answers the slow-client questions for each candidate: the close code and reason
the app sees, whether a send to a client that never reads blocks (and the server's memory), and
whether keepalive pings (0.5 s interval and timeout) close a client that never answers them and
free a sender stuck on it.

    python -m bench.servers                              # 500 clients, all candidates
    python -m bench.servers --clients 1000 --candidates uvicorn/websockets-sansio granian
    python -m bench.servers --probe
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

# name -> (server, uvicorn ws implementation or native fan-out)
CANDIDATES: dict[str, tuple[str, str]] = {
    "uvicorn/websockets-sansio": ("uvicorn", "websockets-sansio"),
    "uvicorn/websockets": ("uvicorn", "websockets"),
    "uvicorn/wsproto": ("uvicorn", "wsproto"),
    "granian": ("granian", ""),
    "websockets/queue": ("websockets", "queue"),
    "websockets/broadcast": ("websockets", "broadcast"),
}

_KLINE = (
    '{"stream":"binance:btcusdt@kline_1m","data":{"e":"kline","E":%d,"s":"BTCUSDT","seq":%d,'
    '"sent_ns":%d,"k":{"t":%d,"T":%d,"s":"BTCUSDT","i":"1m","f":4710321,"L":4710388,'
    '"o":"67012.10","c":"67020.55","h":"67031.00","l":"67001.20","v":"12.48100","n":68,'
    '"x":false,"q":"836443.91","V":"6.20400","Q":"415770.33","B":"0"}}}'
)


def kline_message(seq: int, sent_ns: int | None = None) -> str:
    """A Binance-style kline event (~330 bytes) carrying ``seq`` and its send time in ns."""
    ns = time.time_ns() if sent_ns is None else sent_ns
    ms = ns // 1_000_000
    start = ms - ms % 60_000
    return _KLINE % (ms, seq, ns, start, start + 59_999)


# --- the server side: one hub per server process -------------------------------------------------


class _Client:
    __slots__ = ("close", "conn", "dead", "dropped", "queue", "send", "sent", "task")

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[int, str], Awaitable[None]],
        conn: Any,
    ) -> None:
        self.send = send
        self.close = close
        self.conn = conn  # the native websockets connection (broadcast()), else None
        self.queue: asyncio.Queue[str] | None = None
        self.task: asyncio.Task[None] | None = None
        self.sent = 0
        self.dropped = 0
        self.dead = False


class Hub:
    """The bare broadcaster: connected clients, and the commands of the control connection.

    ``fanout`` is ``queue`` (a bounded queue and a writer task per client, what the gateway does)
    or ``broadcast`` (``websockets.asyncio.server.broadcast``, native server only)."""

    def __init__(self, fanout: str = "queue") -> None:
        self.fanout = fanout
        self.clients: list[_Client] = []
        self.closes: list[tuple[int | None, str | None]] = []
        self.send_errors = 0
        self.disconnects = 0
        self.target: int | None = None  # messages of the run in progress
        self.broadcasting = False

    def add(
        self,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[int, str], Awaitable[None]],
        conn: Any = None,
    ) -> _Client:
        client = _Client(send, close, conn)
        self.clients.append(client)
        return client

    def remove(self, client: _Client, code: int | None = None, reason: str | None = None) -> None:
        self.closes.append((code, reason))
        # a disconnect before the client was sent the whole run
        if (self.target is not None and not client.dead) and (
            self.broadcasting or (self.fanout == "queue" and client.sent < self.target)
        ):
            self.disconnects += 1
        client.dead = True
        if client.task is not None:
            client.task.cancel()
        with contextlib.suppress(ValueError):
            self.clients.remove(client)

    async def command(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req["cmd"]
        if cmd == "run":
            return await self.run(**req["args"])
        if cmd == "flood":
            return await self.flood(**req["args"])
        if cmd == "closes":
            await asyncio.sleep(0.2)
            return {"closes": self.closes}
        raise ValueError(cmd)

    async def _writer(self, client: _Client) -> None:
        queue, send = client.queue, client.send
        assert queue is not None
        try:
            while True:
                message = await queue.get()
                await send(message)
                client.sent += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            self.send_errors += 1
            client.dead = True

    async def run(
        self,
        expect: int,
        messages: int,
        rate: float | None,
        queue: int = 256,
        timeout: float = 15.0,
    ) -> dict[str, Any]:
        """Broadcast ``messages`` to the ``expect`` clients at ``rate`` msgs/s (None: as fast as
        taken); returns once every live client's writer sent them all (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while len(self.clients) < expect and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        clients = list(self.clients)
        native = self.fanout == "broadcast"
        if native:
            from websockets.asyncio.server import broadcast

            conns = [c.conn for c in clients]
        else:
            for c in clients:
                c.queue = asyncio.Queue(queue)
                c.task = asyncio.create_task(self._writer(c))
        self.target = messages
        self.broadcasting = True
        dropped = 0
        t0 = time.time_ns()
        start = time.perf_counter()
        broadcast_n = 0
        for seq in range(messages):
            if time.monotonic() > deadline:
                break  # out of time: the rest counts as lost
            broadcast_n += 1
            if rate is not None:
                delay = start + seq / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            message = kline_message(seq)
            if native:
                broadcast(conns, message)
            else:
                for c in clients:
                    q = c.queue
                    assert q is not None
                    if not q.full():
                        q.put_nowait(message)
                    elif rate is not None:
                        dropped += 1
                        c.dropped += 1
                    elif not c.dead:
                        try:  # max mode: the producer waits for the slowest client
                            await asyncio.wait_for(q.put(message), deadline - time.monotonic())
                        except TimeoutError:
                            dropped += 1
                            c.dropped += 1
            if rate is None:
                await asyncio.sleep(0)
        t1 = time.time_ns()
        self.broadcasting = False
        while time.monotonic() < deadline:
            if native:
                done = all(
                    c.conn.transport is None or c.conn.transport.get_write_buffer_size() == 0
                    for c in clients
                )
            else:
                done = all(c.dead or c.sent + c.dropped >= messages for c in clients)
            if done:
                break
            await asyncio.sleep(0.01)
        self.target = None
        for c in clients:
            if c.task is not None:
                c.task.cancel()
                c.task = None
        return {
            "clients": len(clients),
            "t0_ns": t0,
            "t1_ns": t1,
            "broadcast": broadcast_n,
            "dropped": dropped,
            "send_errors": self.send_errors,
            "disconnects": self.disconnects,
        }

    async def flood(self, seconds: float, limit: int = 300_000) -> dict[str, Any]:
        """Send to the latest client as fast as possible for ``seconds`` (``limit`` messages at
        most), awaiting each send: the sends completed every 0.25 s, the longest single send, how
        long the pending one has been blocked at the end, and the error that ended it, if any.
        Then the app closes the client (1008), waiting 1 s at most; the native server's
        connection is then aborted (``transport.abort()``) if it is not closed."""
        client = self.clients[-1]
        message = kline_message(0)
        state: dict[str, Any] = {"sent": 0, "longest": 0.0, "since": None, "error": None}
        t0 = time.perf_counter()

        async def loop() -> None:
            if self.fanout == "broadcast":
                from websockets.asyncio.server import broadcast
            while state["sent"] < limit:
                began = time.perf_counter()
                state["since"] = began
                try:
                    if self.fanout == "broadcast":
                        broadcast([client.conn], message, raise_exceptions=True)
                    else:
                        await client.send(message)
                except Exception as exc:
                    state["error"] = f"{type(exc).__name__}: {exc} after {began - t0:.2f} s"
                    state["since"] = None
                    return
                state["since"] = None
                state["longest"] = max(state["longest"], time.perf_counter() - began)
                state["sent"] += 1
                if state["sent"] % 64 == 0:
                    await asyncio.sleep(0)  # a send that never suspends must not starve the loop

        task = asyncio.create_task(loop())
        timeline = []
        while time.perf_counter() - t0 < seconds and not task.done():
            await asyncio.sleep(0.25)
            timeline.append(state["sent"])
        since = state["since"]
        blocked = time.perf_counter() - since if since is not None else 0.0
        task.cancel()
        buffered = None
        conn = client.conn
        if conn is not None and conn.transport is not None:
            buffered = conn.transport.get_write_buffer_size()
        began = time.perf_counter()
        try:
            await asyncio.wait_for(client.close(1008, "too slow"), 1.0)
            closing = f"close() returned after {time.perf_counter() - began:.3f} s"
        except TimeoutError:
            closing = "close() still blocked after 1 s"
        except Exception as exc:
            closing = f"close() raised {type(exc).__name__}"
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            conn.transport.abort()
            closing += "; transport.abort()"
        return {
            "close": closing,
            "sent": state["sent"],
            "timeline": timeline,
            "longest_send_s": round(state["longest"], 3),
            "blocked_now_s": round(blocked, 3),
            "error": state["error"],
            "write_buffer": buffered,
        }


def bare_asgi_app(fanout: str = "queue") -> Any:
    """The bare broadcast as a Starlette app: ``/ws`` for clients (a per-client queue and writer
    task), ``/control`` for one JSON command (see :meth:`Hub.command`) answered with JSON."""
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    hub = Hub(fanout)

    async def clients(websocket: WebSocket) -> None:
        await websocket.accept()
        client = hub.add(websocket.send_text, websocket.close)
        code = reason = None
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    code, reason = message.get("code"), message.get("reason")
                    break
        finally:
            hub.remove(client, code, reason)

    async def control(websocket: WebSocket) -> None:
        await websocket.accept()
        result = await hub.command(await websocket.receive_json())
        await websocket.send_text(json.dumps(result))
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/ws", clients), WebSocketRoute("/control", control)])
    app.state.hub = hub
    return app


async def serve_websockets(
    port: int,
    fanout: str = "queue",
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    started: Callable[[], None] | None = None,
) -> None:
    """The bare broadcast on the ``websockets`` library's own asyncio server, until cancelled."""
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    hub = Hub(fanout)

    async def handler(conn: ServerConnection) -> None:
        if conn.request is not None and conn.request.path == "/control":
            result = await hub.command(json.loads(await conn.recv()))
            await conn.send(json.dumps(result))
            return
        client = hub.add(conn.send, conn.close, conn)
        try:
            async for _ in conn:
                pass
        except ConnectionClosed:
            pass
        finally:
            hub.remove(client, conn.close_code, conn.close_reason)

    async with serve(
        handler,
        HOST,
        port,
        compression=None,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        backlog=4096,
    ) as server:
        if started is not None:
            started()
        await server.serve_forever()


def _serve_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.servers _serve")
    parser.add_argument("server", choices=["uvicorn", "websockets"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ws", default="websockets-sansio", help="uvicorn's; native: fan-out")
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument("--ping-timeout", type=float, default=20.0)
    args = parser.parse_args(argv)
    if args.server == "uvicorn":
        import uvicorn

        uvicorn.run(
            bare_asgi_app(),
            host=HOST,
            port=args.port,
            ws=args.ws,
            http="httptools",
            loop="uvloop",
            lifespan="off",
            log_level="warning",
            access_log=False,
            backlog=4096,
            ws_ping_interval=args.ping_interval,
            ws_ping_timeout=args.ping_timeout,
        )
    else:
        import uvloop

        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(serve_websockets(args.port, args.ws, args.ping_interval, args.ping_timeout))
    return 0


def _server_command(candidate: str, port: int, ping: float | None = None) -> list[str]:
    server, impl = CANDIDATES[candidate]
    if server == "granian":
        return [
            sys.executable, "-m", "granian", "--interface", "asgi", "--workers", "1",
            "--loop", "uvloop", "--no-access-log", "--log-level", "warning", "--factory",
            "--backlog", "4096", "--host", HOST, "--port", str(port), "bench.servers:bare_asgi_app",
        ]  # fmt: skip
    cmd = [sys.executable, "-m", "bench.servers", "_serve", server, "--port", str(port)]
    cmd += ["--ws", impl]
    if ping is not None:
        cmd += ["--ping-interval", str(ping), "--ping-timeout", str(ping)]
    return cmd


# --- the client side ------------------------------------------------------------------------------

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_KEY = base64.b64encode(b"candlewax-bench!")


def handshake(port: int, path: str = "/ws") -> bytes:
    """The client's opening handshake (no extension offered)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {_KEY.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def _check_handshake(head: bytes) -> None:
    accept = base64.b64encode(hashlib.sha1(_KEY + _GUID).digest())
    if not head.startswith(b"HTTP/1.1 101") or accept not in head:
        raise ConnectionError(f"handshake refused: {head[:80]!r}")


def client_frame(opcode: int, payload: bytes = b"") -> bytes:
    """One masked client frame (mask 0: the payload stays as it is); payload < 126 bytes."""
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


class FrameReader:
    """Server frames out of a byte stream fed in arbitrary chunks: ``feed`` returns the complete
    frames as (opcode, fin, payload)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bool, bytes]]:
        buf = self.buf
        buf += data
        out = []
        pos, n = 0, len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if b1 & 0x80:
                raise ConnectionError("masked frame from the server")
            size, head = b1 & 0x7F, 2
            if size == 126:
                if n - pos < 4:
                    break
                size, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif size == 127:
                if n - pos < 10:
                    break
                size, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            end = pos + head + size
            if end > n:
                break
            out.append((b0 & 0x0F, bool(b0 & 0x80), bytes(buf[pos + head : end])))
            pos = end
        del buf[:pos]
        return out


class _Tally:
    """One connection's receipts: count, sequence check, latencies (ns), close."""

    __slots__ = ("close", "done", "expected", "first_ns", "last_ns", "lat", "out_of_order", "seq")

    def __init__(self, expected: int, lat: array, done: asyncio.Future[None]) -> None:
        self.expected = expected
        self.lat = lat
        self.done = done
        self.seq = 0  # next expected sequence number = messages received in order
        self.out_of_order = 0
        self.first_ns = 0
        self.last_ns = 0
        self.close: tuple[int, str] | None = None

    def message(self, payload: bytes | str, now: int) -> None:
        data = orjson.loads(payload)["data"]
        if data["seq"] != self.seq:
            self.out_of_order += 1
        self.seq = data["seq"] + 1
        self.lat.append(now - data["sent_ns"])
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now
        if self.seq >= self.expected and not self.done.done():
            self.done.set_result(None)

    def closed(self, code: int | None, reason: str) -> None:
        self.close = (code or 1005, reason)
        if not self.done.done():
            self.done.set_result(None)


class _RawClient(asyncio.Protocol):
    """A WebSocket client on an asyncio Protocol: handshake, frames parsed in ``data_received``,
    pings answered, close recorded."""

    def __init__(self, port: int, tally: _Tally) -> None:
        self.port = port
        self.tally = tally
        self.reader = FrameReader()
        self.head = bytearray()
        self.open: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(handshake(self.port))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        if not self.open.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                _check_handshake(bytes(self.head[:end]))
            except ConnectionError as exc:
                self.open.set_exception(exc)
                return
            self.open.set_result(None)
            data = bytes(self.head[end + 4 :])
        tally = self.tally
        for opcode, _fin, payload in self.reader.feed(data):
            if opcode in (1, 2):
                tally.message(payload, now)
            elif opcode == 9:
                assert self.transport is not None
                self.transport.write(client_frame(10, payload))
            elif opcode == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                tally.closed(code, payload[2:].decode(errors="replace"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.open.done():
            self.open.set_exception(ConnectionError("closed during the handshake"))
        if self.tally.close is None:
            self.tally.closed(1006, "connection lost")

    async def aclose(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(8, close_payload(1000)))
            self.transport.close()


async def _connect_raw(port: int, tally: _Tally) -> Callable[[], Awaitable[None]]:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: _RawClient(port, tally), HOST, port)
    await proto.open
    return proto.aclose


async def _connect_websockets(port: int, tally: _Tally) -> Callable[[], Awaitable[None]]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    ws = await connect(
        f"ws://{HOST}:{port}/ws", compression=None, max_queue=None, ping_interval=None
    )

    async def receive() -> None:
        try:
            async for message in ws:
                tally.message(message, time.time_ns())
        except ConnectionClosed:
            pass
        tally.closed(ws.close_code, ws.close_reason or "")

    task = asyncio.create_task(receive())

    async def aclose() -> None:
        task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 1)

    return aclose


async def _clients(
    port: int, n: int, messages: int, deadline_s: float, impl: str, out: str
) -> None:
    loop = asyncio.get_running_loop()
    connect = _connect_raw if impl == "raw" else _connect_websockets
    lat = array("q")
    tallies = [_Tally(messages, lat, loop.create_future()) for _ in range(n)]
    closers: list[Callable[[], Awaitable[None]]] = []
    gate = asyncio.Semaphore(64)
    connect_errors: list[str] = []

    async def one(tally: _Tally) -> None:
        async with gate:
            try:
                closers.append(await asyncio.wait_for(connect(port, tally), 10))
            except Exception as exc:
                connect_errors.append(f"{type(exc).__name__}: {exc}")
                tally.closed(None, "not connected")

    await asyncio.gather(*(one(t) for t in tallies))
    print("ready", flush=True)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(t.done for t in tallies)), deadline_s)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    result = {
        "clients": n,
        "connect_errors": connect_errors,
        "received": [t.seq if not t.out_of_order else -1 for t in tallies],
        "complete": sum(t.seq == messages and not t.out_of_order for t in tallies),
        "out_of_order": sum(t.out_of_order for t in tallies),
        "closed_early": sum(t.close is not None and t.seq < messages for t in tallies),
        "delivered": len(lat),
        "first_ns": min((t.first_ns for t in tallies if t.first_ns), default=0),
        "last_ns": max(t.last_ns for t in tallies),
        "cpu_s": cpu,
        "wall_s": wall,
    }
    Path(out).write_bytes(orjson.dumps(result))
    Path(out + ".lat").write_bytes(lat.tobytes())
    print("done", flush=True)
    await asyncio.gather(*(c() for c in closers), return_exceptions=True)


def _clients_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.servers _clients")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--deadline", type=float, required=True)
    parser.add_argument("--impl", default="raw", choices=["raw", "websockets"])
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(_clients(args.port, args.clients, args.messages, args.deadline, args.impl, args.out))
    return 0


# --- the orchestrator -----------------------------------------------------------------------------


def _raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its descendants."""
    total = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_busy_s() -> float:
    """CPU seconds all CPUs of the machine were busy so far (Linux /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def tree_peak_rss(pid: int) -> int:
    """The largest VmHWM (bytes) of ``pid``'s tree: the serving process's peak."""
    return max(_status_kib(p, "VmHWM:") for p in _tree(pid)) * 1024


def tree_rss(pid: int) -> int:
    return max(_status_kib(p, "VmRSS:") for p in _tree(pid)) * 1024


class Server:
    """A candidate's server process, up once its port accepts connections; stopped on exit."""

    def __init__(self, candidate: str, ping: float | None = None) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            _server_command(candidate, self.port, ping),
            cwd=ROOT,
            env=env,
            preexec_fn=_raise_nofile,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{candidate} exited with {self.proc.returncode}")
            with socket.socket() as s:
                if s.connect_ex((HOST, self.port)) == 0:
                    break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{candidate} did not listen")
            time.sleep(0.05)
        time.sleep(0.2)  # granian: the worker binds after its supervisor

    def control(self, cmd: str, wait: float = 30.0, **args: Any) -> dict[str, Any]:
        from websockets.sync.client import connect

        with connect(f"ws://{HOST}:{self.port}/control", compression=None, open_timeout=10) as ws:
            ws.send(json.dumps({"cmd": cmd, "args": args}))
            return json.loads(ws.recv(wait))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _readline(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().decode().strip() if ready else ""


def run_case(
    candidate: str,
    mode: str,
    clients: int = 500,
    messages: int = 400,
    rate: float = 100.0,
    queue: int = 256,
    client_procs: int = 1,
    client_impl: str = "raw",
    budget_s: float = 10.0,
) -> dict[str, Any]:
    """One candidate in one mode (``steady`` at ``rate``, or ``max``): a fresh server and
    client process(es); the measured row (see the module's doc)."""
    begin = time.monotonic()
    with Server(candidate) as server, tempfile.TemporaryDirectory() as tmp:
        shares = [
            clients // client_procs + (i < clients % client_procs) for i in range(client_procs)
        ]
        procs = []
        try:
            for i, share in enumerate(shares):
                left = budget_s - (time.monotonic() - begin)
                cmd = [
                    sys.executable, "-m", "bench.servers", "_clients", "--port", str(server.port),
                    "--clients", str(share), "--messages", str(messages),
                    "--deadline", f"{max(left - 2, 1):.1f}", "--impl", client_impl,
                    "--out", f"{tmp}/c{i}.json",
                ]  # fmt: skip
                procs.append(
                    subprocess.Popen(
                        cmd, cwd=ROOT, stdout=subprocess.PIPE, preexec_fn=_raise_nofile
                    )
                )
            for p in procs:
                if _readline(p, 20) != "ready":
                    raise RuntimeError(f"{candidate}: the clients did not connect")
            cpu0 = tree_cpu_s(server.proc.pid)
            busy0 = machine_busy_s()
            clients_cpu0 = sum(tree_cpu_s(p.pid) for p in procs)
            left = budget_s - (time.monotonic() - begin)
            reply = server.control(
                "run",
                wait=max(left - 2, 1) + 15,
                expect=clients,
                messages=messages,
                rate=rate if mode == "steady" else None,
                queue=queue,
                timeout=max(left - 2, 1),
            )
            for p in procs:
                _readline(p, max(budget_s - (time.monotonic() - begin), 2))
            server_cpu = tree_cpu_s(server.proc.pid) - cpu0
            clients_cpu = sum(tree_cpu_s(p.pid) for p in procs) - clients_cpu0
            busy = machine_busy_s() - busy0
            peak = tree_peak_rss(server.proc.pid)
            for p in procs:
                p.wait(10)
            parts = [
                orjson.loads(Path(f"{tmp}/c{i}.json").read_bytes()) for i in range(len(shares))
            ]
            lat = array("q")
            for i in range(len(shares)):
                lat.frombytes(Path(f"{tmp}/c{i}.json.lat").read_bytes())
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    delivered = sum(p["delivered"] for p in parts)
    last = max(p["last_ns"] for p in parts)
    window = max(last - reply["t0_ns"], 1) / 1e9
    ordered = sorted(lat)

    def q_ms(f: float) -> float:
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(f * len(ordered)))] / 1e6

    return {
        "candidate": candidate,
        "mode": mode,
        "clients": clients,
        "messages": messages,
        "rate": rate if mode == "steady" else None,
        "client_impl": client_impl,
        "client_procs": client_procs,
        "delivered": delivered,
        "expected": clients * messages,
        "complete_clients": sum(p["complete"] for p in parts),
        "out_of_order": sum(p["out_of_order"] for p in parts),
        "closed_early": sum(p["closed_early"] for p in parts),
        "connect_errors": sum(len(p["connect_errors"]) for p in parts),
        "received": [r for p in parts for r in p["received"]],
        "broadcast": reply["broadcast"],
        "send_rate": reply["broadcast"] / max((reply["t1_ns"] - reply["t0_ns"]) / 1e9, 1e-9),
        "deliveries_per_s": delivered / window,
        "p50_ms": q_ms(0.5),
        "p99_ms": q_ms(0.99),
        "max_ms": ordered[-1] / 1e6 if ordered else float("nan"),
        "server_cpu_s": server_cpu,
        "server_cpu_per_100k": server_cpu / max(delivered, 1) * 1e5,
        "server_cores": server_cpu / window,
        "server_peak_rss_mib": peak / 2**20,
        "client_cores": max(p["cpu_s"] / max(p["wall_s"], 1e-9) for p in parts),
        # the machine's busy CPU besides this server and its clients: other work on the machine
        "other_cores": max(busy - server_cpu - clients_cpu, 0.0) / window,
        "dropped": reply["dropped"],
        "send_errors": reply["send_errors"],
        "disconnects": reply["disconnects"],
        "lost": clients * messages - delivered,
        "errors": reply["send_errors"]
        + reply["disconnects"]
        + sum(p["closed_early"] + p["out_of_order"] + len(p["connect_errors"]) for p in parts),
    }


def print_table(rows: list[dict[str, Any]]) -> str | None:
    """The table; returns the ceiling: the candidate with the most deliveries/s in ``max`` mode
    (else in any mode). Each row's ``÷ceil`` is its deliveries/s ÷ the ceiling's in the same
    mode."""
    pool = [r for r in rows if r["mode"] == "max"] or rows
    ceiling = max(pool, key=lambda r: r["deliveries_per_s"])["candidate"] if pool else None
    best = {r["mode"]: r["deliveries_per_s"] for r in rows if r["candidate"] == ceiling}
    print(
        f"{'candidate':<26} {'mode':>6} {'deliv/s':>9} {'÷ceil':>6} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'CPU s/100k':>10} {'srv cores':>9} {'RSS MiB':>7} {'cli cores':>9} "
        f"{'other':>5} {'lost':>6} {'errors':>6}"
    )
    for r in rows:
        ratio = r["deliveries_per_s"] / best[r["mode"]] if r["mode"] in best else float("nan")
        print(
            f"{r['candidate']:<26} {r['mode']:>6} {r['deliveries_per_s']:>9,.0f} {ratio:>6.2f} "
            f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['max_ms']:>7.1f} "
            f"{r['server_cpu_per_100k']:>10.2f} {r['server_cores']:>9.2f} "
            f"{r['server_peak_rss_mib']:>7.1f} {r['client_cores']:>9.2f} "
            f"{r['other_cores']:>5.2f} {r['lost']:>6} "
            f"{r['errors']:>6}",
            flush=True,
        )
    if ceiling is not None:
        print(f"ceiling: {ceiling} (÷ceil: deliveries/s ÷ the ceiling's in the same mode)")
    return ceiling


# --- the slow-client probes -----------------------------------------------------------------------


def _raw_socket(port: int, rcvbuf: int | None = None) -> tuple[socket.socket, FrameReader, list]:
    """A blocking client connection past the handshake, its reader and the frames already read."""
    s = socket.socket()
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect((HOST, port))
    s.sendall(handshake(port))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    end = head.index(b"\r\n\r\n")
    _check_handshake(head[:end])
    reader = FrameReader()
    return s, reader, reader.feed(head[end + 4 :])


def _read_frames(
    s: socket.socket, reader: FrameReader, seconds: float
) -> tuple[list, float | None]:
    """Frames read for ``seconds`` (never answering a ping), and when the peer closed (s)."""
    frames, t0 = [], time.monotonic()
    while (left := seconds - (time.monotonic() - t0)) > 0:
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        except OSError:
            return frames, time.monotonic() - t0
        if not chunk:
            return frames, time.monotonic() - t0
        frames += reader.feed(chunk)
    return frames, None


def _flood(server: Server, seconds: float) -> dict[str, Any]:
    """A client that never reads (4 KiB receive buffer) flooded for ``seconds``: the hub's
    report and the server's RSS before and at the end."""
    s, _, _ = _raw_socket(server.port, rcvbuf=4096)
    try:
        time.sleep(0.2)
        rss0 = tree_rss(server.proc.pid)
        report = server.control("flood", wait=seconds + 10, seconds=seconds)
        report["rss_before_mib"] = round(rss0 / 2**20, 1)
        report["rss_after_mib"] = round(tree_rss(server.proc.pid) / 2**20, 1)
        report["rss_peak_mib"] = round(tree_peak_rss(server.proc.pid) / 2**20, 1)
        report["client_then_reads"] = _drain(s, 2.0)
    finally:
        s.close()
    return report


def _drain(s: socket.socket, seconds: float) -> str:
    """Reads everything for ``seconds``: how the connection ended (EOF, reset) or that it is
    still open, and the bytes read."""
    got, t0 = 0, time.monotonic()
    while (left := seconds - (time.monotonic() - t0)) > 0:
        s.settimeout(left)
        try:
            chunk = s.recv(1 << 20)
        except TimeoutError:
            break
        except ConnectionResetError:
            return f"reset after {got / 2**20:.1f} MiB"
        if not chunk:
            return f"EOF after {got / 2**20:.1f} MiB"
        got += len(chunk)
    return f"still open after {got / 2**20:.1f} MiB"


def probe(candidate: str, seconds: float = 3.0) -> dict[str, Any]:
    """Close code/reason as the app sees it, a flood of a client that never reads, and (where the
    server has them) keepalive pings of 0.5 s against a client that never answers them."""
    out: dict[str, Any] = {"candidate": candidate}
    with Server(candidate) as server:
        s, reader, _ = _raw_socket(server.port)
        s.sendall(client_frame(8, close_payload(4001, "bye-reason")))
        frames, _ = _read_frames(s, reader, 1.0)
        s.close()
        echo = [f for f in frames if f[0] == 8]
        out["close_echo"] = (
            (struct.unpack("!H", echo[0][2][:2])[0], echo[0][2][2:].decode()) if echo else None
        )
        out["close_seen_by_app"] = server.control("closes")["closes"]
        out["flood"] = _flood(server, seconds)
    if CANDIDATES[candidate][0] == "granian":
        out["ping"] = "granian has no WebSocket ping setting"
        return out
    with Server(candidate, ping=0.5) as server:
        s, reader, _ = _raw_socket(server.port)
        frames, closed_after = _read_frames(s, reader, seconds)
        s.close()
        close = [f for f in frames if f[0] == 8]
        out["ping"] = {
            "pings_seen": sum(f[0] == 9 for f in frames),
            "close": (struct.unpack("!H", close[0][2][:2])[0], close[0][2][2:].decode())
            if close
            else None,
            "eof_after_s": round(closed_after, 2) if closed_after is not None else None,
        }
        out["flood_with_ping"] = _flood(server, seconds + 2)
    return out


def print_probe(r: dict[str, Any]) -> None:
    def flood(f: dict[str, Any]) -> str:
        if f["blocked_now_s"]:
            sends = f"{f['sent']} sends, then send() blocked {f['blocked_now_s']:.1f} s"
        else:
            sends = f"{f['sent']} sends, none blocked (longest {f['longest_send_s']} s)"
        if f["error"]:
            sends += f", then {f['error']}"
        buffered = (
            f", write buffer {f['write_buffer'] / 1024:,.0f} KiB" if f["write_buffer"] else ""
        )
        return (
            f"{sends}{buffered}; RSS {f['rss_before_mib']} → {f['rss_after_mib']} MiB (peak "
            f"{f['rss_peak_mib']}); app {f['close']}; client then reads: {f['client_then_reads']}"
        )

    print(r["candidate"])
    print(f"  client closes 4001 'bye-reason': app sees {r['close_seen_by_app']}")
    print(f"  client never reads: {flood(r['flood'])}")
    ping = r["ping"]
    if isinstance(ping, str):
        print(f"  pings: {ping}")
    else:
        print(
            f"  pings 0.5 s / timeout 0.5 s, client never answers: {ping['pings_seen']} ping(s), "
            f"close {ping['close']}, EOF after {ping['eof_after_s']} s"
        )
        print(f"  same pings, client never reads: {flood(r['flood_with_ping'])}")
    sys.stdout.flush()


# --- entry ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_serve"]:
        return _serve_main(argv[1:])
    if argv[:1] == ["_clients"]:
        return _clients_main(argv[1:])
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=CANDIDATES)
    parser.add_argument("--modes", nargs="+", default=["steady", "max"], choices=["steady", "max"])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--messages", type=int, default=200, help="to every client, steady mode")
    parser.add_argument("--max-messages", type=int, default=200, help="to every client, max mode")
    parser.add_argument("--rate", type=float, default=50.0, help="steady msgs/s to every client")
    parser.add_argument("--queue", type=int, default=256, help="each client's queue bound")
    parser.add_argument("--client-procs", type=int, default=1)
    parser.add_argument("--client-impl", default="raw", choices=["raw", "websockets"])
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per candidate, at most")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (median row shown)")
    parser.add_argument("--probe", action="store_true", help="the slow-client probes instead")
    parser.add_argument("--no-save", action="store_true", help="write no bench/results file")
    args = parser.parse_args(argv)
    if args.probe:
        results: list[dict[str, Any]] = []
        for candidate in args.candidates:
            result = probe(candidate)
            results.append(result)
            print_probe(result)
        if not args.no_save:
            from bench.throughput import save_results

            save_results("servers-probe", {"args": vars(args), "results": results})
        return 0
    print(
        f"{args.clients} clients, messages of {len(kline_message(0))} bytes: steady "
        f"{args.messages} at {args.rate:g}/s, max {args.max_messages}; queue {args.queue}, "
        f"{args.client_procs} client process(es), {args.client_impl} client, {os.cpu_count()} "
        f"CPUs, load {os.getloadavg()[0]:.2f}"
    )
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(args.repeat):  # rounds over all candidates: load changes hit them alike
        for candidate in args.candidates:
            for mode in args.modes:
                row = run_case(
                    candidate,
                    mode,
                    args.clients,
                    args.messages if mode == "steady" else args.max_messages,
                    args.rate,
                    args.queue,
                    args.client_procs,
                    args.client_impl,
                    args.budget / len(args.modes) / args.repeat,
                )
                runs.setdefault((candidate, mode), []).append(row)
                print(
                    f"  {candidate} {mode}: {row['deliveries_per_s']:,.0f} deliveries/s",
                    file=sys.stderr,
                    flush=True,
                )
    rows = []
    for same in runs.values():  # the run of median deliveries/s
        rows.append(sorted(same, key=lambda r: r["deliveries_per_s"])[(len(same) - 1) // 2])
    ceiling = print_table(rows)
    if not args.no_save:
        from bench.throughput import save_results

        for same in runs.values():
            for r in same:
                r.pop("received", None)
        every = [r for same in runs.values() for r in same]
        result = {"args": vars(args), "results": rows, "runs": every, "ceiling": ceiling}
        save_results("servers", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
