"""One redaction path for every process: a venue that echoes the Finnhub token back — in a
refused handshake, in an error frame, in a frame the parser rejects — gets it into no log line
and no dead letter of ``candlewax connect``, at ``--log-level DEBUG`` too."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from http import HTTPStatus
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from candlewax.broker import EmbeddedBroker
from candlewax.codec import DeadLetter
from tests.kafka_read import read_topic

pytestmark = pytest.mark.e2e
TOKEN = "ftk-" + "9f2c" * 6  # looks like a Finnhub API key
TRADE = {"type": "trade", "data": [{"p": 61837.63, "s": "BINANCE:BTCUSDT", "t": 1723161255342,
                                    "v": 0.02, "c": None}]}  # fmt: skip


class EchoingVenue:
    """A Finnhub-like server that repeats the token it was given wherever it can."""

    def __init__(self) -> None:
        self.connections = 0
        self.paths: list[str] = []
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> EchoingVenue:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(10)

    def _refuse_first(self, connection: ServerConnection, request: Request) -> Response | None:
        self.connections += 1
        self.paths.append(request.path)
        if self.connections == 1:  # a refused handshake whose body names the token
            return connection.respond(HTTPStatus.FORBIDDEN, f"invalid token {TOKEN}\n")
        return None

    async def _session(self, ws: ServerConnection) -> None:
        await ws.send(orjson.dumps({"type": "error", "msg": f"Invalid API key: {TOKEN}"}).decode())
        await ws.send(orjson.dumps(TRADE).decode())
        await ws.send(f'{{"type":"trade","data":"token={TOKEN}"}}')  # rejected: dead-lettered
        await ws.wait_closed()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        async with serve(
            self._session, "127.0.0.1", 0, process_request=self._refuse_first
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop


def test_a_token_the_venue_echoes_is_in_no_log_line_and_no_dead_letter(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    prefix = f"s{uuid.uuid4().hex[:8]}."
    token_file = tmp_path / "finnhub-token"
    token_file.write_text(TOKEN + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CANDLEWAX_", "FINNHUB"))}
    env.update(
        CANDLEWAX_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        CANDLEWAX_TOPIC_PREFIX=prefix,
        CANDLEWAX_RETENTION_MS="-1",
        FINNHUB_TOKEN_FILE=str(token_file),  # as Kubernetes mounts a secret
    )
    with EchoingVenue() as venue:
        proc = subprocess.Popen(
            [sys.executable, "-m", "candlewax.cli", "--log-level", "DEBUG", "connect", "finnhub",
             "--symbols", "BINANCE:BTCUSDT", "--ws-url", f"ws://127.0.0.1:{venue.port}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            letters: list[DeadLetter] = []
            while time.monotonic() < deadline and not letters:
                with contextlib.suppress(KeyError, TimeoutError):  # no topics yet
                    letters = [DeadLetter.decode(v) for *_, v in
                               read_topic(broker.bootstrap_servers, f"{prefix}deadletter", 5)]  # fmt: skip
                time.sleep(0.2)
            trades = read_topic(broker.bootstrap_servers, f"{prefix}trades")
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
    assert venue.paths[0] == f"/?token={TOKEN}"  # the venue got the token, twice
    assert venue.connections >= 2
    assert len(letters) == 1 and letters[0].reason == "venue_frame"
    assert any(b'"BINANCE:BTCUSDT"' in v for *_, v in trades)
    everything = out + err + "".join(d.encode().decode() for d in letters)
    assert TOKEN not in everything and TOKEN[4:] not in everything
    assert "***" in err  # the echoes were there, masked
    assert "403" in err and "Invalid API key" in err  # the errors themselves are still told
