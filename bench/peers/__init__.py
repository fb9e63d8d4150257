"""The peers: candlewax's bars flow against a naive Bytewax pipeline and a Quix Streams app.

One run, one topic. The synthetic market writes N trades (``bench.throughput.produce``: 10
minutes of event time, one trade per message) to a fresh one-partition ``trades`` topic of the
embedded Tansu broker (or ``--bootstrap-servers``). An exact reference is computed from the
topic read back: every message through ``candlewax.codec.decode_message``, then plain-Decimal
1m bars (``tests.reference.reference_bars``). Then, on that same topic:

- candlewax: the real bars flow in process (``bench.throughput.flow``: ``run_main``, one worker,
  ``exit_when_done``), timed from build to exit; its 1m bars are read from its Parquet;
- naive Bytewax (``naive_bytewax.py``): bytewax 0.21.1, ``KafkaSource(tail=False)`` → orjson →
  ``fold_window`` with an ``EventClock`` on ``ts_ms`` (``wait_for_system_duration`` =
  ``--bytewax-wait-s``, 5 s by default, as the docs' examples) and a 1-minute
  ``TumblingWindower`` aligned to the epoch, floats;
- Quix Streams (``quix_windows.py``): an ``Application`` with its defaults,
  ``tumbling_window(60_000).reduce(...).final()``, timestamps from ``ts_ms``, floats.

Each peer runs as a subprocess under its own virtual environment in ``.bench-venvs/<peer>``
(made with this interpreter from the pinned ``requirements-<peer>.txt``, and reused while that
file and the interpreter stay the same), times itself from its first message to its last and
writes its bars to a JSON file, which this harness compares with the reference.

**The equality rule.** Bars are matched by (venue, symbol, window start). A bar is *exact* when
its trade count equals the reference's and each of open, high, low, close and volume equals the
reference: a float must be ``float(reference)`` — the double nearest the exact decimal, the best
a float can hold — and a decimal (candlewax) must be equal as a Decimal. A bar with the right
trade count whose floats are all within 1e-9 (relative) of the reference but not exact is
counted as *float rounding*. *Trades dropped* is the reference's trade count minus the trades the
peer's bars count: *late* ones (missing from bars that were emitted) plus those in windows the
peer never emitted (*unclosed*).

    make bench-peers                                  # 1M trades, 100 symbols, both peers
    make bench-peers ARGS="--trades 200000 --peers bytewax --repeat 3"

It prints, for each system, trades/s (candlewax: its whole ``run_main``; a peer: first message to
last) and trades per CPU-second of its own process (all threads, not the broker's; a peer's from
its first message to its exit: less sensitive to others' load on a shared machine), both as
ratios to candlewax too, and the bar counts; it writes bench/results/peers-<UTC time>.json.
Systems take turns in a rotating order across ``--repeat`` runs; rates are medians.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENVS = HERE.parents[1] / ".bench-venvs"
FIELDS = ("open", "high", "low", "close", "volume")
#: Relative difference under which a float that is not exact counts as float rounding.
ROUNDING = 1e-9


@dataclass(frozen=True)
class Peer:
    key: str
    name: str
    script: str
    requirements: str
    package: str  # whose version names the peer in the table

    def args(self, options: argparse.Namespace) -> list[str]:
        if self.key == "bytewax":
            return ["--wait-s", f"{options.bytewax_wait_s:g}"]
        return ["--idle-s", f"{options.idle_s:g}"]


PEERS = {
    "bytewax": Peer(
        "bytewax", "naive Bytewax", "naive_bytewax.py", "requirements-bytewax.txt", "bytewax"
    ),
    "quix": Peer("quix", "Quix Streams", "quix_windows.py", "requirements-quix.txt", "quixstreams"),
}


# --------------------------------------------------------------------------- comparison


def field_equal(reference: Decimal, value: object) -> bool:
    """The equality rule for one field: a float equals ``float(reference)`` (the nearest
    double); a Decimal, int or decimal string equals ``reference`` exactly."""
    if isinstance(value, float):
        return value == float(reference)
    return Decimal(str(value)) == reference


def _near(reference: Decimal, value: object) -> bool:
    exact = float(reference)
    return abs(float(str(value)) - exact) <= ROUNDING * max(abs(exact), 1e-300)


def bar_key(bar: dict[str, Any]) -> tuple[str, str, int]:
    return (str(bar["venue"]), str(bar["symbol"]), int(bar["start_ms"]))


def compare_bars(
    reference: Sequence[dict[str, Any]], bars: Iterable[dict[str, Any]]
) -> dict[str, int]:
    """Counts of ``bars`` against the ``reference`` 1m bars, by the equality rule above."""
    ref = {bar_key(b): b for b in reference}
    got: dict[tuple[str, str, int], dict[str, Any]] = {}
    duplicates = counted = 0
    for bar in bars:
        counted += int(bar["trades"])
        key = bar_key(bar)
        if key in got:
            duplicates += 1
            continue
        got[key] = bar
    exact = rounding = wrong = missing = late = unclosed = 0
    unequal = dict.fromkeys(FIELDS, 0)  # bars with the right trade count, by field that differs
    for key, want in ref.items():
        bar = got.get(key)
        if bar is None:
            missing += 1
            unclosed += int(want["trades"])
            continue
        late += max(0, int(want["trades"]) - int(bar["trades"]))
        if int(bar["trades"]) != int(want["trades"]):
            wrong += 1
            continue
        differ = [f for f in FIELDS if not field_equal(want[f], bar[f])]
        for f in differ:
            unequal[f] += 1
        if not differ:
            exact += 1
        elif all(isinstance(bar[f], float) and _near(want[f], bar[f]) for f in FIELDS):
            rounding += 1
        else:
            wrong += 1
    reference_trades = sum(int(b["trades"]) for b in reference)
    return {
        "windows": len(ref),
        "bars": len(got) + duplicates,
        "exact": exact,
        "float_rounding": rounding,
        "wrong": wrong,
        "missing_windows": missing,
        "extra_windows": len(got.keys() - ref.keys()),
        "duplicate_bars": duplicates,
        "reference_trades": reference_trades,
        "counted_trades": counted,
        "trades_dropped": reference_trades - counted,
        "late_trades": late,
        "unclosed_trades": unclosed,
        **{f"unequal_{f}": n for f, n in unequal.items()},
    }


# --------------------------------------------------------------------------- virtual environments


def venv_stamp(requirements: Path) -> str:
    """What a venv was built from: the requirements file and this interpreter."""
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(f"{sys.version}|{sys.base_prefix}".encode())
    return digest.hexdigest()


def ensure_venv(peer: Peer) -> tuple[Path, str]:
    """``.bench-venvs/<peer>``'s python, built from the peer's requirements unless a venv built
    from the same requirements and interpreter is there; and "reused" or "built in N s"."""
    root = VENVS / peer.key
    python = root / "bin" / "python"
    stamp_file = root / ".requirements.sha256"
    stamp = venv_stamp(HERE / peer.requirements)
    if python.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return python, "reused"
    start = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    VENVS.mkdir(exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", str(root)],
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(HERE / peer.requirements)],
    ]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if done.returncode:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise RuntimeError(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{tail}")
    stamp_file.write_text(stamp)
    return python, f"built in {time.perf_counter() - start:.0f} s"


def package_version(python: Path, package: str) -> str:
    code = f"from importlib.metadata import version; print(version({package!r}))"
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


# --------------------------------------------------------------------------- runs


def read_trades(bootstrap: str, topic: str) -> list[Any]:
    """Every trade of ``topic`` in log order, decoded by candlewax's codec."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from candlewax.codec import Trade, decode_message

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-peers-{uuid.uuid4().hex}",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    done: set[int] = set()
    trades: list[Any] = []
    rejected = 0
    deadline = time.monotonic() + 600
    while len(done) < len(parts):
        if time.monotonic() > deadline:
            raise RuntimeError(f"reading {topic} back took over 600 s")
        for msg in consumer.consume(10_000, 0.1):
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    done.add(msg.partition())
                continue
            records, bad = decode_message(msg.value())
            trades += (r for r in records if isinstance(r, Trade))
            rejected += len(bad)
    consumer.close()
    if rejected:
        raise RuntimeError(f"{rejected} messages of {topic} did not decode")
    return trades


def run_candlewax(
    bootstrap: str, prefix: str, reference: list[dict[str, Any]], trades: int
) -> dict[str, Any]:
    import polars as pl

    from bench.throughput import flow
    from candlewax.settings import Settings

    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            bootstrap_servers=bootstrap,
            topic_prefix=prefix,
            partitions=1,
            retention_ms=-1,
            data_dir=Path(data_dir),
            exit_when_done=True,
        )
        cpu = time.process_time()
        elapsed = flow(settings)
        cpu = time.process_time() - cpu
        files = sorted((Path(data_dir) / "bars" / "interval=1m").rglob("*.parquet"))
        bars = pl.concat([pl.read_parquet(f) for f in files]).to_dicts() if files else []
    return {
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "trades_per_s": trades / elapsed,
        "timed": "run_main of the whole flow, build to exit (CPU: the same span)",
        "comparison": compare_bars(reference, bars),
    }


def run_peer(
    peer: Peer,
    python: Path,
    options: argparse.Namespace,
    bootstrap: str,
    topic: str,
    reference: list[dict[str, Any]],
) -> dict[str, Any]:
    """One run of ``peer``; a dict with "error" (exactly what went wrong) if it did not work."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "bars.json"
        log = Path(work) / "peer.log"
        cmd = [
            str(python),
            str(HERE / peer.script),
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--trades",
            str(options.trades),
            "--out",
            str(out),
            "--deadline-s",
            f"{options.deadline_s:g}",
            *peer.args(options),
        ]
        start = time.perf_counter()
        with log.open("w") as fh:
            try:
                code = subprocess.run(
                    cmd, cwd=work, env=env, stdout=fh, stderr=subprocess.STDOUT,
                    timeout=options.deadline_s + 60,
                ).returncode  # fmt: skip
            except subprocess.TimeoutExpired:
                code = None
        wall = time.perf_counter() - start
        tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-25:])
        result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    if code is None:
        return {"error": f"killed after {options.deadline_s + 60:g} s", "log_tail": tail}
    if code or "error" in result or "bars" not in result:
        why = result.get("error") or f"exited with {code} and no result"
        return {"error": why, "log_tail": tail}
    bars = result.pop("bars")
    elapsed = result["elapsed_s"]
    return {
        **result,
        "process_wall_s": wall,
        "trades_per_s": options.trades / elapsed if elapsed > 0 else None,
        "timed": "first message to last message, by the peer (CPU: first message to exit)",
        "comparison": compare_bars(reference, bars),
        "log_tail": tail if result["messages"] != options.trades else "",
    }


# --------------------------------------------------------------------------- main


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine so far (/proc/stat), 0s if unknown."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # minus idle and iowait


def _span(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--peers", nargs="+", choices=sorted(PEERS), default=list(PEERS))
    parser.add_argument("--repeat", type=int, default=1, help="runs per system (median rate)")
    parser.add_argument("--engine", default="tansu")
    parser.add_argument("--bootstrap-servers", default=None)
    parser.add_argument(
        "--bytewax-wait-s", type=float, default=5.0, help="EventClock wait_for_system_duration"
    )
    parser.add_argument("--idle-s", type=float, default=5.0, help="Quix: stop after this idle")
    parser.add_argument("--deadline-s", type=float, default=600.0, help="per peer run")
    options = parser.parse_args(argv)

    from bench.throughput import SPAN_S, produce, save_results, start_broker
    from candlewax.settings import Settings
    from candlewax.topics import ensure_topics
    from tests.reference import reference_bars

    pythons: dict[str, Path] = {}
    names: dict[str, str] = {"candlewax": "candlewax"}
    failures: dict[str, dict[str, Any]] = {}
    for key in options.peers:
        peer = PEERS[key]
        try:
            pythons[key], how = ensure_venv(peer)
            names[key] = f"{peer.name} {package_version(pythons[key], peer.package)}"
            print(f"{names[key]}: .bench-venvs/{key} {how}", flush=True)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            failures[key] = {"error": f"virtual environment: {exc}"}
            print(f"{peer.name}: cannot build its virtual environment: {exc}", flush=True)

    broker, bootstrap = start_broker(options)
    runs: dict[str, list[dict[str, Any]]] = {"candlewax": [], **{k: [] for k in pythons}}
    try:
        prefix = f"peers{uuid.uuid4().hex[:8]}."
        settings = Settings(
            bootstrap_servers=bootstrap,
            topic_prefix=prefix,
            partitions=1,
            retention_ms=-1,
            exit_when_done=True,
        )
        ensure_topics(settings)
        topic = settings.topic("trades")
        start = time.perf_counter()
        produce(settings, options.symbols, options.trades, 1)
        print(
            f"{options.trades:,} trades of {options.symbols} symbols over {SPAN_S // 60} minutes "
            f"of event time → {topic} (1 partition, broker "
            f"{options.engine if broker else bootstrap}) in {time.perf_counter() - start:.1f} s",
            flush=True,
        )
        start = time.perf_counter()
        trades = read_trades(bootstrap, topic)
        if len(trades) != options.trades:
            raise SystemExit(f"{topic} holds {len(trades):,} trades, not {options.trades:,}")
        reference = reference_bars(trades, "1m")
        del trades
        print(
            f"reference: {len(reference):,} exact 1m bars (Decimal, from the topic read back) "
            f"in {time.perf_counter() - start:.1f} s",
            flush=True,
        )
        systems = ["candlewax", *pythons]
        for r in range(options.repeat):
            order = systems[r % len(systems) :] + systems[: r % len(systems)]
            for key in order:
                busy0, total0 = machine_ticks()
                if key == "candlewax":
                    run = run_candlewax(bootstrap, prefix, reference, options.trades)
                else:
                    run = run_peer(PEERS[key], pythons[key], options, bootstrap, topic, reference)
                busy1, total1 = machine_ticks()
                cores = os.cpu_count() or 1
                run["machine_busy_cores"] = (
                    cores * (busy1 - busy0) / (total1 - total0) if total1 > total0 else None
                )
                runs[key].append(run)
                if "error" in run:
                    print(f"  {names[key]}: did not work: {run['error']}\n{run['log_tail']}")
                    continue
                c = run["comparison"]
                busy = run["machine_busy_cores"]
                print(
                    f"  run {r + 1} {names[key]}: {run['elapsed_s']:.2f} s (CPU "
                    f"{run['cpu_s']:.2f} s), {c['exact']:,} exact bars, "
                    f"{c['trades_dropped']:,} trades dropped; machine busy "
                    f"{'?' if busy is None else format(busy, '.1f')} of {cores} cores",
                    flush=True,
                )
    finally:
        if broker is not None:
            broker.stop()

    summary: dict[str, dict[str, Any]] = {}
    for key, done in runs.items():
        good = [r for r in done if "error" not in r]
        if not good:
            failures[key] = done[-1] if done else failures.get(key, {"error": "no run"})
            continue
        elapsed = statistics.median(r["elapsed_s"] for r in good)
        cpu = statistics.median(r["cpu_s"] for r in good)
        summary[key] = {
            "name": names[key],
            "config": good[-1].get("config", {}),
            "median_elapsed_s": elapsed,
            "median_cpu_s": cpu,
            "trades_per_s": options.trades / elapsed,
            "trades_per_cpu_s": options.trades / cpu,
            "runs": done,
        }
    base = summary.get("candlewax", {})
    print(
        f"\n{'system':<22} {'trades/s':>9} {'÷cw':>5} {'trades/CPU-s':>12} {'÷cw':>5} "
        f"{'exact bars':>15} {'float≠':>6} {'wrong':>5} {'unemitted':>9} {'dropped':>8} "
        f"{'late':>5} {'unclosed':>8}"
    )
    for row in summary.values():
        good = [r["comparison"] for r in row["runs"] if "error" not in r]
        last = good[-1]
        for rate in ("trades_per_s", "trades_per_cpu_s"):
            row[f"{rate}_vs_candlewax"] = row[rate] / base[rate] if base else None
        exact = f"{_span([c['exact'] for c in good])} / {last['windows']:,}"
        print(
            f"{row['name']:<22} {row['trades_per_s']:>9,.0f} "
            f"{row['trades_per_s_vs_candlewax'] or 0:>5.2f} {row['trades_per_cpu_s']:>12,.0f} "
            f"{row['trades_per_cpu_s_vs_candlewax'] or 0:>5.2f} {exact:>15} "
            f"{last['float_rounding']:>6,} {last['wrong']:>5,} {last['missing_windows']:>9,} "
            f"{_span([c['trades_dropped'] for c in good]):>8} {last['late_trades']:>5,} "
            f"{last['unclosed_trades']:>8,}"
        )
    for key, failure in failures.items():
        print(f"{names.get(key, key)}: did not run: {failure['error']}")
    print(
        "\ntrades/s: candlewax over its whole run_main (build → exit); a peer from its first "
        "message to its last. trades/CPU-s: CPU time of the system's process (all threads; "
        "not the broker's) over the same span, a peer's from its first message to its exit — "
        "less sensitive to others' load on the machine.\nexact bars: trades and open/high/low/close/volume equal to the "
        "Decimal reference (a float must be float(reference)); float≠: right trade count, floats "
        f"within {ROUNDING:g} but not exact; wrong: other differences; unemitted: reference "
        "windows without a bar.\ndropped = reference trades − trades the bars count = late "
        "(missing from emitted bars) + unclosed (in unemitted windows)."
    )
    for row in summary.values():
        last = [r["comparison"] for r in row["runs"] if "error" not in r][-1]
        fields = ", ".join(f"{f} {last[f'unequal_{f}']:,}" for f in FIELDS if last[f"unequal_{f}"])
        if fields:
            print(f"  {row['name']}: bars with all their trades but unequal: {fields}")
    for row in summary.values():
        last_run = [r for r in row["runs"] if "error" not in r][-1]
        if "process_wall_s" in last_run:
            join = last_run.get("first_message_after_s")
            print(
                f"  {row['name']}: the process ran {last_run['process_wall_s']:.1f} s in all"
                + ("" if join is None else f"; its first message came {join:.1f} s after run()")
                + f"; stopped by {last_run['stopped_by']}; {last_run['late_items']:,} items late"
            )
        for name, value in row["config"].items():
            print(f"  {row['name']}: {name}: {value}")
    save_results(
        "peers",
        {
            "args": vars(options),
            "equality_rule": (
                "bars matched by (venue, symbol, start_ms); exact when trades are equal and each "
                "of open/high/low/close/volume equals the Decimal reference: a float must equal "
                "float(reference), a Decimal must be equal"
            ),
            "reference_windows": len(reference),
            "systems": summary,
            "failures": failures,
        },
    )
    return 0 if not failures else 1
