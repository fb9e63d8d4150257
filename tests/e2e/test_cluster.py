"""A Bytewax cluster of 2 processes × 2 workers gives the bars and alerts of 1 process × 1 worker,
over 4 partitions and over 3 (one worker then holds none: the uneven case of bytewax PR #556)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import polars as pl
import pytest

from candlewax.broker import EmbeddedBroker, free_port
from candlewax.codec import Alert
from tests.kafka_read import read_topic

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "candlewax.cli"]
T0 = 1_723_161_240_000
RULES = orjson.dumps({"range": {"1m": 0.002}, "move": {"5m": 0.003}, "cooldown_ms": 0}).decode()


def environment(broker: EmbeddedBroker, prefix: str, partitions: int) -> dict[str, str]:
    return {
        **os.environ,
        "CANDLEWAX_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "CANDLEWAX_TOPIC_PREFIX": prefix,
        "CANDLEWAX_PARTITIONS": str(partitions),
        "CANDLEWAX_RETENTION_MS": "-1",
        "CANDLEWAX_ALERTS": RULES,
        "CANDLEWAX_CONFIG": "",
    }


def market(env: dict[str, str]) -> None:
    """The same seeded market (12 symbols, so every partition gets some) under each prefix."""
    args = ["synthetic", "--symbols", "12", "--duration", "900", "--rate", "40", "--speed", "0",
            "--start-ms", str(T0), "--per-message", "5"]  # fmt: skip
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]


def flows(env: dict[str, str], data: Path, processes: int, workers: int) -> None:
    ports = [free_port() for _ in range(processes)]
    addresses = ";".join(f"127.0.0.1:{p}" for p in ports)
    procs = []
    for i in range(processes):
        cluster = ["-w", str(workers)] + (["-i", str(i), "-a", addresses] if processes > 1 else [])
        procs.append(
            subprocess.Popen(
                [
                    *CLI,
                    "flow",
                    "--data-dir",
                    str(data),
                    "--exit-when-done",
                    "--metrics-port",
                    str(free_port()),
                    *cluster,
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    deadline = time.monotonic() + 240
    try:
        for proc in procs:
            proc.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc in procs:
        assert proc.returncode == 0, proc.stderr.read()[-3000:]  # type: ignore[union-attr]


def bars(data: Path) -> dict[str, pl.DataFrame]:
    root = data / "bars"
    return {str(p.relative_to(root)): pl.read_parquet(p) for p in sorted(root.rglob("*.parquet"))}


def alert_ids(broker: EmbeddedBroker, prefix: str) -> list[str]:
    return sorted(Alert.decode(v).id for *_, v in read_topic(broker.bootstrap_servers, f"{prefix}alerts"))  # fmt: skip


@pytest.mark.parametrize("partitions", [4, 3])
def test_two_processes_of_two_workers_equal_one_process(
    broker: EmbeddedBroker, tmp_path: Path, partitions: int
) -> None:
    run = uuid.uuid4().hex[:8]
    single, cluster = f"one{run}.", f"many{run}."
    for prefix in (single, cluster):
        market(environment(broker, prefix, partitions))
    flows(environment(broker, single, partitions), tmp_path / "one", processes=1, workers=1)
    flows(environment(broker, cluster, partitions), tmp_path / "many", processes=2, workers=2)
    want, got = bars(tmp_path / "one"), bars(tmp_path / "many")
    assert len({k.split("/part-")[1][:3] for k in want}) == partitions  # every partition has bars
    assert sorted(got) == sorted(want)
    for name, frame in want.items():
        assert got[name].equals(frame), name
    ids = alert_ids(broker, single)
    assert ids and alert_ids(broker, cluster) == ids
