"""Every Kafka client on a secured listener: mutual TLS with a CA this test makes.

The broker is the embedded Tansu behind a TLS-terminating stunnel that demands a client
certificate chaining to the test CA (`EmbeddedBroker(tls=...)`); the client's key is encrypted
and its password comes from a secret file (`kafka_secret_files`). replay → flow → notify,
`bars tail`, a backtest read of the topic and `topics ensure` all run on it through the CLI, as a
user would; without the properties every one of them stops at the reachability check with
librdkafka's reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from functools import cache
from pathlib import Path

import orjson
import polars as pl
import pytest

from candlewax.broker import BrokerTls, EmbeddedBroker
from candlewax.codec import Trade, alert_id
from connectors.replay import iter_file
from tests.conftest import BTCUSDT_GZ
from tests.platforms import TelegramServer
from tests.reference import as_decimals, reference_bars, reference_range_alerts

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "candlewax.cli"]
KEY_PASSWORD = "client-key-pass,with=comma"
TOKEN = "123456:TEST-secured-token"


def sent(tg: TelegramServer) -> list[str]:
    return sorted(i for m in list(tg.messages) for i in re.findall(r"id ([0-9a-f]{24})", m["text"]))


@cache
def btcusdt() -> tuple[Trade, ...]:
    return tuple(t for item in iter_file(BTCUSDT_GZ) for t in item.trades)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1, a client certificate with an encrypted key."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=candlewax test CA", cwd=d)  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        ext = ["-extfile", "server.ext"] if name == "server" else []
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *ext, cwd=d)  # fmt: skip
    openssl("pkcs8", "-topk8", "-in", "client.key", "-out", "client.enc.key", "-passout",
            f"pass:{KEY_PASSWORD}", cwd=d)  # fmt: skip
    (d / "key-password").write_text(KEY_PASSWORD + "\n")
    return d


@pytest.fixture(scope="module")
def secured(pki: Path) -> Iterator[EmbeddedBroker]:
    tls = BrokerTls(pki / "server.pem", pki / "server.key", client_ca=pki / "ca.pem")
    with EmbeddedBroker("tansu", tls=tls) as broker:
        yield broker


def config(pki: Path, path: Path, broker: EmbeddedBroker) -> Path:
    path.write_text(
        f"""[candlewax]
bootstrap_servers = "{broker.bootstrap_servers}"
topic_prefix = "sec."
retention_ms = -1
kafka_secret_files = {{ "ssl.key.password" = "{pki / "key-password"}" }}

[candlewax.kafka]
"security.protocol" = "SSL"
"ssl.ca.location" = "{pki / "ca.pem"}"
"ssl.certificate.location" = "{pki / "client.pem"}"
"ssl.key.location" = "{pki / "client.enc.key"}"
"ssl.endpoint.identification.algorithm" = "https"

[candlewax.alerts]
range = {{ "1m" = 0.001 }}
move = {{}}
zscore = {{}}
cooldown_ms = 0
"""
    )
    return path


def run(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **env}
    )


def lines_of(cmd: list[str], env: dict[str, str], wanted: int, timeout_s: float = 60) -> list[str]:
    """The first ``wanted`` stdout lines of a long-running command, then Ctrl-C."""
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
    out: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < wanted and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            out.append(line)
    finally:
        proc.send_signal(2)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    return out


def test_the_whole_pipeline_runs_on_a_mutual_tls_listener(
    pki: Path, secured: EmbeddedBroker, tmp_path: Path
) -> None:
    env = {"CANDLEWAX_CONFIG": str(config(pki, tmp_path / "c.toml", secured))}
    env["CANDLEWAX_BOOTSTRAP_SERVERS"] = secured.bootstrap_servers
    ensured = run("topics", "ensure", env=env)
    assert ensured.returncode == 0 and "sec.trades: created" in ensured.stdout, ensured.stderr
    published = run("replay", str(BTCUSDT_GZ), "--per-message", "50", env=env)
    assert "published 9757 trades (0 rejected" in published.stdout, published.stderr[-2000:]
    data = tmp_path / "data"
    flow = run("flow", "--data-dir", str(data), "--exit-when-done", "--metrics-port", "0", env=env)
    assert flow.returncode == 0, flow.stderr[-3000:]
    bars = pl.read_parquet(data / "bars" / "interval=5m" / "**" / "*.parquet")
    ours = sorted((as_decimals({**r, "interval": "5m"}) for r in bars.to_dicts()), key=lambda b: b["start_ms"])  # fmt: skip
    assert ours == reference_bars(btcusdt(), "5m")
    # The notifier (a consumer group and a producer) sends every alert, on the same listener.
    want = sorted(
        alert_id("range", "binance", "BTCUSDT", "1m", start)
        for start, _, _ in reference_range_alerts(btcusdt(), "1m", Decimal("0.001"))
    )
    assert want
    with TelegramServer(TOKEN) as tg:
        notify_env = {**env, "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "7",
                      "CANDLEWAX_TELEGRAM_API_URL": tg.url, "CANDLEWAX_NOTIFY": '{"max_delay_s": 1000}'}  # fmt: skip
        notify = subprocess.Popen(
            [*CLI, "notify", "--from-beginning", "--data-dir", str(tmp_path / "n")],
            env={**os.environ, **notify_env},
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 90
            while sent(tg) != want and time.monotonic() < deadline and notify.poll() is None:
                time.sleep(0.1)
        finally:
            notify.send_signal(2)
            notify.wait(timeout=60)
        assert sent(tg) == want and notify.returncode == 0
    tailed = lines_of([*CLI, "bars", "tail", "--interval", "5m"], env, wanted=len(ours))
    assert sorted(orjson.loads(t)["start_ms"] for t in tailed) == [b["start_ms"] for b in ours]
    # The backtest reads the topic (its offset search and consumer) on it too.
    backtest = run("backtest", "--from", "2024-08-08T23:55:00Z", "--to", "2024-08-09T00:00:00Z",
                   "--out", str(tmp_path / "bt"), env=env)  # fmt: skip
    assert backtest.returncode == 0 and " bars, " in backtest.stdout, backtest.stderr[-2000:]


@pytest.mark.parametrize(
    ("drop", "reason"),
    [
        # plaintext to the TLS port: the proxy hangs up, the check waits out its 15 s
        (
            (
                "security.protocol",
                "ssl.ca.location",
                "ssl.certificate.location",
                "ssl.key.location",
            ),
            "within 15 s",
        ),
        # TLS without the client certificate mutual TLS demands
        (("ssl.certificate.location", "ssl.key.location"), "certificate required"),
        # a CA the server certificate does not chain to
        (("ssl.ca.location",), "certificate verify failed"),
    ],
)
def test_without_the_properties_every_command_stops_at_the_check(
    pki: Path, secured: EmbeddedBroker, tmp_path: Path, drop: tuple[str, ...], reason: str
) -> None:
    """Plaintext to a TLS port, or TLS without the client certificate mTLS demands."""
    props = {
        "security.protocol": "SSL",
        "ssl.ca.location": str(pki / "ca.pem"),
        "ssl.certificate.location": str(pki / "client.pem"),
        "ssl.key.location": str(pki / "client.enc.key"),
        "ssl.key.password": KEY_PASSWORD,
    }
    props = {k: v for k, v in props.items() if k not in drop}
    if "ssl.key.location" not in props:
        props.pop("ssl.key.password")
    env = {
        "CANDLEWAX_BOOTSTRAP_SERVERS": secured.bootstrap_servers,
        "CANDLEWAX_KAFKA": orjson.dumps(props).decode(),
        "CANDLEWAX_CONFIG": "",
    }
    # Certificate problems fail at once; plaintext to TLS waits out the check: one command.
    commands = (["topics", "ensure"], ["alerts", "tail"], ["replay", str(BTCUSDT_GZ)])
    for argv in commands[:1] if "security.protocol" in drop else commands:
        result = run(*argv, env=env, timeout=60)
        assert result.returncode == 1, (argv, result.stdout, result.stderr)
        (line,) = result.stderr.strip().splitlines()[-1:]
        assert reason in line and KEY_PASSWORD not in result.stderr, line
