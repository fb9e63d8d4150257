"""Parquet on object storage: the flow, the trade archive and the backtest write to a real S3
API server on 127.0.0.1 (moto's), and Polars and DuckDB read the results straight from it."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import polars as pl
import pytest

from candlewax.broker import EmbeddedBroker
from candlewax.codec import Trade
from connectors.replay import iter_file
from tests.conftest import BTCUSDT_GZ
from tests.reference import as_decimals, reference_bars

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "candlewax.cli"]
SECRET = "moto-secret-key-NEVER-LOGGED"


@cache
def btcusdt() -> tuple[Trade, ...]:
    return tuple(t for item in iter_file(BTCUSDT_GZ) for t in item.trades)


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """moto's S3 server on 127.0.0.1 with bucket ``bkt``; the environment that reaches it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/bkt", method="PUT")).read()
    try:
        yield {
            "AWS_ACCESS_KEY_ID": "candlewax-test",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ALLOW_HTTP": "true",  # Polars (object_store) refuses plain http otherwise
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    finally:
        server.stop()


@pytest.fixture(scope="module")
def replayed() -> Iterator[dict[str, str]]:
    """A tansu broker holding the BTCUSDT recording in its trades topic."""
    with EmbeddedBroker("tansu") as broker:
        env = {"CANDLEWAX_BOOTSTRAP_SERVERS": broker.bootstrap_servers, "CANDLEWAX_RETENTION_MS": "-1", "CANDLEWAX_CONFIG": ""}  # fmt: skip
        done = run("replay", str(BTCUSDT_GZ), "--per-message", "50", env=env)
        assert "published 9757 trades" in done.stdout, done.stderr[-2000:]
        yield env


def run(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **env}
    )


def keys(s3: dict[str, str], prefix: str) -> list[str]:
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(
        access_key="candlewax-test", secret_key=SECRET, region="us-east-1",
        endpoint_override=s3["AWS_ENDPOINT_URL"], scheme="http",
    )  # fmt: skip
    infos = fs.get_file_info(pafs.FileSelector(f"bkt/{prefix}", recursive=True))
    return sorted(i.path.removeprefix(f"bkt/{prefix}/") for i in infos if i.type == pafs.FileType.File)  # fmt: skip


def flow(env: dict[str, str], data_dir: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run("flow", "--data-dir", data_dir, "--exit-when-done", "--metrics-port", "0", *extra, env=env)  # fmt: skip


def test_the_flow_writes_the_same_layout_to_s3_that_polars_and_duckdb_read(
    s3: dict[str, str], replayed: dict[str, str], tmp_path: Path
) -> None:
    env = {**replayed, **s3}
    remote = flow(env, "s3://bkt/live")
    assert remote.returncode == 0, remote.stderr[-3000:]
    assert SECRET not in remote.stdout + remote.stderr
    local = flow(env, str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr[-3000:]
    # Same layout, same deterministic names, nothing else (no temp or probe objects).
    on_disk = sorted(str(p.relative_to(tmp_path / "local")) for p in (tmp_path / "local").rglob("*.parquet"))  # fmt: skip
    assert keys(s3, "live") == on_disk and any(k.startswith("trades/") for k in on_disk)
    # Polars straight from S3: the exact bars an independent computation gives.
    storage = {"aws_endpoint_url": s3["AWS_ENDPOINT_URL"], "aws_allow_http": "true", "aws_region": "us-east-1",
               "aws_access_key_id": "candlewax-test", "aws_secret_access_key": SECRET}  # fmt: skip
    bars = pl.read_parquet("s3://bkt/live/bars/interval=5m/**/*.parquet", storage_options=storage)
    ours = sorted((as_decimals({**r, "interval": "5m"}) for r in bars.to_dicts()), key=lambda b: b["start_ms"])  # fmt: skip
    assert ours == reference_bars(btcusdt(), "5m")
    trades = pl.read_parquet("s3://bkt/live/trades/**/*.parquet", storage_options=storage)
    assert sorted(trades["id"].to_list()) == sorted(t.id for t in btcusdt())
    # DuckDB with the httpfs extension from PyPI (duckdb-ext-httpfs), no download.
    import duckdb
    import duckdb_ext

    ext = next(Path(duckdb_ext.__path__[0]).rglob("httpfs.duckdb_extension"))
    con = duckdb.connect()
    con.execute(f"LOAD '{ext}'")
    host = s3["AWS_ENDPOINT_URL"].removeprefix("http://")
    con.execute(f"CREATE SECRET (TYPE s3, KEY_ID 'candlewax-test', SECRET '{SECRET}', REGION 'us-east-1', ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)")  # fmt: skip
    count, volume = con.execute(
        "SELECT count(*), sum(trades) FROM read_parquet('s3://bkt/live/bars/interval=1m/**/*.parquet')"
    ).fetchone()  # type: ignore[misc]
    want_1m = reference_bars(btcusdt(), "1m")
    assert (count, volume) == (len(want_1m), len(btcusdt()))
    # A re-run over the same input writes the same objects again: no duplicates, same bytes.
    before = {k: pl.read_parquet(f"s3://bkt/live/{k}", storage_options=storage) for k in keys(s3, "live")}  # fmt: skip
    again = flow(env, "s3://bkt/live")
    assert again.returncode == 0, again.stderr[-3000:]
    assert keys(s3, "live") == sorted(before)
    for key, frame in before.items():
        assert pl.read_parquet(f"s3://bkt/live/{key}", storage_options=storage).equals(frame)
    # The backtest reads the S3 trade archive and writes its results and report to S3.
    bt = run("backtest", "--from", "2024-08-08T23:55:00Z", "--to", "2024-08-09T00:00:00Z",
             "--from-archive", "s3://bkt/live/trades", "--out", "s3://bkt/bt", env=env)  # fmt: skip
    assert bt.returncode == 0, bt.stderr[-3000:]
    assert {"alerts.jsonl", "summary.json", "report.html"} <= set(keys(s3, "bt"))
    bt_bars = pl.read_parquet("s3://bkt/bt/bars/interval=5m/**/*.parquet", storage_options=storage)
    in_range = [b for b in ours if 1_723_161_300_000 <= b["start_ms"] < 1_723_161_600_000]
    assert sorted((as_decimals({**r, "interval": "5m"}) for r in bt_bars.to_dicts()), key=lambda b: b["start_ms"]) == in_range  # fmt: skip


@pytest.mark.parametrize(
    ("data_dir", "words"),
    [
        ("s3://no-such-bucket/x", ["data dir s3://no-such-bucket/x is not writable"]),
        ("hdfs://nn/x", ["data_dir", "not an object store URI", "s3://bucket/prefix"]),
    ],
)
def test_an_unusable_object_store_stops_the_flow_at_start(
    s3: dict[str, str], replayed: dict[str, str], data_dir: str, words: list[str]
) -> None:
    result = flow({**replayed, **s3}, data_dir)
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert all(w in line for w in words), line
    assert SECRET not in result.stderr
