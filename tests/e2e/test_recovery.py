"""Crash recovery: `candlewax flow -r DIR` killed with -9 at five random moments and restarted
each time ends with exactly the Parquet files, bars and alert ids of an uninterrupted run."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import polars as pl
import pytest

from candlewax.broker import EmbeddedBroker
from tests.kafka_read import read_topic

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "candlewax.cli"]
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _env(broker: EmbeddedBroker, prefix: str, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDLEWAX_")}
    return {
        **env,
        "CANDLEWAX_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "CANDLEWAX_TOPIC_PREFIX": prefix,
        "CANDLEWAX_DATA_DIR": str(data),
        "CANDLEWAX_PARTITIONS": "2",
        "CANDLEWAX_RETENTION_MS": "-1",
        "CANDLEWAX_BATCH_MAX": "2000",  # many epochs: kills land between and inside them
        "CANDLEWAX_ALERTS": orjson.dumps(
            {"range": {"1m": 0.002, "5m": 0.004}, "move": {"5m": 0.004}, "cooldown_ms": 0}
        ).decode(),
    }


def _files(root: Path) -> dict[str, pl.DataFrame]:
    return {str(p.relative_to(root)): pl.read_parquet(p) for p in sorted(root.rglob("*.parquet"))}


def _alert_ids(broker: EmbeddedBroker, prefix: str) -> list[str]:
    return [
        orjson.loads(v)["id"] for *_, v in read_topic(broker.bootstrap_servers, f"{prefix}alerts")
    ]


def _bar_keys(broker: EmbeddedBroker, prefix: str) -> list[tuple[str, str, str, int]]:
    out = []
    for *_, v in read_topic(broker.bootstrap_servers, f"{prefix}bars"):
        b = orjson.loads(v)
        out.append((b["venue"], b["symbol"], b["interval"], b["start_ms"]))
    return out


def test_kill_9_five_times_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    with EmbeddedBroker("tansu") as broker:
        runs = {"ref": tmp_path / "ref", "rec": tmp_path / "rec"}
        for name, data in runs.items():  # the same seeded market into two topic sets
            env = _env(broker, f"{name}.", data)
            published = subprocess.run(
                [
                    *CLI,
                    "synthetic",
                    "--symbols",
                    "30",
                    "--rate",
                    "400",
                    "--duration",
                    "1800",
                    "--speed",
                    "0",
                    "--start-ms",
                    str(START_MS),
                    "--seed",
                    "11",
                ],
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
            )
            assert published.returncode == 0, published.stderr[-2000:]
        flow = [*CLI, "flow", "--exit-when-done", "--metrics-port", "0"]

        t0 = time.monotonic()
        ref = subprocess.run(
            flow, capture_output=True, text=True, timeout=600, env=_env(broker, "ref.", runs["ref"])
        )
        assert ref.returncode == 0, ref.stderr[-3000:]
        uninterrupted_s = time.monotonic() - t0

        recovery = tmp_path / "recovery"
        init = subprocess.run(
            [*CLI, "recovery", "init", str(recovery)], capture_output=True, text=True, timeout=60
        )
        assert init.returncode == 0, init.stderr
        env = _env(broker, "rec.", runs["rec"])
        total = len(list(runs["ref"].rglob("*.parquet")))
        # Kill at five random points of progress (files on disk), each run resuming the last.
        targets = sorted(int(rng.uniform(0.1, 0.9) * total) for _ in range(5))
        kills = 0
        for target in targets:
            proc = subprocess.Popen(
                [*flow, "-r", str(recovery), "-s", "1"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline:
                if len(list(runs["rec"].rglob("*.parquet"))) >= target:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                    break
                time.sleep(0.02)
            proc.wait(timeout=30)
            for path in runs["rec"].rglob("*.parquet"):  # what a reader sees is always whole
                pl.read_parquet(path)
        final = subprocess.run(
            [*flow, "-r", str(recovery), "-s", "1"],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        assert final.returncode == 0, final.stderr[-3000:]
        assert kills == 5, f"only {kills} kills landed mid-run"

        want, got = _files(runs["ref"]), _files(runs["rec"])
        assert sorted(got) == sorted(want)  # the same file names: none missing, none extra
        for name, frame in want.items():
            assert got[name].equals(frame), name
        assert not list(runs["rec"].rglob("*.tmp"))  # nothing half-written left behind
        assert any(name.startswith("bars/interval=1h/") for name in want)

        ref_ids, rec_ids = _alert_ids(broker, "ref."), _alert_ids(broker, "rec.")
        assert ref_ids and len(ref_ids) == len(set(ref_ids))
        assert set(rec_ids) == set(ref_ids)  # at-least-once on the topic, same ids
        assert set(_bar_keys(broker, "rec.")) == set(_bar_keys(broker, "ref."))
        print(
            f"recovery: {kills} kills, uninterrupted {uninterrupted_s:.1f} s, "
            f"{len(want)} files, alerts {len(ref_ids)} (topic after kills: {len(rec_ids)})"
        )


def test_recovery_init_is_idempotent_and_the_flow_asks_for_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run = lambda *a: subprocess.run([*CLI, *a], capture_output=True, text=True, timeout=60)  # noqa: E731
    first = run("recovery", "init", str(store), "--partitions", "2")
    assert first.returncode == 0 and "recovery partitions [0, 1] of 2 created" in first.stdout
    again = run("recovery", "init", str(store), "--partitions", "2")
    assert again.returncode == 0 and "already there" in again.stdout
    assert sorted(p.name for p in store.iterdir()) == ["part-0.sqlite3", "part-1.sqlite3"]
    other = run("recovery", "init", str(store), "--partitions", "3")
    assert other.returncode == 1
    assert (
        "already holds recovery partitions [0, 1] of a store of [2], not [0, 1, 2] of 3"
        in other.stderr
    )
    # One directory per process: process 1 of 2 keeps only its own partition, of a 2-store.
    own = tmp_path / "own"
    mine = run("recovery", "init", str(own), "--partitions", "2", "--only", "1")
    assert mine.returncode == 0 and "recovery partitions [1] of 2 created" in mine.stdout
    assert sorted(p.name for p in own.iterdir()) == ["part-1.sqlite3"]
    wrong = run("recovery", "init", str(own), "--partitions", "2", "--only", "0")
    assert wrong.returncode == 1 and "not [0] of 2" in wrong.stderr
    # --per-process: the partition count and this process's one from the cluster settings, the
    # StatefulSet's way (pod flow-1 of 2 replicas) or from -i/-a, as `candlewax flow` reads them.
    pod = {**os.environ, "HOSTNAME": "flow-1", "CANDLEWAX_CLUSTER__REPLICAS": "2",
           "CANDLEWAX_CLUSTER__PEER_DOMAIN": "flow.ns.svc.cluster.local"}  # fmt: skip
    per = [*CLI, "recovery", "init", str(tmp_path / "pod"), "--per-process"]
    made = subprocess.run(per, capture_output=True, text=True, timeout=60, env=pod)
    assert made.returncode == 0 and "recovery partitions [1] of 2 created" in made.stdout
    assert [p.name for p in (tmp_path / "pod").iterdir()] == ["part-1.sqlite3"]
    flags = run(
        "recovery", "init", str(tmp_path / "p0"), "--per-process", "-i", "0", "-a", "h:1;h:2;h:3"
    )
    assert flags.returncode == 0 and "recovery partitions [0] of 3 created" in flags.stdout
    alone = run("recovery", "init", str(tmp_path / "alone"), "--per-process")
    assert alone.returncode == 0 and "recovery partitions [0] of 1 created" in alone.stdout
    both = run("recovery", "init", str(tmp_path / "x"), "--per-process", "--partitions", "2")
    assert both.returncode == 1 and "--per-process sets --partitions and --only" in both.stderr
    outside = {**pod, "HOSTNAME": "flow-2"}  # a pod the replicas do not count
    bad = subprocess.run(per, capture_output=True, text=True, timeout=60, env=outside)
    assert bad.returncode == 1 and "ordinal 2 but cluster.replicas is 2" in bad.stderr
    # A store last run by 4 workers (as Bytewax records it) resumes only with 4 workers.
    with contextlib.closing(sqlite3.connect(store / "part-0.sqlite3")) as db, db:
        db.execute("INSERT INTO exs (ex_num, worker_count, resume_epoch) VALUES (0, 4, 1)")
    flow = ["flow", "-r", str(store), "--bootstrap-servers", "127.0.0.1:1", "-i", "0"]
    other = run(*flow, "-w", "1", "-a", "127.0.0.1:1;127.0.0.1:2")
    assert other.returncode == 1
    assert "last run by 4 workers in all, this cluster has 2" in other.stderr
    # (resuming with the same count: the kill -9 test of tests/e2e/test_cluster.py)
    missing = run("flow", "-r", str(tmp_path / "none"), "--bootstrap-servers", "127.0.0.1:1")
    assert missing.returncode == 1
    assert f"candlewax recovery init {tmp_path / 'none'}" in missing.stderr
