"""Latency the user feels: trade → alert, and watermark → bar, through the real processes.

For each rate (trades/s of wall time), on a fresh set of topics of the broker (embedded Tansu
unless ``--bootstrap-servers``):

- the real flow runs as its own process (``python -m bytewax.run "flows.bars:build()"`` with the
  settings handed down, exactly what ``candlewax flow`` execs), default detectors on;
- this process publishes trades of ``--symbols`` symbols at the rate with the connectors'
  producer (:class:`connectors.producer.TradeProducer`: idempotent, acks=all, its linger), a
  ``since`` marker per symbol first so every window is complete;
- once per cooldown each symbol gets one *spike* trade 0.7 % above its price: the trade at which
  the 1m range rule (0.5 %) fires. **trade → alert** is the alert's arrival on ``alerts`` minus
  the moment that trade was handed to the producer;
- **watermark → bar** is a 1m bar's arrival on ``bars`` minus the moment the first trade at or
  after ``end + lateness_ms`` was handed to the producer (the moment its window may close).

Event time runs ``--time-scale`` times faster than the wall clock (default 10: a 1m window every
6 s, the detectors' 5-minute cooldown every 30 s), so a run of tens of seconds holds hundreds of
alerts and windows; the trade rate is wall-clock trades/s. Arrivals are taken by a separate
process consuming ``alerts`` and ``bars`` with ``fetch.wait.max.ms`` 1, so the measurement adds
no fetch wait of its own. The first ``--warmup`` seconds are left out.

    make bench                             # part of it
    python -m bench.latency --rates 5000 20000 --seconds 40
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.throughput import add_broker_arguments, save_results, start_broker
from candlewax.cli.flow import flow_command, flow_env
from candlewax.codec import Since, Trade
from candlewax.settings import Settings
from candlewax.topics import ALERTS, BARS, ensure_topics
from connectors.producer import TradeProducer

VENUE = "bench"
SPIKE = 1.007  # × price: a 0.695 % range, over the 1m threshold (0.5 %), under 5m's (1 %)
_MINUTE = 60_000
DRAIN_S = 3.0  # the flow runs this long after the last trade; later spikes are not counted


def _measure(bootstrap: str, topics: list[str], ready: Any, stop: Any, out: str) -> None:
    """Child process: every record of ``topics`` with its arrival time, until ``stop``."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-latency-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 1,
            "log_level": 3,
        }
    )
    assign = []
    for topic in topics:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        assign += [TopicPartition(topic, p, 0) for p in meta.partitions]
    consumer.assign(assign)
    ready.set()
    seen: list[tuple[str, float, bytes]] = []
    while not stop.is_set():
        for msg in consumer.consume(1000, 0.05):
            if msg.error() is None:
                seen.append((msg.topic(), time.time(), msg.value()))  # type: ignore[arg-type]
    consumer.close()
    Path(out).write_bytes(orjson.dumps([(t, at, v.decode()) for t, at, v in seen]))


class Market:
    """Trades of ``symbols`` symbols around fixed prices (±0.02 %: no range alert by itself)
    and, per symbol, one spike per ``spike_every_ms`` of event time at a random phase."""

    def __init__(self, symbols: int, spike_every_ms: int, start_ms: int, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.names = [f"S{i:04d}USDT" for i in range(symbols)]
        self.base = [rng.uniform(10, 1000) for _ in range(symbols)]
        self.every = spike_every_ms
        self.next_spike = [start_ms + rng.randrange(spike_every_ms) for _ in range(symbols)]
        self.count = 0

    def trade(self, ts_ms: int) -> tuple[Trade, bool]:
        i = self.rng.randrange(len(self.names))
        spike = ts_ms >= self.next_spike[i]
        factor = SPIKE if spike else 1 + self.rng.uniform(-0.0002, 0.0002)
        if spike:
            self.next_spike[i] += self.every
        self.count += 1
        price = f"{self.base[i] * factor:.6f}"
        side = "buy" if self.count & 1 else "sell"
        return Trade(VENUE, self.names[i], str(self.count), price, "0.5", side, ts_ms, ts_ms), spike


def run_rate(
    bootstrap: str,
    rate: int,
    seconds: float,
    warmup: float,
    symbols: int,
    scale: int,
    kafka: dict[str, str] | None = None,
    partitions: int = 4,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            bootstrap_servers=bootstrap,
            topic_prefix=f"lat{uuid.uuid4().hex[:8]}.",
            retention_ms=-1,
            partitions=partitions,
            data_dir=Path(data_dir),
            archive_trades=True,
            kafka=kafka or {},
        )
        ensure_topics(settings)
        ctx = mp.get_context("spawn")
        ready, stop = ctx.Event(), ctx.Event()
        arrivals = os.path.join(data_dir, "arrivals.json")
        topics = [settings.topic(ALERTS), settings.topic(BARS)]
        measurer = ctx.Process(target=_measure, args=(bootstrap, topics, ready, stop, arrivals))
        measurer.start()
        env = flow_env(settings, os.environ)
        env["CANDLEWAX_LOG_LEVEL"] = "WARNING"
        flow = subprocess.Popen(
            flow_command(settings, os.environ), env=env, stdout=subprocess.DEVNULL
        )
        try:
            if not ready.wait(30):
                raise RuntimeError("the measuring consumer did not start")
            cpu0 = _cpu_s(flow.pid)
            produced = _publish(settings, rate, seconds, symbols, scale)
            produced["flow_cpu"] = (_cpu_s(flow.pid) - cpu0) / produced["elapsed"]
            # The flow's last outputs are in flight: let it run DRAIN_S more (spikes of the last
            # DRAIN_S are not counted, so a slow alert shows as missing, not as left out).
            deadline = time.monotonic() + DRAIN_S
            while time.monotonic() < deadline and flow.poll() is None:
                time.sleep(0.1)
        finally:
            flow.terminate()
            try:
                flow.wait(20)
            except subprocess.TimeoutExpired:
                flow.kill()
                flow.wait()
        _drain_until_quiet(stop)
        measurer.join(30)
        records = orjson.loads(Path(arrivals).read_bytes())
    return _latencies(records, produced, warmup, settings.lateness_ms, rate)


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drain_until_quiet(stop: Any) -> None:
    """The measurer keeps reading for a second after the flow stopped (records in flight)."""
    deadline = time.time() + 1.0
    while time.time() < deadline:
        stop.wait(deadline - time.time())
    stop.set()


def _publish(settings: Settings, rate: int, seconds: float, symbols: int, scale: int) -> dict:
    producer = TradeProducer(settings.connection, settings.topic("trades"))
    wall0 = time.time()
    ev0 = int(wall0 * 1000)
    cooldown = settings.alerts.cooldown_ms
    market = Market(symbols, cooldown + _MINUTE, ev0)
    for name in market.names:  # every window complete from the first
        producer.marker(Since(VENUE, name, ev0 - ev0 % _MINUTE))
    spikes: dict[tuple[str, int], float] = {}
    passes: dict[int, float] = {}  # watermark passes the end of the 1m window: wall time
    lateness = settings.lateness_ms
    sent = 0
    next_pass = ev0 - ev0 % _MINUTE + _MINUTE + lateness
    start = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
        due = int(elapsed * rate) - sent
        if due <= 0:
            time.sleep(0.0005)
            continue
        batch = []
        now = time.time()
        ts = ev0 + int((now - wall0) * 1000 * scale)
        while ts >= next_pass:
            passes[next_pass - lateness] = now
            next_pass += _MINUTE
        for _ in range(due):
            trade, spike = market.trade(ts)
            if spike:
                spikes[(trade.symbol, ts)] = now
            batch.append(trade)
        producer.send(batch)
        producer.flush_ready()
        sent += due
    producer.flush()
    return {"wall0": wall0, "end_wall": time.time(), "spikes": spikes, "passes": passes,
            "sent": sent, "elapsed": time.perf_counter() - start}  # fmt: skip


def _latencies(
    records: list, produced: dict, warmup: float, lateness: int, rate: int
) -> dict[str, Any]:
    alert_ms: list[float] = []
    bar_ms: list[float] = []
    since = produced["wall0"] + warmup
    until = produced["end_wall"] - 0.5  # the last spikes' alerts may come after the flow stops
    spikes = {k: v for k, v in produced["spikes"].items() if since <= v < until}
    passes = {k: v for k, v in produced["passes"].items() if since <= v < until}
    unmatched = 0
    alerted = set()
    for topic, at, text in records:
        value = orjson.loads(text)
        if topic.endswith(ALERTS):
            if value.get("rule") != "range" or value.get("interval") != "1m":
                continue
            key = (value["symbol"], value["ts_ms"])
            sent = spikes.get(key)
            if sent is not None:
                alert_ms.append((at - sent) * 1000)
                alerted.add(key)
            elif key not in produced["spikes"]:
                unmatched += 1  # an alert at no spike: would be a detector bug
        elif value.get("interval") == "1m":
            passed = passes.get(value["end_ms"])
            if passed is not None:
                bar_ms.append((at - passed) * 1000)
    return {
        "rate": rate,
        "achieved_rate": round(produced["sent"] / produced["elapsed"]),
        "alerts": _summary(alert_ms),
        "bars": _summary(bar_ms),
        "spikes": len(spikes),
        "missing_alerts": len(spikes) - len(alerted),
        "unmatched_alerts": unmatched,
        "windows": len(passes),
        "flow_cpu_cores": round(produced["flow_cpu"], 2),
    }


def _summary(values: Sequence[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def q(f: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(f * len(ordered)))], 1)

    return {"n": len(ordered), "p50": q(0.5), "p99": q(0.99), "max": round(ordered[-1], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[5_000, 20_000])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--time-scale", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=4, help="of trades (the default's)")
    parser.add_argument(
        "--kafka",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="librdkafka properties for every client of the flow and of the publisher",
    )
    add_broker_arguments(parser)
    args = parser.parse_args()
    broker, bootstrap = start_broker(args)
    results = []
    print(
        f"{args.symbols} symbols, {args.seconds:.0f} s per rate ({args.warmup:.0f} s warm-up left "
        f"out), event time ×{args.time_scale}, {args.partitions} partition(s), broker "
        f"{args.engine if broker else bootstrap}"
    )
    print(
        f"{'trades/s':>9} {'':>16} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'missing':>8} {'flow CPU':>9}"
    )
    try:
        for rate in args.rates:
            kafka = dict(item.split("=", 1) for item in args.kafka)
            row = run_rate(
                bootstrap,
                rate,
                args.seconds,
                args.warmup,
                args.symbols,
                args.time_scale,
                kafka,
                args.partitions,
            )
            results.append(row)
            for name, label in (("alerts", "trade → alert"), ("bars", "watermark → bar")):
                s = row[name]
                extra = (
                    f" {row['missing_alerts']:>8} {row['flow_cpu_cores']:>6.2f} cores"
                    if name == "alerts"
                    else ""
                )
                print(
                    f"{row['achieved_rate']:>9,} {label:>16} {s['n']:>6} {s.get('p50', '-'):>8} "
                    f"{s.get('p99', '-'):>8} {s.get('max', '-'):>8}{extra}",
                    flush=True,
                )
    finally:
        if broker is not None:
            broker.stop()
    save_results("latency", {"args": vars(args), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
