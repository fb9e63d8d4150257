"""Operator errors end in one clear line — what, where, what to do — and a non-zero exit, with no
traceback unless ``--log-level DEBUG``. Each case is something an operator does by mistake."""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from candlewax.broker import EmbeddedBroker
from tests.conftest import BTCUSDT_GZ

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "candlewax.cli"]


@pytest.fixture(scope="module")
def kafka() -> Iterator[str]:
    """Operator errors are the CLI's, not an engine's: one broker for the module."""
    with EmbeddedBroker("tansu") as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CANDLEWAX_")}
    return subprocess.run(
        [*CLI, *args], env={**clean, **env}, capture_output=True, text=True, timeout=120
    )


def files(tmp: Path) -> dict[str, Path]:
    (tmp / "a-file").write_text("not a directory\n")
    (tmp / "binary.toml").write_bytes(b"\xff\xfe\x00")
    (tmp / "typed.toml").write_text('[candlewax]\npartitions = "four"\n')
    # The first third of a real capture: a truncated download.
    head = BTCUSDT_GZ.read_bytes()
    (tmp / "spot_btcusdt_cut.gz").write_bytes(head[: len(head) // 3])
    with gzip.open(tmp / "spot_btcusdt_junk.gz", "wb") as out:
        out.write(b"x")
    return {
        "under_file": tmp / "a-file" / "data",
        "binary": tmp / "binary.toml",
        "typed": tmp / "typed.toml",
        "cut": tmp / "spot_btcusdt_cut.gz",
    }


CASES = [
    # (name, argv with {placeholders}, extra env, words the one line must contain)
    ("metrics port in use", ["synthetic", "--duration", "1", "--speed", "0", "--metrics-port",
     "{busy_port}"], {}, ["metrics port {busy_port}", "in use", "--metrics-port"]),
    ("config is a directory", ["topics", "ensure", "--config", "{tmp}"], {},
     ["{tmp}", "is a directory", "--config"]),
    ("config is missing", ["topics", "ensure", "--config", "{tmp}/nope.toml"], {},
     ["nope.toml", "does not exist"]),
    ("config is not text", ["topics", "ensure", "--config", "{binary}"], {},
     ["binary.toml", "not UTF-8"]),
    ("config value of the wrong type", ["topics", "ensure", "--config", "{typed}"], {},
     ["partitions", "typed.toml"]),
    ("unknown Kafka property", ["topics", "ensure"], {"CANDLEWAX_KAFKA": '{"sasl.mechanismz": "PLAIN"}'},
     ["sasl.mechanismz", "CANDLEWAX_KAFKA"]),
    ("bad Kafka property value", ["topics", "ensure"],
     {"CANDLEWAX_KAFKA": '{"security.protocol": "SASL_PLAINTEXTT"}'}, ["security.protocol", "Invalid"]),
    ("badly formed Kafka properties", ["topics", "ensure"], {"CANDLEWAX_KAFKA": "acks=all"},
     ["CANDLEWAX_KAFKA is not valid JSON", '{{"security.protocol": "SSL"}}']),
    ("Kafka property that is no name", ["topics", "ensure"], {"CANDLEWAX_KAFKA": '{"Acks!": 1}'},
     ["kafka", "'Acks!' is not a librdkafka property name", "CANDLEWAX_KAFKA"]),
    ("cluster process id beyond the addresses", ["flow", "-i", "2", "-a", "127.0.0.1:1;127.0.0.1:2"],
     {}, ["cluster.process_id 2", "2 cluster.addresses"]),
    ("cluster peer that is no address", ["flow", "-a", "127.0.0.1:1;nohost"], {},
     ["cluster.addresses", "'nohost'", "host:port"]),
    ("truncated gzip replay", ["replay", "{cut}", "--venue", "binance"], {},
     ["spot_btcusdt_cut.gz is damaged after line", "trades", "published", "before it"]),
    ("data dir not writable (flow)", ["flow", "--exit-when-done", "--data-dir", "{under_file}"],
     {}, ["data dir", "not writable", "--data-dir"]),
    ("data dir not writable (demo)", ["demo", "--replay", str(BTCUSDT_GZ), "--exit-when-done",
     "--data-dir", "{under_file}"], {"CANDLEWAX_BOOTSTRAP_SERVERS": ""},
     ["data dir", "not writable"]),
    ("backtest out not writable", ["backtest", "--from", "2024-08-08T23:55:00Z", "--to",
     "2024-08-09T00:00:00Z", "--out", "{under_file}"], {}, ["not writable"]),
    ("backtest time that is a year", ["backtest", "--from", "2024", "--to", "2025", "--out",
     "{tmp}/bt"], {}, ["'2024'", "epoch milliseconds", "2024-01-01"]),
    ("recovery store on a file", ["recovery", "init", "{under_file}"], {},
     ["recovery store", "a-file"]),
    ("notifier state file on a file", ["notify", "--console", "--state-file",
     "{under_file}/n.sqlite3"], {}, ["state file", "--state-file"]),
    ("demo replay of a missing file", ["demo", "--replay", "{tmp}/nope.gz", "--exit-when-done"],
     {"CANDLEWAX_BOOTSTRAP_SERVERS": ""}, ["nope.gz", "does not exist"]),
    ("unknown venue", ["connect", "krakenz", "--symbols", "BTCUSD"], {}, ["'krakenz'", "choose"]),
    ("record out not writable", ["record", "binance", "--symbols", "BTCUSDT", "--out",
     "{under_file}"], {}, ["record directory", "a-file", "not writable", "--out"]),
    ("metrics host that is no address", ["synthetic", "--duration", "1", "--metrics-host",
     "no.such.host.invalid", "--metrics-port", "0"], {}, ["no.such.host.invalid"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "argv", "extra", "words"), CASES, ids=[c[0] for c in CASES])
def test_an_operator_error_is_one_clear_line(
    name: str,
    argv: list[str],
    extra: dict[str, str],
    words: list[str],
    kafka: str,
    busy_port: int,
    tmp_path: Path,
) -> None:
    values = {"tmp": str(tmp_path), "busy_port": str(busy_port)}
    values |= {k: str(v) for k, v in files(tmp_path).items()}
    args = [a.format(**values) for a in argv]
    env = {"CANDLEWAX_BOOTSTRAP_SERVERS": kafka, "CANDLEWAX_DATA_DIR": str(tmp_path / "data"),
           **extra}  # fmt: skip
    done = cli(args, env)
    assert done.returncode != 0, done.stdout[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, done.stderr[-3000:]
    (line,) = errors
    assert line.startswith(("candlewax: error: ", "candlewax flow: error: ")), line
    for word in words:
        assert word.format(**values) in line, line


def test_the_traceback_is_there_at_debug(tmp_path: Path, kafka: str) -> None:
    done = cli(["--log-level", "DEBUG", "topics", "ensure", "--config", str(tmp_path)],
               {"CANDLEWAX_BOOTSTRAP_SERVERS": kafka})  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "is a directory" in done.stderr
