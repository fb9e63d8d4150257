"""Memory of the bars flow over a long run: does its RSS stay flat once warmed up?

The synthetic market (1 000 symbols by default) writes N single-trade messages (10**7 by
default, streamed in 50 000-trade chunks) to a fresh 4-partition ``trades`` topic of the embedded
Tansu broker, spread evenly over ``--span-hours`` of event time: 36 h from 2024-01-01T00:00Z by
default, so every 1m…1h window opens and closes continuously (2 160 times for 1m, 36 for 1h) and
the UTC day closes once mid-stream, at 24 h, and once more at the end. Then the real
``candlewax flow --exit-when-done`` reads it all as its own process (own data directory and
consumer group, no recovery store, every default interval, flat bars, trade archive on) while
this harness samples every ``--every-s`` (0.5 s):

- the flow's RSS (VmRSS of the process and its children: ``candlewax flow`` execs
  ``python -m bytewax.run``, so it is one process), its anonymous part (RssAnon) and VmHWM;
- its Prometheus metrics: messages consumed so far (``candlewax_flow_messages_total``, one trade
  each: the x axis of the samples), open windows per interval, the newest watermark;
- the broker's RSS. Tansu keeps every topic in memory (~175 MB per 10**6 trades, and the bars
  the flow writes): it grows with the topics and is not the flow's.

Warm-up: the later of ``--warmup`` (10 %) of the trades and the first 2 h of event time;
the RSS at its end is the median of the samples over its last fifth (one sample swings by tens
of MB with the batch in hand). The check: the largest sampled RSS after warm-up is within 10 %
of it (exit status 1 otherwise). The flow reads its partitions in step, a batch of each in turn,
and the keys spread the trades unevenly (32/17/19/32 % by default): the lighter partitions end
first (from ~66 % of the trades on), and the flow then holds less. Every run must count all N
trades in its 1m Parquet bars. It prints a small table and writes the samples and the summary
to bench/results/memory-<UTC time>.json.

    make bench                                      # (after the other benchmarks)
    .venv/bin/python -m bench.memory                # 10**7 trades, 1 000 symbols: ~10 min
    .venv/bin/python -m bench.memory --quick        # 10**6 trades over 6 h: ~2 min
    .venv/bin/python -m bench.memory --quick --flow-env CANDLEWAX_ARCHIVE_TRADES=false
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import polars as pl

from bench.scaling import CLI, PARTITIONS, children, environment
from bench.throughput import produce, save_results
from candlewax.broker import EmbeddedBroker, free_port
from candlewax.settings import Settings
from candlewax.topics import ensure_topics
from connectors.synthetic import DEFAULT_START_MS

LIMIT = 0.10  # the requirement: RSS after warm-up within 10 % of the RSS at its end
METRIC = re.compile(r"^(candlewax_\w+)(?:\{([^}]*)\})? ([-+.\deE]+|NaN)$", re.M)


@dataclass
class Sample:
    t_s: float  # since the flow process started
    rss_mb: float  # flow: VmRSS of the process tree
    anon_mb: float  # flow: RssAnon (heap, arenas: what a leak grows)
    hwm_mb: float  # flow: VmHWM (the kernel's peak RSS so far)
    broker_mb: float
    trades: int | None  # consumed so far (metrics), None before the endpoint answers
    watermark_s: float | None = None  # newest watermark over the partitions (event time)
    open_windows: dict[str, int] = field(default_factory=dict)  # per interval, all partitions


def status_mb(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon, VmHWM of a process in MiB ({} once it is gone)."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "RssAnon", "VmHWM"):
                    out[name] = int(rest.split()[0]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return pids


def scrape(port: int) -> tuple[int, float | None, dict[str, int]] | None:
    """(messages consumed, newest watermark, open windows per interval) from /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    messages, marks = 0, []
    windows: dict[str, int] = {}
    for name, labels, value in METRIC.findall(text):
        if name == "candlewax_flow_messages_total":
            messages += int(float(value))
        elif name == "candlewax_watermark_seconds":
            marks.append(float(value))
        elif name == "candlewax_open_windows":
            interval = dict(re.findall(r'(\w+)="([^"]*)"', labels)).get("interval", "?")
            windows[interval] = windows.get(interval, 0) + int(float(value))
    return messages, max(marks, default=None), windows


def run_flow(
    bootstrap: str,
    prefix: str,
    broker_pid: int,
    every_s: float,
    timeout_s: float,
    extra_env: dict[str, str],
) -> tuple[list[Sample], float, dict[str, int]]:
    """Run ``candlewax flow --exit-when-done`` over the topic; its samples, wall time, and per
    interval the bars it wrote to Parquet and the trades they count."""
    env = environment(bootstrap, prefix) | extra_env
    port = free_port()
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="candlewax-memory-") as tmp:
        log_path = Path(tmp) / "flow.log"
        cmd = [*CLI, "flow", "--data-dir", str(Path(tmp) / "data"), "--exit-when-done"]
        cmd += ["--metrics-port", str(port)]
        start = time.perf_counter()
        with log_path.open("wb") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                tick = time.perf_counter()
                pids = tree(proc.pid)
                stats = [status_mb(p) for p in pids]
                scraped = scrape(port)
                if proc.poll() is not None or not stats[0]:
                    break
                trades, mark, windows = scraped if scraped else (None, None, {})
                samples.append(
                    Sample(
                        t_s=round(tick - start, 2),
                        rss_mb=round(sum(s.get("VmRSS", 0) for s in stats), 1),
                        anon_mb=round(sum(s.get("RssAnon", 0) for s in stats), 1),
                        hwm_mb=round(max(s.get("VmHWM", 0) for s in stats), 1),
                        broker_mb=round(status_mb(broker_pid).get("VmRSS", 0), 1),
                        trades=trades,
                        watermark_s=mark,
                        open_windows=windows,
                    )
                )
                if tick - start > timeout_s:
                    raise RuntimeError(f"the flow still runs after {timeout_s:.0f} s")
                time.sleep(max(0.0, every_s - (time.perf_counter() - tick)))
            proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
        wall = time.perf_counter() - start
        text = log_path.read_text(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"the flow exited {proc.returncode}:\n{text[-3000:]}")
        written: dict[str, int] = {}
        for interval in sorted(Path(tmp, "data", "bars").glob("interval=*")):
            name = interval.name.split("=", 1)[1]
            counts = pl.scan_parquet(interval / "*" / "*.parquet").select(
                bars=pl.len(), trades=pl.col("trades").sum()
            )
            bars, trades = counts.collect().row(0)
            written[f"{name}_bars"], written[f"{name}_trades"] = int(bars), int(trades)
    return samples, wall, written


def warmup_trades(trades: int, share: float, span_h: float) -> int:
    """The later of ``share`` of the trades and the end of the first 2 h of event time (every
    window up to 1h has closed, in every partition)."""
    return int(max(share * trades, min(1.0, 2.0 / span_h) * trades))


def summarize(samples: list[Sample], cut: int, wall_s: float) -> dict[str, Any]:
    counted = [s for s in samples if s.trades is not None]
    if not counted:
        raise RuntimeError("no sample has the flow's metrics: did its endpoint ever answer?")
    after = [s for s in counted if s.trades is not None and s.trades >= cut]
    if not after:
        raise RuntimeError("no sample after warm-up: too few trades, or sampled too slowly")
    at_warmup = after[0]
    # The RSS at the end of warm-up: the median of the samples over its last fifth (a single
    # sample swings by tens of MB with the batch in hand), or the first one after it.
    tail = [s.rss_mb for s in counted if s.trades is not None and 0.8 * cut <= s.trades < cut]
    base = statistics.median(tail) if tail else at_warmup.rss_mb
    # Samples that consumed (first to last trade): the trades/s of the run net of start-up.
    moving = [s for s in counted if s.trades]
    first, last = moving[0], moving[-1]
    busy_s = last.t_s - first.t_s
    rss_max = max(after, key=lambda s: s.rss_mb)
    rss_min = min(after, key=lambda s: s.rss_mb)
    growth = (rss_max.rss_mb - base) / base
    # A leak shows as medians that keep rising from one stretch of trades to the next.
    span = max(1, (last.trades or 0) - cut)
    stretches: dict[int, list[float]] = {}
    for s in after:
        stretches.setdefault(min(9, 10 * ((s.trades or 0) - cut) // span), []).append(s.rss_mb)
    medians = [round(statistics.median(v)) for _, v in sorted(stretches.items())]
    peak = max(max(s.rss_mb for s in samples), max(s.hwm_mb for s in samples))
    return {
        "warmup_trades": cut,
        "warmup_at_s": at_warmup.t_s,
        "rss_at_warmup_mb": round(base, 1),
        "rss_first_after_warmup_mb": at_warmup.rss_mb,
        "rss_max_after_warmup_mb": rss_max.rss_mb,
        "rss_max_at_trades": rss_max.trades,
        "rss_min_after_warmup_mb": rss_min.rss_mb,
        "anon_at_warmup_mb": at_warmup.anon_mb,
        "anon_max_after_warmup_mb": max(s.anon_mb for s in after),
        "growth_pct": round(100 * growth, 2),
        "rss_median_after_warmup_mb": statistics.median(s.rss_mb for s in after),
        #: medians of ten equal stretches of trades after warm-up
        "rss_medians_by_tenth_mb": medians,
        "passed": growth <= LIMIT,
        "peak_rss_mb": peak,
        "broker_rss_end_mb": samples[-1].broker_mb,
        "broker_rss_max_mb": max(s.broker_mb for s in samples),
        "open_windows_max": {
            k: max(s.open_windows.get(k, 0) for s in samples) for k in counted[-1].open_windows
        },
        "wall_s": round(wall_s, 1),
        "trades_per_s": round((last.trades or 0) / busy_s) if busy_s > 0 else None,
        "trades_per_s_wall": round((last.trades or 0) / wall_s),
        "samples": len(samples),
    }


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: flow killed, broker stopped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=10_000_000)
    parser.add_argument("--symbols", type=int, default=1_000)
    parser.add_argument("--span-hours", type=float, default=None,
                        help="event time the trades cover (default 36; 6 with --quick)")  # fmt: skip
    parser.add_argument("--start-ms", type=int, default=DEFAULT_START_MS,
                        help="event time of the first trade (default 2024-01-01T00:00Z)")  # fmt: skip
    parser.add_argument("--warmup", type=float, default=0.10,
                        help="share of the trades (0.10), at least the first 2 h of event time")  # fmt: skip
    parser.add_argument("--every-s", type=float, default=0.5, help="sampling period")
    parser.add_argument("--timeout-s", type=float, default=7200.0, help="of the flow run")
    parser.add_argument("--quick", action="store_true", help="10**6 trades over 6 h")
    parser.add_argument("--flow-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment of the flow, e.g. CANDLEWAX_BATCH_MAX=1000")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.trades = 1_000_000 if args.trades == parser.get_default("trades") else args.trades
        args.span_hours = 6.0 if args.span_hours is None else args.span_hours
    if args.span_hours is None:
        args.span_hours = 36.0
    if args.symbols < PARTITIONS or not 0 < args.warmup < 1:
        parser.error(f"--symbols at least {PARTITIONS}, --warmup in (0, 1)")
    extra_env = dict(x.split("=", 1) for x in args.flow_env if "=" in x)
    if len(extra_env) != len(args.flow_env):
        parser.error("--flow-env takes NAME=VALUE")
    cut = warmup_trades(args.trades, args.warmup, args.span_hours)
    signal.signal(signal.SIGTERM, _interrupt)

    broker = EmbeddedBroker("tansu")
    bootstrap = broker.start()
    try:
        (broker_pid,) = children()
        idle_broker_mb = status_mb(broker_pid).get("VmRSS", 0.0)
        prefix = f"mem{uuid.uuid4().hex[:8]}."
        settings = Settings(
            bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=PARTITIONS, retention_ms=-1
        )
        ensure_topics(settings)
        t = time.perf_counter()
        produce(
            settings, args.symbols, args.trades,
            span_s=args.span_hours * 3600, start_ms=args.start_ms, flush_s=300,
        )  # fmt: skip
        produce_s = time.perf_counter() - t
        topic_broker_mb = status_mb(broker_pid).get("VmRSS", 0.0)
        print(
            f"{args.trades:,} trades of {args.symbols:,} symbols over {args.span_hours:g} h of "
            f"event time, {PARTITIONS} partitions, produced in {produce_s:.0f} s; broker RSS "
            f"{idle_broker_mb:,.0f} MB idle, {topic_broker_mb:,.0f} MB holding the topic",
            flush=True,
        )
        samples, wall, written = run_flow(
            bootstrap, prefix, broker_pid, args.every_s, args.timeout_s, extra_env
        )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        broker.stop()
    summary = summarize(samples, cut, wall)
    summary["parquet"] = written
    summary["broker_rss_idle_mb"] = round(idle_broker_mb, 1)
    summary["broker_rss_with_topic_mb"] = round(topic_broker_mb, 1)
    summary["produce_s"] = round(produce_s, 1)
    print(f"{'flow RSS':<36} {'MB':>6}")
    rows = [
        (f"end of warm-up ({cut:,} trades)", summary["rss_at_warmup_mb"]),
        (f"max after warm-up (at {summary['rss_max_at_trades']:,})", summary["rss_max_after_warmup_mb"]),
        ("median after warm-up", summary["rss_median_after_warmup_mb"]),
        ("min after warm-up", summary["rss_min_after_warmup_mb"]),
        ("peak (whole run, VmHWM)", summary["peak_rss_mb"]),
    ]  # fmt: skip
    for label, value in rows:
        print(f"{label:<36} {value:>6,.0f}")
    verdict = "PASS" if summary["passed"] else "FAIL"
    print(
        f"growth after warm-up: {summary['growth_pct']:+.1f} % (limit +{LIMIT:.0%}) {verdict}; "
        f"medians by tenth after warm-up: {' '.join(map(str, summary['rss_medians_by_tenth_mb']))}"
    )
    rate = summary["trades_per_s"]
    print(
        f"trades/s {rate or 0:,} (first to last trade consumed; {wall:.0f} s wall, start-up "
        f"included); broker RSS at the end {summary['broker_rss_end_mb']:,.0f} MB (not the flow's)"
    )
    save_results(
        "memory", {"args": vars(args), "summary": summary, "samples": [asdict(s) for s in samples]}
    )
    if written.get("1m_trades") != args.trades:
        print(f"error: the 1m bars count {written.get('1m_trades')} trades, not {args.trades:,}")
        return 1
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
