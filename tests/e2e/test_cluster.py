"""A Bytewax cluster of 2 processes × 2 workers gives the bars and alerts of 1 process × 1 worker,
over 4 partitions and over 3 (one worker then holds none: the uneven case of bytewax PR #556),
and still does after ``kill -9`` of one process mid-stream and a restart of the cluster from its
recovery stores: one directory per process, process ``i`` holding recovery partition ``i``."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
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


def market(env: dict[str, str], duration_s: int = 900) -> None:
    """The same seeded market (12 symbols, so every partition gets some) under each prefix."""
    args = ["synthetic", "--symbols", "12", "--duration", str(duration_s), "--rate", "40", "--speed", "0",
            "--start-ms", str(T0), "--per-message", "5"]  # fmt: skip
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]


def start(
    env: dict[str, str],
    data: Path,
    addresses: list[str],
    workers: int,
    recovery: list[Path] | None = None,
    ids: list[int] | None = None,
    stdout: int = subprocess.DEVNULL,
) -> list[subprocess.Popen[str]]:
    """``candlewax flow`` for the processes ``ids`` (default all) of the cluster at ``addresses``
    (``recovery``: each process's store; ``stdout``: where Bytewax's connection messages go)."""
    procs = []
    for i in range(len(addresses)) if ids is None else ids:
        cluster = ["-w", str(workers)]
        if len(addresses) > 1:
            cluster += ["-i", str(i), "-a", ";".join(addresses)]
        if recovery:
            cluster += ["-r", str(recovery[i]), "-s", "1"]
        args = ["flow", "--data-dir", str(data), "--exit-when-done", "--metrics-port", "0"]
        procs.append(
            subprocess.Popen(
                [*CLI, *args, *cluster],
                env=env,
                stdout=stdout,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def local(processes: int) -> list[str]:
    return [f"127.0.0.1:{free_port()}" for _ in range(processes)]


def wait(procs: list[subprocess.Popen[str]], timeout_s: float = 240) -> None:
    """Every process exits 0 before the deadline (else all are killed, with their stderr)."""
    deadline = time.monotonic() + timeout_s
    try:
        for proc in procs:
            proc.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc in procs:
        assert proc.returncode == 0, proc.stderr.read()[-3000:]  # type: ignore[union-attr]


def flows(env: dict[str, str], data: Path, processes: int, workers: int) -> None:
    wait(start(env, data, local(processes), workers))


def committed_epoch(store: Path) -> int:
    """The newest epoch whose snapshots the store's partitions have committed (0: none yet)."""
    epoch = 0
    for part in store.glob("part-*.sqlite3"):
        db = sqlite3.connect(f"file:{part}?mode=ro", uri=True)
        with contextlib.closing(db), contextlib.suppress(sqlite3.OperationalError):  # busy
            (newest,) = db.execute("SELECT MAX(commit_epoch) FROM commits").fetchone()
            epoch = max(epoch, newest or 0)
    return epoch


def parquet(data: Path) -> dict[str, pl.DataFrame]:
    """Every Parquet file of a run (bars and the trade archive), by path."""
    return {str(p.relative_to(data)): pl.read_parquet(p) for p in sorted(data.rglob("*.parquet"))}


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
    want, got = parquet(tmp_path / "one"), parquet(tmp_path / "many")
    assert len({k.split("/part-")[1][:3] for k in want if k.startswith("bars/")}) == partitions
    assert sorted(got) == sorted(want)
    for name, frame in want.items():
        assert got[name].equals(frame), name
    ids = alert_ids(broker, single)
    assert ids and alert_ids(broker, cluster) == ids


def test_kill_9_of_one_process_then_a_cluster_restart_equals_an_uninterrupted_run(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    single, cluster = f"ref{run}.", f"rec{run}."
    for prefix in (single, cluster):
        market(environment(broker, prefix, 4), duration_s=7200)
    flows(environment(broker, single, 4), tmp_path / "one", processes=1, workers=1)
    want = parquet(tmp_path / "one")

    # One recovery directory per process, as on a StatefulSet: process i keeps partition i of 2.
    stores = [tmp_path / f"recovery-{i}" for i in range(2)]
    for i, store in enumerate(stores):
        init = ["recovery", "init", str(store), "--partitions", "2", "--only", str(i)]
        done = subprocess.run([*CLI, *init], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    env = {**environment(broker, cluster, 4), "CANDLEWAX_BATCH_MAX": "500"}  # many epochs
    data = tmp_path / "many"
    addresses = local(2)
    procs = start(env, data, addresses, workers=2, recovery=stores)

    # Kill once a quarter of the files are out and both stores hold snapshots to resume from.
    def ready() -> bool:
        return len(list(data.rglob("*.parquet"))) >= len(want) // 4 and all(
            committed_epoch(store) >= 3 for store in stores
        )

    deadline = time.monotonic() + 240
    while not ready() and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), "the cluster ended before the kill"
        time.sleep(0.02)
    procs[1].send_signal(signal.SIGKILL)
    # The survivor loses its peer and stops by itself (so an orchestrator restarts it too).
    survivor = procs[0].wait(timeout=60)
    assert survivor != 0 and procs[1].wait(timeout=10) == -signal.SIGKILL
    before = {path: path.stat().st_mtime_ns for path in data.rglob("*.parquet")}
    assert len(before) < len(want), "the kill landed after the end"

    # Restarted one at a time, as pods are: the first waits for its peer, then both resume.
    (first,) = start(env, data, addresses, 2, stores, ids=[1], stdout=subprocess.PIPE)
    for line in first.stdout:  # type: ignore[union-attr]
        if "error connecting to worker 0" in line and "retrying" in line:
            break
    (second,) = start(env, data, addresses, workers=2, recovery=stores, ids=[0])
    wait([first, second])
    got = parquet(data)
    assert sorted(got) == sorted(want)
    for name, frame in want.items():
        assert got[name].equals(frame), name
    assert not list(data.rglob("*.tmp"))
    # It resumed from the stores, not from the start: files closed before the kill stay as written.
    kept = [path for path, mtime in before.items() if path.stat().st_mtime_ns == mtime]
    assert kept, "the restart rewrote every file: it did not resume"
    ids = alert_ids(broker, single)
    assert ids and set(alert_ids(broker, cluster)) == set(ids)  # at least once, the same ids
    print(
        f"cluster recovery: killed at {len(before)} of {len(want)} files, {len(kept)} kept, "
        f"epoch {[committed_epoch(store) for store in stores]}"
    )
