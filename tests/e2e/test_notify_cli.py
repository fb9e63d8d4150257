"""``candlewax notify`` as a user runs it: credentials from the environment, killed with -9 in the
middle and restarted, metrics scraped, and never a token or a robot key in its output."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest

from candlewax.broker import EmbeddedBroker, free_port
from candlewax.kafka import Connection, TrackedProducer
from candlewax.settings import Settings
from candlewax.topics import ALERTS, ensure_topics
from tests.platforms import TelegramServer, WeComServer, sample_alerts

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "candlewax.cli"]
TOKEN = "987654:E2E-secret-token"
KEY = "e2e-secret-robot-key"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CANDLEWAX_", "TELEGRAM_", "WECOM_"))
    }
    return {**env, **extra}


def _wait(condition, timeout_s: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"notify exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _metric(port: int, name: str, labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_notify_without_channels_is_a_clear_error() -> None:
    result = subprocess.run(
        [*CLI, "notify", "--bootstrap-servers", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
    )
    assert result.returncode == 1
    assert "no channels to notify: set TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID" in result.stderr


def test_notify_survives_kill_9_without_losing_an_alert(tmp_path: Path) -> None:
    alerts = sample_alerts(6)
    ids = sorted(a.id for a in alerts)
    with (
        EmbeddedBroker("tansu") as broker,
        TelegramServer(TOKEN) as tg,  # the real limits: 1/s per chat, 30/s per bot
        WeComServer(KEY) as wecom,  # 20/min per robot
    ):
        prefix = f"e{uuid.uuid4().hex[:8]}."
        settings = Settings(
            bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix, retention_ms=-1
        )
        ensure_topics(settings)
        producer = TrackedProducer(Connection(broker.bootstrap_servers))
        for a in alerts:
            producer.send(settings.topic(ALERTS), a.encode(), f"{a.venue}:{a.symbol}".encode())
        producer.flush()
        tg.force(
            tg.answer(500, {"ok": False, "error_code": 500, "description": "Internal"}),
            tg.hang(2.0),
        )
        port = free_port()
        env = _clean_env(
            CANDLEWAX_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
            CANDLEWAX_TOPIC_PREFIX=prefix,
            CANDLEWAX_TELEGRAM_API_URL=tg.url,
            CANDLEWAX_WECOM_API_URL=wecom.url,
            CANDLEWAX_NOTIFY=orjson.dumps({"timeout_s": 0.5, "max_delay_s": 1000}).decode(),
            TELEGRAM_BOT_TOKEN=TOKEN,
            TELEGRAM_CHAT_ID="7",
            WECOM_WEBHOOK_KEY=KEY,
        )
        cmd = [
            *CLI,
            "--log-level",
            "DEBUG",
            "notify",
            "--from-beginning",
            "--state-file",
            str(tmp_path / "state.sqlite3"),
            "--metrics-port",
            str(port),
        ]
        outputs: list[str] = []
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        try:
            _wait(lambda: len(tg.messages) >= 3, 60, "the first deliveries", first)
        finally:
            first.send_signal(signal.SIGKILL)
            outputs.append(first.communicate(timeout=30)[0].decode())
        second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        try:
            got = lambda m, f, label: re.findall(rf"{label} ([0-9a-f]{{24}})", m[f])  # noqa: E731
            tg_ids = lambda: [i for m in tg.messages for i in got(m, "text", "id")]  # noqa: E731
            wecom_ids = lambda: [i for m in wecom.messages for i in got(m, "content", "告警编号")]  # noqa: E731
            _wait(
                lambda: set(tg_ids()) == set(ids) and set(wecom_ids()) == set(ids),
                90,
                "every alert after the restart",
                second,
            )
            _wait(
                lambda: (
                    _metric(
                        port, "candlewax_notify_alerts_total", 'channel="wecom",outcome="delivered"'
                    )
                    + _metric(
                        port, "candlewax_notify_alerts_total", 'channel="wecom",outcome="duplicate"'
                    )
                    >= 1
                ),
                30,
                "metrics",
                second,
            )
            assert (
                _metric(port, "candlewax_notify_requests_total", 'channel="telegram",outcome="ok"')
                >= 1
            )
        finally:
            second.send_signal(signal.SIGTERM)
            outputs.append(second.communicate(timeout=60)[0].decode())
        assert second.returncode == 0, outputs[-1][-3000:]
        # Zero lost; a kill -9 may resend at most the one message that was in flight per chat.
        assert len(tg_ids()) - len(ids) <= 1 and len(wecom_ids()) - len(ids) <= 1
        assert tg.violations == wecom.violations == []
        everything = "\n".join(outputs)
        assert "notify: telegram telegram:7" in everything  # it said where alerts go...
        assert TOKEN not in everything and KEY not in everything  # ...and never the secrets
        assert TOKEN.split(":")[1] not in everything


def test_demo_sends_its_alerts_for_real_when_credentials_are_set(tmp_path: Path) -> None:
    """`candlewax demo` with TELEGRAM_BOT_TOKEN/TELEGRAM_CHAT_ID set delivers exactly the range
    alerts an independent computation finds in the Binance capture, before it exits."""
    from decimal import Decimal

    from candlewax.codec import alert_id
    from connectors.replay import iter_file
    from tests.conftest import BTCUSDT_GZ
    from tests.reference import reference_range_alerts

    trades = [t for item in iter_file(BTCUSDT_GZ) for t in item.trades]
    want = sorted(
        alert_id("range", "binance", "BTCUSDT", "1m", start)
        for start, _, _ in reference_range_alerts(trades, "1m", Decimal("0.001"))
    )
    assert want
    with TelegramServer(TOKEN) as tg:
        env = _clean_env(
            TELEGRAM_BOT_TOKEN=TOKEN,
            TELEGRAM_CHAT_ID="7",
            CANDLEWAX_TELEGRAM_API_URL=tg.url,
            CANDLEWAX_ALERTS='{"range": {"1m": 0.001}, "move": {}, "zscore": {}, "cooldown_ms": 0}',
            CANDLEWAX_NOTIFY='{"max_delay_s": 1000}',
        )
        result = subprocess.run(
            [
                *CLI,
                "demo",
                "--replay",
                str(BTCUSDT_GZ),
                "--data-dir",
                str(tmp_path),
                "--exit-when-done",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "notify: telegram telegram:7" in result.stdout
        got = sorted(i for m in tg.messages for i in re.findall(r"id ([0-9a-f]{24})", m["text"]))
        assert got == want
        assert tg.violations == []
        assert TOKEN not in result.stdout + result.stderr
