"""`candlewax record` as a user runs it: the venue's frames from the local venue server into
hourly gzip files, replayed into the trades and bars the live connector gets from the same
server — both checked against an independent decoding of the frames the server sent."""

from __future__ import annotations

import gzip
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from websockets.asyncio.server import ServerConnection

from candlewax.codec import DeadLetter, Trade
from connectors.live import LiveConnector, LiveOptions
from connectors.replay import detect_format, iter_file
from connectors.venues import BINANCE
from tests.conftest import BTCUSDT_GZ
from tests.reference import as_decimals, reference_bars
from tests.servers import WsServer, hold, send_all

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "candlewax.cli"]
#: The first lines of the spot capture: depth, bookTicker and @trade frames, ~1 minute.
LINES = 6000
NAME = re.compile(r"^binance-[0-9]{8}-[0-9]{2}\.gz$")


@cache
def script() -> tuple[list[tuple[str | bytes, bytes | None]], list[Trade]]:
    """What the server sends — each frame with the payload the recording must hold (None:
    skipped) — and the trades in it, decoded here with plain JSON, not the parsers."""
    sent: list[tuple[str | bytes, bytes | None]] = []
    trades: list[Trade] = []
    n_trades = 0
    with gzip.open(BTCUSDT_GZ, "rb") as f:
        for number, line in enumerate(f):
            if number == LINES:
                break
            raw = line.rstrip(b"\n").partition(b" ")[2]
            obj = orjson.loads(raw)
            if obj.get("stream") == "btcusdt@trade":
                d = obj["data"]
                trades.append(
                    Trade("binance", d["s"], str(d["t"]), d["p"], d["q"],
                          "sell" if d["m"] else "buy", d["T"])
                )  # fmt: skip
                n_trades += 1
                if n_trades == 10:  # a pretty-printed frame: its line breaks become tabs
                    pretty = orjson.dumps(obj, option=orjson.OPT_INDENT_2)
                    sent.append((pretty.decode(), pretty.replace(b"\n", b"\t")))
                    continue
                if n_trades == 20:  # a binary frame of UTF-8 JSON is recorded as it is
                    sent.append((raw, raw))
                    continue
            sent.append((raw.decode(), raw))
    sent.insert(100, ("", None))  # empty: skipped
    sent.insert(200, (b"\xff\xfe{not utf-8}", None))  # binary, not UTF-8: skipped
    return sent, trades


class Collect:
    """What the live connector publishes, kept in memory (the producer's interface)."""

    def __init__(self) -> None:
        self.trades: list[Trade] = []
        self.letters: list[DeadLetter] = []

    def send(self, trades: list[Trade], per_message: int = 1) -> int:
        self.trades.extend(trades)
        return len(trades)

    def dead_letter(self, letter: DeadLetter) -> None:
        self.letters.append(letter)

    def heartbeat(self, venue: str, ts_ms: int) -> None:
        pass

    def flush_ready(self) -> None:
        pass

    def flush(self, timeout_s: float = 60.0) -> None:
        pass


def lines_so_far(directory: Path) -> int:
    """Lines readable in the recording now, finished files and the open ``.part`` alike (it is
    sync-flushed every second)."""
    n = 0
    for path in directory.iterdir():
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # renamed meanwhile: counted on the next poll
            return -1
        n += zlib.decompressobj(31).decompress(data).count(b"\n")
    return n


def key(t: Trade) -> tuple[Any, ...]:
    return (t.venue, t.symbol, t.id, t.price, t.qty, t.side, t.ts_ms)


def test_recording_replays_into_the_live_trades_and_bars(tmp_path: Path) -> None:
    sent, expected = script()
    wanted = [payload for _, payload in sent if payload is not None]

    async def session(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, [frame for frame, _ in sent])
        await hold(ws)

    out = tmp_path / "rec"
    with WsServer([session]) as server:
        # The recorder, as a user runs it (no broker anywhere) ...
        started_ns = time.time_ns()
        proc = subprocess.Popen(
            [*CLI, "record", "binance", "--symbols", "BTCUSDT", "--out", str(out),
             "--ws-url", server.url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("CANDLEWAX_")},
        )  # fmt: skip
        # ... and the live connector on the same server, in process.
        collect = Collect()
        stop = threading.Event()
        live = LiveConnector(BINANCE, ["BTCUSDT"], collect, LiveOptions(ws_url=server.url), stop)  # type: ignore[arg-type]
        runner = threading.Thread(target=live.run)
        runner.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if (
                    out.is_dir()
                    and lines_so_far(out) >= len(wanted)
                    and len(collect.trades) >= len(expected)
                ):
                    break  # fmt: skip
                time.sleep(0.1)
        finally:
            stop.set()
            runner.join(timeout=30)
            proc.send_signal(signal.SIGTERM)  # SIGTERM: the open file is finished, not left
            stdout, stderr = proc.communicate(timeout=30)
        ended_ns = time.time_ns()
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr

    # Complete gzip files named by the hour, nothing left half-written.
    files = sorted(out.iterdir())
    assert files and all(NAME.match(p.name) for p in files), files
    lines = [line for p in files for line in gzip.decompress(p.read_bytes()).split(b"\n")[:-1]]
    # `<receive ns> <frame>`: every frame the server sent, byte for byte, in order (but the
    # documented rules: line breaks as tabs, empty and non-UTF-8 frames skipped).
    stamps = [int(line.partition(b" ")[0]) for line in lines]
    assert [line.partition(b" ")[2] for line in lines] == wanted
    assert stamps == sorted(stamps) and started_ns <= stamps[0] <= stamps[-1] <= ended_ns
    assert f"binance: {len(wanted)} frames recorded (1 with line breaks written as tabs; " \
           "skipped: 1 empty, 1 not_utf8)" in stdout  # fmt: skip
    for path in files:
        assert str(path) in stdout
        assert detect_format(path) == "hftbacktest"

    # Replayed: the trades the live connector published, which are the frames' trades.
    replayed = [t for p in files for item in iter_file(p) for t in item.trades]
    rejected = [d for p in files for item in iter_file(p) for d in item.rejected]
    assert not rejected
    assert [key(t) for t in replayed] == [key(t) for t in collect.trades]
    assert [key(t) for t in replayed] == [key(t) for t in expected]
    assert sorted(d.reason for d in collect.letters) == ["json", "json"]  # live: empty, \xff
    assert all(t.recv_ms is not None and t.recv_ms * 1_000_000 >= started_ns for t in replayed)

    # `candlewax demo --replay` of the recording: the bars of an independent computation.
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDLEWAX_")}
    demo = subprocess.run(
        [*CLI, "demo", "--replay", str(files[0]), "--exit-when-done", "--data-dir", str(data)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-3000:]
    first_file = [t for item in iter_file(files[0]) for t in item.trades]
    assert f"published {len(first_file)} trades (0 rejected)" in demo.stdout
    bars = pl.read_parquet(data / "bars" / "interval=1m" / "**" / "*.parquet")
    ours = sorted(
        (as_decimals({**r, "interval": "1m"}) for r in bars.to_dicts()), key=lambda b: b["start_ms"]
    )
    want = reference_bars(expected[: len(first_file)], "1m")
    assert ours == want and sum(b["trades"] for b in want) == len(first_file)  # type: ignore[misc]
    assert all(isinstance(b["volume"], Decimal) for b in ours)


def test_exit_after_finishes_the_file(tmp_path: Path) -> None:
    sent, _ = script()
    frames = [frame for frame, payload in sent[:50] if payload is not None]

    async def session(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, frames)
        await hold(ws)

    with WsServer([session]) as server:
        done = subprocess.run(
            [*CLI, "record", "binance", "--symbols", "BTCUSDT", "--out", str(tmp_path),
             "--ws-url", server.url, "--exit-after", "1.5"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = tmp_path.iterdir()
    assert NAME.match(path.name)
    payloads = [line.partition(b" ")[2] for line in gzip.decompress(path.read_bytes()).split(b"\n")]
    assert payloads == [*(f.encode() if isinstance(f, str) else f for f in frames), b""]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["binance"], ["no symbols", "--symbols"]),
        (["coinbase", "--symbols", "NOTAPAIR"], ["NOTAPAIR", "Coinbase"]),
        (["krakenz", "--symbols", "BTCUSD"], ["'krakenz'", "choose"]),
    ],
)
def test_bad_arguments_are_one_clear_line(
    argv: list[str], words: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "rec"
    done = subprocess.run(
        [*CLI, "record", *argv, "--out", str(out), "--ws-url", "ws://127.0.0.1:9"],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("CANDLEWAX_")},
    )  # fmt: skip
    assert done.returncode == 1
    (line,) = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert line.startswith("candlewax: error: ") and "Traceback" not in done.stderr
    for word in words:
        assert word in line, line
    assert not out.exists()  # refused before anything was created


def test_a_text_frame_that_is_not_utf8_drops_the_connection_and_recording_goes_on(
    tmp_path: Path,
) -> None:
    """websocket-client refuses a text frame that is not UTF-8 by dropping the connection; the
    recorder reconnects (counted) and records the next session into the same file."""
    from connectors.record import FrameWriter

    async def first(ws: ServerConnection, server: WsServer) -> None:
        await ws.send(b'{"first":1}')  # binary
        await ws.send(b"\xff\xfe not text", text=True)
        await hold(ws)

    async def second(ws: ServerConnection, server: WsServer) -> None:
        await ws.send('{"second":1}')
        await hold(ws)

    stop = threading.Event()
    with WsServer([first, second]) as server, FrameWriter(tmp_path, "binance") as writer:
        options = LiveOptions(ws_url=server.url, backoff_initial_s=0.05)
        connector = LiveConnector(BINANCE, ["BTCUSDT"], None, options, stop, recorder=writer)
        runner = threading.Thread(target=connector.run)
        runner.start()
        deadline = time.monotonic() + 20
        while writer.stats.frames < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        runner.join(timeout=30)
    assert connector.stats().reconnects == {"dropped": 1}
    assert connector.rest is None  # a recorder never backfills
    (path,) = writer.stats.files
    payloads = [line.partition(b" ")[2] for line in gzip.decompress(path.read_bytes()).split(b"\n")]
    assert payloads == [b'{"first":1}', b'{"second":1}', b""]


def test_a_write_error_stops_the_recording_connector(tmp_path: Path) -> None:
    """The directory vanishes under a running recorder: the connector stops with the writer's
    error instead of reading on without writing."""
    from candlewax.errors import CandlewaxError
    from connectors.record import FrameWriter

    async def session(ws: ServerConnection, server: WsServer) -> None:
        await ws.send('{"a":1}')
        await hold(ws)

    out = tmp_path / "gone"
    out.mkdir()
    writer = FrameWriter(out, "binance")
    out.rmdir()
    with WsServer([session]) as server:
        connector = LiveConnector(
            BINANCE, ["BTCUSDT"], None, LiveOptions(ws_url=server.url), recorder=writer
        )
        started = time.monotonic()
        with pytest.raises(CandlewaxError, match=r"cannot write the recording .*gone"):
            connector.run(exit_after_s=20)
    assert time.monotonic() - started < 10 and writer.stats.skipped == {"write_failed": 1}
    assert not any(c.thread.is_alive() for c in connector.connections)
