"""The gateway's fan-out, end to end, against a bare broadcast by the same server in the same run.

A steady synthetic market (``--rate`` trades/s over ``--symbols`` symbols, each trade's ``ts_ms``
its produce time) goes to the embedded broker; ``candlewax serve`` runs as its own process; a
separate client process opens ``--clients`` WebSocket connections, each subscribed to two
symbols' ``@kline_1m`` and one symbol's ``@trade`` (combined streams). Reported:

- push latency of trades, from the trade's produce time (≈ its Kafka timestamp) to receipt at the
  client (p50 / p99 / max; one clock, this machine's);
- messages/s delivered (frames; trades merged into one frame by a client that falls behind
  count once) and trade events/s;
- the gateway's CPU seconds per 100 000 messages, its cores and peak RSS.

The ceiling: :mod:`bench.servers`' bare broadcast on the chosen server (uvicorn, websockets-sansio,
per-client queues, no candlewax logic) to the same number of clients at the same messages/s per
client. The ratio printed is ceiling CPU per message ÷ gateway CPU per message (1.0: the gateway's
own logic costs nothing), with both latencies side by side.

    python -m bench.gateway                    # 1000 clients, 50 symbols, 500 trades/s, 20 s
    python -m bench.gateway --clients 200 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
from confluent_kafka import Consumer, TopicPartition

from bench.servers import (
    ROOT,
    FrameReader,
    _check_handshake,
    _raise_nofile,
    client_frame,
    free_port,
    handshake,
    run_case,
    tree_cpu_s,
    tree_peak_rss,
)
from bench.throughput import add_broker_arguments, start_broker
from candlewax.codec import Trade
from candlewax.kafka import consumer_config
from candlewax.settings import Settings
from candlewax.topics import ensure_topics
from connectors.producer import TradeProducer

VENUE = "bench"


def _symbol(i: int) -> str:
    return f"S{i:04d}USDT"


# --------------------------------------------------------------------------- clients (own process)


class _Client(asyncio.Protocol):
    def __init__(self, port: int, path: str, out: dict[str, Any], lat: array) -> None:
        self.port, self.path, self.out, self.lat = port, path, out, lat
        self.reader = FrameReader()
        self.head = bytearray()
        self.open: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(handshake(self.port, self.path))  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.open.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            _check_handshake(bytes(self.head[:end]))
            self.open.set_result(None)
            data = bytes(self.head[end + 4 :])
        now_ms = time.time() * 1000
        for opcode, _fin, payload in self.reader.feed(data):
            if opcode == 0x9:  # ping
                assert self.transport is not None
                self.transport.write(client_frame(0xA, payload))
                continue
            if opcode == 0x8:
                self.out["closed"] += 1
                continue
            message = orjson.loads(payload)
            self.out["messages"] += 1
            data_ = message.get("data")
            events = data_ if isinstance(data_, list) else [data_]
            for event in events:
                if isinstance(event, dict) and event.get("e") == "trade":
                    self.out["trades"] += 1
                    self.lat.append(int((now_ms - event["T"]) * 1000))  # µs

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.open.done():
            self.open.set_exception(ConnectionError("closed before the handshake"))


async def _clients(port: int, clients: int, symbols: int, seconds: float, out_path: str) -> None:
    loop = asyncio.get_running_loop()
    out = {"messages": 0, "trades": 0, "closed": 0}
    lat = array("q")
    conns = []
    for i in range(clients):
        a, b = _symbol(i % symbols).lower(), _symbol((i + 1) % symbols).lower()
        path = f"/stream?streams={VENUE}:{a}@kline_1m/{VENUE}:{b}@kline_1m/{VENUE}:{a}@trade"
        _, proto = await loop.create_connection(lambda p=path: _Client(port, p, out, lat), "127.0.0.1", port)  # fmt: skip
        await proto.open
        conns.append(proto)
    print("ready", flush=True)
    # The market runs; "measure" starts the window (read off the loop: the sockets keep reading).
    await loop.run_in_executor(None, sys.stdin.readline)
    out0 = dict(out)
    lat_start = len(lat)
    t0, cpu0 = time.monotonic(), time.process_time()
    await asyncio.sleep(seconds)
    window = time.monotonic() - t0
    result = {
        "messages": out["messages"] - out0["messages"],
        "trades": out["trades"] - out0["trades"],
        "closed": out["closed"],
        "window_s": window,
        "client_cores": (time.process_time() - cpu0) / window,
    }
    Path(out_path).write_bytes(orjson.dumps(result))
    Path(out_path + ".lat").write_bytes(lat[lat_start:].tobytes())
    for c in conns:
        if c.transport is not None:
            c.transport.close()


def _clients_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.gateway _clients")
    for name in ("--port", "--clients", "--symbols"):
        p.add_argument(name, type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    import uvloop

    uvloop.run(_clients(a.port, a.clients, a.symbols, a.seconds, a.out))
    return 0


# --------------------------------------------------------------------------- the run


def _market(settings: Settings, symbols: int, rate: float, stop_at: float) -> int:
    """Trades at ``rate``/s, round-robin over the symbols, ts_ms = now; returns how many."""
    sent, seq, start = 0, 0, time.monotonic()
    with TradeProducer(settings.connection, settings.topic("trades")) as producer:
        while (now := time.monotonic()) < stop_at:
            due = int((now - start) * rate) - sent
            if due > 0:
                ts = int(time.time() * 1000)
                batch = []
                for _ in range(due):
                    seq += 1
                    batch.append(Trade(VENUE, _symbol(seq % symbols), str(seq), "100.5", "0.01", "buy" if seq % 2 else "sell", ts, ts))  # fmt: skip
                producer.send(batch)
                sent += due
            time.sleep(0.005)
    return sent


def _broker_hop(settings: Settings, stop: threading.Event, out: list[float]) -> None:
    """A bare consumer of ``trades`` beside the gateway: produce time → receipt (the broker's
    share of the push latency, measured in the same run)."""
    conf = consumer_config(settings.connection, f"bench-hop-{uuid.uuid4().hex[:8]}")
    conf["enable.partition.eof"] = False
    consumer = Consumer(conf)
    topic = settings.topic("trades")
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    try:
        while not stop.is_set():
            for m in consumer.consume(1000, 0.02):
                if m.error() is None:
                    out.append(time.time() * 1000 - orjson.loads(m.value() or b"{}")["ts_ms"])
    finally:
        consumer.close()


def gateway_run(args: argparse.Namespace, bootstrap: str, data_dir: str) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    settings = Settings(bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=4, retention_ms=-1)  # fmt: skip
    ensure_topics(settings)
    port = free_port()
    env = {
        **os.environ,
        "CANDLEWAX_BOOTSTRAP_SERVERS": bootstrap,
        "CANDLEWAX_TOPIC_PREFIX": prefix,
        "CANDLEWAX_DATA_DIR": data_dir,
        "CANDLEWAX_GATEWAY__PORT": str(port),
        "CANDLEWAX_GATEWAY__DEFAULT_VENUE": VENUE,
        "CANDLEWAX_GATEWAY__MAX_CONNECTIONS": str(args.clients + 10),
    }
    serve = subprocess.Popen([sys.executable, "-m", "candlewax.cli", "serve"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, preexec_fn=_raise_nofile)  # fmt: skip
    clients = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or serve.poll() is not None:
                raise RuntimeError("candlewax serve did not become healthy")
            time.sleep(0.1)
        with tempfile.TemporaryDirectory() as tmp:
            out = f"{tmp}/clients.json"
            cmd = [sys.executable, "-m", "bench.gateway", "_clients", "--port", str(port),
                   "--clients", str(args.clients), "--symbols", str(args.symbols),
                   "--seconds", str(args.seconds), "--out", out]  # fmt: skip
            clients = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=_raise_nofile)  # fmt: skip
            assert clients.stdout is not None and clients.stdin is not None
            if clients.stdout.readline().strip() != "ready":
                raise RuntimeError("the clients did not connect")
            warm = 3.0
            hop: list[float] = []
            hop_stop = threading.Event()
            hop_thread = threading.Thread(target=_broker_hop, args=(settings, hop_stop, hop))
            hop_thread.start()
            market_end = time.monotonic() + warm + args.seconds + 1
            market = threading.Thread(target=_market, args=(settings, args.symbols, args.rate, market_end))  # fmt: skip
            market.start()
            time.sleep(warm)  # the forming bars exist, the first pushes went out
            cpu0 = tree_cpu_s(serve.pid)
            clients.stdin.write("measure\n")
            clients.stdin.flush()
            hop_from = len(hop)
            clients.wait(args.seconds + 60)
            hop_to = len(hop)
            cpu = tree_cpu_s(serve.pid) - cpu0
            peak = tree_peak_rss(serve.pid) / 2**20
            own = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            market.join()
            hop_stop.set()
            hop_thread.join()
            broker_hop = sorted(hop[hop_from:hop_to])
            result = orjson.loads(Path(out).read_bytes())
            lat = sorted(array("q", Path(out + ".lat").read_bytes()))
    finally:
        for proc in (clients, serve):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    window = result["window_s"]

    def q(f: float) -> float:
        return lat[min(len(lat) - 1, int(f * len(lat)))] / 1000 if lat else float("nan")

    return {
        "messages_per_s": result["messages"] / window,
        "trades_per_s": result["trades"] / window,
        "p50_ms": q(0.5),
        "p99_ms": q(0.99),
        "max_ms": lat[-1] / 1000 if lat else float("nan"),
        "cpu_per_100k": cpu / max(result["messages"], 1) * 1e5,
        "cores": cpu / window,
        "peak_rss_mib": peak,
        "p90_ms": q(0.9),
        "hop": [
            broker_hop[min(len(broker_hop) - 1, int(f * len(broker_hop)))] for f in (0.5, 0.9, 0.99)
        ]
        if broker_hop
        else [],
        "client_cores": result["client_cores"],
        "closed": result["closed"],
        "own": _histogram(own, "candlewax_gateway_push_seconds", 'kind="trade"'),
    }


def _histogram(text: str, name: str, label: str) -> dict[str, float]:
    """A histogram's cumulative buckets (le → count) from an exposition."""
    out = {}
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{") and label in line:
            le = line.split('le="')[1].split('"')[0]
            out[le] = float(line.rsplit(" ", 1)[1])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_clients"]:
        return _clients_main(argv[1:])
    p = argparse.ArgumentParser(prog="bench.gateway", description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--symbols", type=int, default=50)
    p.add_argument("--rate", type=float, default=500.0, help="trades/s into the market")
    p.add_argument("--seconds", type=float, default=20.0)
    add_broker_arguments(p)
    args = p.parse_args(argv)
    broker, bootstrap = start_broker(args)
    try:
        with tempfile.TemporaryDirectory() as data:
            g = gateway_run(args, bootstrap, data)
    finally:
        if broker is not None:
            broker.stop()
    per_client = g["messages_per_s"] / args.clients
    bare = run_case(
        "uvicorn/websockets-sansio",
        "steady",
        clients=args.clients,
        messages=max(int(per_client * args.seconds), 10),
        rate=max(per_client, 1.0),
        budget_s=args.seconds + 30,
    )
    ratio = bare["server_cpu_per_100k"] / g["cpu_per_100k"]
    print(f"gateway fan-out: {args.clients} clients, {args.symbols} symbols, {args.rate:g} trades/s, {args.seconds:g} s")  # fmt: skip
    print("| | messages/s | trade events/s | push p50 / p99 / max ms | CPU s / 100k msgs | cores | peak RSS MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    print(f"| candlewax serve | {g['messages_per_s']:,.0f} | {g['trades_per_s']:,.0f} | {g['p50_ms']:.1f} / {g['p99_ms']:.1f} / {g['max_ms']:.1f} | {g['cpu_per_100k']:.2f} | {g['cores']:.2f} | {g['peak_rss_mib']:.0f} |")  # fmt: skip
    print(f"| bare broadcast (uvicorn, ceiling) | {bare['deliveries_per_s']:,.0f} | – | {bare['p50_ms']:.1f} / {bare['p99_ms']:.1f} / {bare['max_ms']:.1f} | {bare['server_cpu_per_100k']:.2f} | {bare['server_cores']:.2f} | {bare['server_peak_rss_mib']:.0f} |")  # fmt: skip
    own = g["own"]
    total = own.get("+Inf", 0) or 1
    print("gateway's own push histogram (Kafka timestamp → written to the socket), share within: " + ", ".join(f"{le} s {n / total:.0%}" for le, n in own.items() if le != "+Inf"))  # fmt: skip
    hop = " / ".join(f"{x:.1f}" for x in g["hop"])
    print(f"gateway push p90: {g['p90_ms']:.1f} ms; the broker hop alone (a bare consumer of trades in the same run) p50 / p90 / p99: {hop} ms")  # fmt: skip
    print(f"ratio (ceiling CPU per message ÷ gateway CPU per message): {ratio:.2f}; client process at {g['client_cores']:.2f} cores; closed by the gateway: {g['closed']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
