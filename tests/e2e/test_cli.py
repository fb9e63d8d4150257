"""The candlewax command as a user runs it (subprocesses, real broker, real files)."""

from __future__ import annotations

import gzip
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from functools import cache
from pathlib import Path

import orjson
import polars as pl
import pytest
import websockets.sync.client

from candlewax.broker import EmbeddedBroker
from candlewax.codec import Trade
from connectors.replay import iter_file
from tests.conftest import BTCUSDT_GZ, ENGINES
from tests.reference import as_decimals, reference_bars, reference_range_alerts
from tests.tools import promtool_check_metrics

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "candlewax.cli"]
ROOT = Path(__file__).resolve().parents[2]
T0 = 1_723_161_240_000


@cache
def btcusdt() -> tuple[Trade, ...]:
    return tuple(t for item in iter_file(BTCUSDT_GZ) for t in item.trades)


def run(
    *args: str, timeout: float = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("CANDLEWAX_BOOTSTRAP_SERVERS", None) if env is None else None
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=full_env
    )


def readme_replay() -> list[str]:
    """The README's replay example, as a user types it from the repository's root."""
    (line,) = [
        line
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith(".venv/bin/candlewax demo --replay ")
    ]
    return shlex.split(line)[1:]


def test_the_shipped_example_is_the_trades_of_the_hftbacktest_capture() -> None:
    """examples/ holds the capture's trade lines byte for byte, in order, with its licence."""
    args = readme_replay()
    example = ROOT / args[args.index("--replay") + 1]
    assert example.parent == ROOT / "examples"
    with gzip.open(BTCUSDT_GZ, "rb") as f:
        wanted = [line for line in f if b'"stream":"btcusdt@trade"' in line]
    with gzip.open(example, "rb") as f:
        assert f.read().splitlines(keepends=True) == wanted
    assert len(wanted) == 9757
    licence = (BTCUSDT_GZ.parent / "LICENSE").read_text()
    assert (ROOT / "examples" / "LICENSE-hftbacktest").read_text() == licence


@pytest.mark.parametrize("engine", ENGINES)
def test_demo_replay_exits_when_done_with_exact_binance_bars(engine: str, tmp_path: Path) -> None:
    """The README's replay example, run as written (from the repository, on its shipped
    example), gives the 1m bars Binance published for those minutes."""
    out = tmp_path / "out"
    args = readme_replay()
    args[args.index("--data-dir") + 1] = str(out)
    env = {k: v for k, v in os.environ.items() if k != "CANDLEWAX_BOOTSTRAP_SERVERS"}
    result = subprocess.run([*CLI, *args, "--engine", engine], capture_output=True, text=True,
                            timeout=240, env=env, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "published 9757 trades (0 rejected)" in result.stdout
    assert "binance:BTCUSDT" in result.stdout  # the console view showed the bars
    bars = pl.read_parquet(out / "bars" / "interval=1m" / "**" / "*.parquet").sort("start_ms")
    # The complete minutes of the capture (23:55-23:59 UTC), all nine kline fields and more.
    ours = {r["start_ms"]: as_decimals({**r, "interval": "1m"}) for r in bars.to_dicts()}
    want = {b["start_ms"]: b for b in reference_bars(btcusdt(), "1m")}
    for start in range(T0 + 60_000, T0 + 6 * 60_000, 60_000):
        assert ours[start] == want[start]
    assert sorted(ours) == sorted(want)


def test_broker_command_starts_prints_and_stops_cleanly() -> None:
    proc = subprocess.Popen(
        [*CLI, "broker"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("tansu broker listening on 127.0.0.1:"), line
        address = line.rsplit(" ", 1)[1].strip()
        host, port = address.split(":")
        with socket.create_connection((host, int(port)), timeout=5):
            pass
        taken = run("broker", "--port", port, timeout=60)
        assert taken.returncode == 1
        assert f"port {port} on 127.0.0.1 is already in use" in taken.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    with socket.socket() as sock:  # the broker is gone: its port is free
        sock.bind(("127.0.0.1", int(port)))


def test_topics_ensure_twice() -> None:
    with EmbeddedBroker() as broker:
        env = {"CANDLEWAX_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
        first = run("topics", "ensure", "--topic-prefix", "e2e.", env=env)
        second = run("topics", "ensure", "--topic-prefix", "e2e.", env=env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr
    assert "e2e.trades: created" in first.stdout and "e2e.trades: exists" in second.stdout


def test_unreachable_broker_is_a_clear_error_not_a_hang() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    result = run("flow", "--bootstrap-servers", f"127.0.0.1:{port}", timeout=60)
    assert result.returncode == 1
    assert f"no Kafka broker answered at 127.0.0.1:{port}" in result.stderr
    assert time.monotonic() - started < 45


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "candlewax.toml"
    config.write_text('[candlewax]\nbootstrap_server = "typo:9092"\n')
    result = run("topics", "ensure", "--config", str(config))
    assert result.returncode == 1
    assert "unknown setting 'bootstrap_server'" in result.stderr
    config.write_text("[candlewax]\nlateness_ms = -5\n")
    result = run("topics", "ensure", "--config", str(config))
    assert result.returncode == 1
    assert "setting lateness_ms in config file" in result.stderr
    assert "greater than or equal to 0 (got '-5')" in result.stderr
    result = run("topics", "ensure")
    assert result.returncode == 1 and "--bootstrap-servers" in result.stderr


def test_replay_then_flow_commands(tmp_path: Path) -> None:
    """The production path: `replay` publishes, `flow` (python -m bytewax.run) builds bars."""
    with EmbeddedBroker() as broker:
        env = {
            "CANDLEWAX_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "CANDLEWAX_RETENTION_MS": "-1",
        }
        published = run("replay", str(BTCUSDT_GZ), "--per-message", "20", env=env)
        assert published.returncode == 0, published.stderr[-2000:]
        assert "published 9757 trades (0 rejected" in published.stdout
        env["CANDLEWAX_ALERTS"] = (
            '{"range": {"1m": 0.001}, "move": {}, "zscore": {}, "cooldown_ms": 0}'
        )
        flow = run(
            "flow", "--data-dir", str(tmp_path), "--exit-when-done", "--metrics-port", "0", env=env
        )
        assert flow.returncode == 0, flow.stderr[-3000:]
        # `alerts tail` prints the alerts topic: the windows an independent computation flags.
        want = reference_range_alerts(btcusdt(), "1m", Decimal("0.001"))
        assert len(want) >= 3
        tail = subprocess.Popen(
            [*CLI, "alerts", "tail"], env={**os.environ, **env}, stdout=subprocess.PIPE, text=True
        )
        try:
            lines = [orjson.loads(tail.stdout.readline()) for _ in want]  # type: ignore[union-attr]
        finally:
            tail.send_signal(signal.SIGINT)
            tail.wait(timeout=30)
        assert [(a["window_start_ms"], a["ts_ms"]) for a in lines] == [(s, ts) for s, ts, _ in want]
        assert tail.returncode == 0
    bars = pl.read_parquet(tmp_path / "bars" / "interval=5m" / "**" / "*.parquet")
    ours = sorted(
        (as_decimals({**r, "interval": "5m"}) for r in bars.to_dicts()), key=lambda b: b["start_ms"]
    )
    assert ours == reference_bars(btcusdt(), "5m")


def test_live_demo_shows_forming_bars_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """`make demo` as a user runs it: live synthetic market; Ctrl-C (SIGINT to the process
    group, as a terminal sends it) stops everything with exit 0 and leaves no process behind."""
    proc = subprocess.Popen(
        [*CLI, "demo", "--data-dir", str(tmp_path), "--rate", "500"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # frames are printed every 5 s when not on a TTY
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            seen.append(line)
            if " live " in line and "synthetic:BTCUSDT" in line:
                break
        assert any(" live " in line for line in seen), "".join(seen[-20:])
        # Both metrics endpoints the demo prints serve live counters.
        (metrics_line,) = {line for line in seen if line.startswith("metrics: http://127.0.0.1:")}
        flow_url, market_url = re.findall(r"http://\S+/metrics", metrics_line)
        assert _counter(market_url, "candlewax_connector_trades_total") > 0
        deadline = time.monotonic() + 30
        while _counter(flow_url, "candlewax_flow_trades_total") == 0:
            assert time.monotonic() < deadline, "the flow never counted a trade"
            time.sleep(0.2)
        _promtool_ok(market_url)
        _promtool_ok(flow_url)
        # The gateway the demo prints: its page, and a live forming bar on its socket.
        (chart_line,) = {line for line in seen if line.startswith("chart: http://")}
        chart = chart_line.split()[1]
        assert "<html" in urllib.request.urlopen(chart, timeout=10).read().decode().lower()
        with websockets.sync.client.connect(
            chart.replace("http", "ws") + "ws/synthetic:btcusdt@kline_1m", open_timeout=10
        ) as ws:
            event = orjson.loads(ws.recv(timeout=30))
        assert event["e"] == "kline" and event["s"] == "BTCUSDT" and event["venue"] == "synthetic"
        assert event["k"]["i"] == "1m" and Decimal(event["k"]["v"]) > 0
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "Connection refused" not in err  # the broker went last, after every client closed
    # Nothing left: the broker's port is free again, no process runs with this data dir (the flow).
    kafka_line = next(line for line in seen if line.startswith("kafka: 127.0.0.1:"))
    port = int(kafka_line.split()[1].split(":")[1])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert _processes_with_env(f"CANDLEWAX_DATA_DIR={tmp_path}") == []


def _processes_with_env(entry: str) -> list[int]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if entry.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def _promtool_ok(url: str) -> None:
    """The endpoint's exposition passes `promtool check metrics` (Prometheus conventions)."""
    promtool_check_metrics(urllib.request.urlopen(url, timeout=10).read().decode())


def _counter(url: str, name: str) -> float:
    """Sum of a metric's samples in a Prometheus text exposition."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")
    )


def test_connect_command_against_local_servers() -> None:
    """`candlewax connect binance --ws-url --rest-url --exit-after` as a user runs it against a
    testnet: trades of a recorded session reach Kafka, a dropped connection is backfilled, the
    process exits 0 after --exit-after with the producer flushed."""
    from websockets.asyncio.server import ServerConnection

    from tests.integration.test_live_binance import recorded
    from tests.kafka_read import read_topic
    from tests.servers import RestServer, WsServer, drop, hold, send_all

    frames, data = recorded()
    rows = [
        {"id": d["t"], "price": d["p"], "qty": d["q"], "time": d["T"], "isBuyerMaker": d["m"]}
        for d in data
    ]
    rest = RestServer(rows)
    rest.available_until = data[299]["t"]

    async def first(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, frames[:100])
        await drop(ws)

    async def second(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, frames[300:400])
        await hold(ws)

    with EmbeddedBroker() as broker, WsServer([first, second]) as ws_server, rest:
        env = {"CANDLEWAX_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
        result = run(
            "connect", "binance", "--symbols", "BTCUSDT", "--ws-url", ws_server.url,
            "--rest-url", rest.url, "--exit-after", "6", env=env, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        ids = [
            orjson.loads(v)["id"]
            for *_, v in read_topic(broker.bootstrap_servers, "trades")
            if b'"heartbeat"' not in v
        ]
    assert ids == [str(d["t"]) for d in data[:400]]
    assert "binance: 400 trades published (200 backfilled" in result.stdout
    assert "reconnects {'dropped': 1}" in result.stdout


def test_connect_stops_cleanly_on_sigterm_with_everything_delivered() -> None:
    from websockets.asyncio.server import ServerConnection

    from tests.integration.test_live_binance import recorded
    from tests.kafka_read import read_topic
    from tests.servers import WsServer, hold, send_all

    frames, data = recorded()

    async def session(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, frames[:150])
        await hold(ws)

    with EmbeddedBroker() as broker, WsServer([session]) as ws_server:
        env = {**os.environ, "CANDLEWAX_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
        proc = subprocess.Popen(
            [*CLI, "connect", "binance", "--symbols", "BTCUSDT", "--ws-url", ws_server.url,
             "--rest-url", "http://127.0.0.1:9", "--metrics-port", "0"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # poll until trades are flowing, then stop it
                if (
                    ws_server.connections
                    and len(read_topic(broker.bootstrap_servers, "trades", timeout_s=10)) >= 50
                ):
                    break
                time.sleep(0.1)
            # Its metrics endpoint (first line of output) serves the connector's counters.
            metrics_line = proc.stdout.readline()  # type: ignore[union-attr]
            url = re.search(r"http://\S+/metrics", metrics_line).group(0)  # type: ignore[union-attr]
            assert _counter(url, "candlewax_connector_messages_total") >= 50
            assert _counter(url, "candlewax_produced_messages_total") >= 50
            _promtool_ok(url)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        ids = [
            orjson.loads(v)["id"]
            for *_, v in read_topic(broker.bootstrap_servers, "trades")
            if b'"heartbeat"' not in v
        ]
    published = int(out.split(" trades published")[0].rsplit(" ", 1)[1])
    assert ids == [str(d["t"]) for d in data[:published]]  # what it says it sent is in Kafka
    assert published > 0
    assert "received SIGTERM, stopping" in err
