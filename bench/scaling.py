"""Scaling of the bars flow across processes: 1 process × 1 worker vs 2 processes × 1 worker.

The synthetic market writes N trades once to a fresh 4-partition ``trades`` topic of the embedded
Tansu broker (``bench.throughput.produce``); then the real ``candlewax flow --exit-when-done``
reads that same topic from the start, as

- 1x1: one process, one worker (all 4 partitions);
- 2x1: a cluster of two processes of one worker each (``-w 1 -i 0/1 -a ...``; Bytewax gives each
  worker two of the 4 partitions to read),

each run with its own data directory and consumer group and no recovery store (the flow assigns
its partitions itself and, without a store, starts at the beginning; it commits no offsets). A
run is timed from the first process start to the last process exit; the same layout over an
empty 4-partition topic gives its start-up + shutdown cost, and "net" is the difference. The
order of the layouts alternates across ``--repeat`` runs; medians are reported. Every run's
Parquet bars must equal the first run's, and its 1m bars must count all N trades: each run does
the same work, or the benchmark fails.

Each run also records the CPU seconds of every flow process (``wait4`` rusage) and of its
threads by name (/proc, sampled every 0.25 s: the Bytewax worker, ``polars-*``, librdkafka's
``rdk:*``, Bytewax's ``timely:send/recv``...), of the broker, and of the whole machine
(/proc/stat): "other cores" is what neither the flow nor the broker used — someone else's load,
which makes a run noisy. It prints trades/s and each layout ÷ 1x1, and writes
bench/results/scaling-<UTC time>.json.

    make bench-scaling                          # 2M trades, 1 000 symbols, 1 repeat: ~1 min
    make bench-scaling ARGS="--repeat 3"        # medians of 3: ~3 min
    make bench-scaling ARGS="--layouts 1x1 2x1 1x2 --trades 400000"
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import FrameType

import polars as pl

from bench.throughput import produce, save_results
from candlewax.broker import EmbeddedBroker, free_port
from candlewax.settings import Settings
from candlewax.topics import ensure_topics

PARTITIONS = 4
LAYOUTS = ["1x1", "2x1"]  # processes x workers per process
CLI = [sys.executable, "-m", "candlewax.cli"]
END = re.compile(r"\[(\d+)\]: end of input at offset (\d+|None)")
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    layout: str
    topic: str  # "trades" or "empty"
    wall_s: float
    exit_s: list[float]  # per process, from the first start
    cpu_s: list[float]  # per process, user + system
    partitions: list[dict[int, int]]  # per process: partition → end offset (messages read)
    broker_cpu_s: float
    machine_busy_cores: float  # mean busy cores of the whole machine during the run
    #: per process: CPU seconds by thread name (each thread as last sampled, every 0.25 s)
    threads: list[dict[str, float]] = field(default_factory=list)
    bars: dict[str, pl.DataFrame] = field(default_factory=dict, repr=False)

    @property
    def other_cores(self) -> float:
        """Busy cores not spent by the flow processes or the broker: others on the machine."""
        return self.machine_busy_cores - (sum(self.cpu_s) + self.broker_cpu_s) / self.wall_s

    def largest_share(self) -> float:
        """Messages of the busiest process ÷ all: 1 ÷ this bounds the speed-up of the layout."""
        per_process = [sum(d.values()) for d in self.partitions]
        return max(per_process) / max(1, sum(per_process))


def environment(bootstrap: str, prefix: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CANDLEWAX_", "BYTEWAX_"))}
    return {
        **base,
        "CANDLEWAX_BOOTSTRAP_SERVERS": bootstrap,
        "CANDLEWAX_TOPIC_PREFIX": prefix,
        "CANDLEWAX_PARTITIONS": str(PARTITIONS),
        "CANDLEWAX_RETENTION_MS": "-1",
        "CANDLEWAX_CONFIG": "",
        "CANDLEWAX_LOG_LEVEL": "INFO",
        # Offsets are not committed (the flow assigns its partitions and, without a recovery
        # store, starts at the beginning), but no run shares a group with another anyway.
        "CANDLEWAX_GROUP_ID": f"bench-scaling-{uuid.uuid4().hex}",
    }


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def process_cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(stat[11]) + int(stat[12])  # utime, stime
    return total / TICK


def thread_cpu_s(pid: int) -> dict[int, tuple[str, float]]:
    """Thread id → (name without digits: rdk:broker3 → rdk:broker, CPU seconds) of a process."""
    out: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
            name = re.sub(r"\d+", "", (task / "comm").read_text().strip()) or "?"
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[int(task.name)] = (name, (int(stat[11]) + int(stat[12])) / TICK)
    return out


def by_name(threads: dict[int, tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, cpu in threads.values():
        out[name] = out.get(name, 0.0) + cpu
    return {k: round(v, 2) for k, v in sorted(out.items()) if v >= 0.01}


def children() -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return pids


def read_bars(data: Path) -> dict[str, pl.DataFrame]:
    root = data / "bars"
    return {str(p.relative_to(root)): pl.read_parquet(p) for p in sorted(root.rglob("*.parquet"))}


def run_flow(
    bootstrap: str, prefix: str, layout: str, broker_pids: list[int], timeout_s: float
) -> Run:
    processes, workers = (int(n) for n in layout.split("x"))
    env = environment(bootstrap, prefix)
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="candlewax-scaling-") as tmp:
        data = Path(tmp) / "data"
        logs = [Path(tmp) / f"flow-{i}.log" for i in range(processes)]
        exit_s: list[float | None] = [None] * processes
        cpu_s = [0.0] * processes
        threads: list[dict[int, tuple[str, float]]] = [{} for _ in range(processes)]
        sampled = 0.0
        busy0, total0 = machine_ticks()
        broker0 = process_cpu_s(broker_pids)
        start = time.perf_counter()
        try:
            for i in range(processes):
                cluster = ["-i", str(i), "-a", addresses] if processes > 1 else []
                cmd = [*CLI, "flow", "--data-dir", str(data), "--exit-when-done"]
                cmd += ["--metrics-port", str(free_port()), "-w", str(workers), *cluster]
                with logs[i].open("wb") as log:
                    procs.append(
                        subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
                    )
            # wait4 rather than Popen.wait: it also gives each process's CPU time.
            while None in exit_s:
                if time.perf_counter() - sampled > 0.25:
                    sampled = time.perf_counter()
                    for i, proc in enumerate(procs):
                        if exit_s[i] is None:
                            threads[i].update(thread_cpu_s(proc.pid))
                for i, proc in enumerate(procs):
                    if exit_s[i] is not None:
                        continue
                    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                    if pid:
                        exit_s[i] = time.perf_counter() - start
                        cpu_s[i] = usage.ru_utime + usage.ru_stime
                        proc.returncode = os.waitstatus_to_exitcode(status)
                if time.perf_counter() - start > timeout_s:
                    raise RuntimeError(
                        f"{layout} on {prefix}: flow still running after {timeout_s} s"
                    )
                time.sleep(0.01)
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    proc.wait()
            # A flow process whose Popen an interrupt cut short is a child we hold no handle of.
            for pid in set(children()) - set(broker_pids):
                with contextlib.suppress(ChildProcessError, ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
        wall = time.perf_counter() - start
        busy1, total1 = machine_ticks()
        broker_cpu = process_cpu_s(broker_pids) - broker0
        texts = [p.read_text(errors="replace") for p in logs]
        for i, proc in enumerate(procs):
            if proc.returncode != 0:
                raise RuntimeError(
                    f"{layout} process {i} on {prefix} exited {proc.returncode}:\n{texts[i][-3000:]}"
                )
        parts = [{int(p): 0 if o == "None" else int(o) for p, o in END.findall(t)} for t in texts]
        done = sorted(p for d in parts for p in d)
        if done != list(range(PARTITIONS)):
            raise RuntimeError(f"{layout} on {prefix}: partitions ended {done}, not 0..3:\n{texts}")
        return Run(
            layout=layout,
            topic="empty" if prefix.startswith("empty") else "trades",
            wall_s=wall,
            exit_s=[e or 0.0 for e in exit_s],
            cpu_s=cpu_s,
            partitions=parts,
            broker_cpu_s=broker_cpu,
            machine_busy_cores=(busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1),
            threads=[by_name(t) for t in threads],
            bars=read_bars(data),
        )


def check_same_work(reference: Run, run: Run, trades: int) -> None:
    """Fail loudly unless ``run`` wrote exactly the bars ``reference`` wrote."""
    one_minute = [f for k, f in run.bars.items() if k.startswith("interval=1m/")]
    counted = sum(int(f["trades"].sum()) for f in one_minute)
    if counted != trades:
        raise SystemExit(f"{run.layout}: the 1m bars count {counted:,} trades, not {trades:,}")
    if sorted(run.bars) != sorted(reference.bars):
        raise SystemExit(
            f"{run.layout} wrote {len(run.bars)} bar files, {reference.layout} {len(reference.bars)}"
        )
    for name, frame in reference.bars.items():
        if not run.bars[name].equals(frame):
            raise SystemExit(f"{run.layout}: {name} differs from {reference.layout}'s")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: flows killed, broker stopped


def summarize(runs: list[Run], layout: str, trades: int) -> dict[str, float]:
    full = [x for x in runs if x.layout == layout and x.topic == "trades"]
    idle = [x for x in runs if x.layout == layout and x.topic == "empty"]
    wall = statistics.median(x.wall_s for x in full)
    startup = statistics.median(x.wall_s for x in idle)
    return {
        "wall_s": round(wall, 3),
        "startup_s": round(startup, 3),
        "net_s": round(wall - startup, 3),
        "trades_per_s": round(trades / wall),
        "net_trades_per_s": round(trades / (wall - startup)),
        "flow_cpu_s": round(statistics.median(sum(x.cpu_s) for x in full), 2),
        "broker_cpu_s": round(statistics.median(x.broker_cpu_s for x in full), 2),
        "machine_busy_cores": round(statistics.median(x.machine_busy_cores for x in full), 2),
        "other_cores": round(statistics.median(x.other_cores for x in full), 2),
        "largest_process_share": round(max(x.largest_share() for x in full), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=2_000_000)
    parser.add_argument("--symbols", type=int, default=1_000, help="at least 8: every partition")
    parser.add_argument("--repeat", type=int, default=1, help="runs per layout (median reported)")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="per flow run")
    parser.add_argument(
        "--layouts",
        nargs="+",
        default=LAYOUTS,
        help="PROCESSESxWORKERS each, compared with 1x1 (default: 1x1 2x1)",
    )
    args = parser.parse_args()
    if "1x1" not in args.layouts or not all(re.fullmatch(r"[1-9]x[1-9]", x) for x in args.layouts):
        parser.error("--layouts: PxW values (e.g. 1x1 2x1 1x2), 1x1 among them")
    if args.symbols < 8:
        parser.error("--symbols must be at least 8, so that all 4 partitions get trades")
    signal.signal(signal.SIGTERM, _interrupt)

    broker = EmbeddedBroker("tansu")
    bootstrap = broker.start()
    runs: list[Run] = []
    reference: Run | None = None
    try:
        broker_pids = children()
        run_id = uuid.uuid4().hex[:8]
        prefix, empty = f"scale{run_id}.", f"empty{run_id}."
        settings = Settings(
            bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=PARTITIONS, retention_ms=-1
        )
        ensure_topics(settings)
        ensure_topics(settings.model_copy(update={"topic_prefix": empty}))
        t = time.perf_counter()
        produce(settings, args.symbols, args.trades, per_message=1)
        print(
            f"{args.trades:,} trades of {args.symbols:,} symbols on {PARTITIONS} partitions, "
            f"produced in {time.perf_counter() - t:.1f} s; {os.cpu_count()} cores",
            flush=True,
        )
        print(f"{'run':>3} {'layout':>6} {'topic':>6} {'wall s':>7} {'trades/s':>9} {'cpu s/process':>13} "
              f"{'broker cpu s':>12} {'other cores':>11}  partitions/process")  # fmt: skip
        for r in range(args.repeat):
            order = args.layouts if r % 2 == 0 else list(reversed(args.layouts))
            for layout in order:
                for topic in (empty, prefix):
                    run = run_flow(bootstrap, topic, layout, broker_pids, args.timeout_s)
                    runs.append(run)
                    rate, where = "-", " | ".join(",".join(map(str, sorted(d))) for d in run.partitions)  # fmt: skip
                    if run.topic == "trades":
                        reference = reference or run
                        check_same_work(reference, run, args.trades)
                        if run is not reference:
                            run.bars = {}  # only the reference's are kept
                        rate = f"{args.trades / run.wall_s:,.0f}"
                        where += f" (busiest process {run.largest_share():.0%} of messages)"
                    cpu = " / ".join(f"{c:.1f}" for c in run.cpu_s)
                    print(
                        f"{r + 1:>3} {layout:>6} {run.topic:>6} {run.wall_s:>7.2f} {rate:>9} {cpu:>13} "
                        f"{run.broker_cpu_s:>12.1f} {run.other_cores:>11.2f}  {where}",
                        flush=True,
                    )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        broker.stop()

    assert reference is not None
    counts = {p: n for d in reference.partitions for p, n in sorted(d.items())}
    summary = {layout: summarize(runs, layout, args.trades) for layout in args.layouts}
    one = summary["1x1"]
    ratios = {
        f"{layout}_over_1x1": {
            "ratio": round(s["trades_per_s"] / one["trades_per_s"], 3),
            "net_ratio": round(s["net_trades_per_s"] / one["net_trades_per_s"], 3),
        }
        for layout, s in summary.items()
        if layout != "1x1"
    }
    print(
        f"\nmessages per partition: {', '.join(f'{p}: {n:,}' for p, n in sorted(counts.items()))}"
    )
    print(f"{'layout':>6} {'wall s':>7} {'start-up s':>10} {'trades/s':>10} {'net trades/s':>12} "
          f"{'flow cpu s':>10} {'other cores':>11}")  # fmt: skip
    for layout, s in summary.items():
        print(
            f"{layout:>6} {s['wall_s']:>7.2f} {s['startup_s']:>10.2f} {s['trades_per_s']:>10,} "
            f"{s['net_trades_per_s']:>12,} {s['flow_cpu_s']:>10.1f} {s['other_cores']:>11.2f}"
        )
    for name, ratio in ratios.items():
        print(
            f"{name.replace('_over_', ' ÷ ')}: {ratio['ratio']:.2f} (net of start-up: "
            f"{ratio['net_ratio']:.2f}); medians of {args.repeat}"
        )
    print("start-up = the same layout over an empty topic; net = without it")
    for layout in args.layouts:
        last = [x for x in runs if x.layout == layout and x.topic == "trades"][-1]
        for i, threads in enumerate(last.threads):
            top = sorted(threads.items(), key=lambda kv: -kv[1])[:6]
            print(
                f"{layout} process {i} CPU s by thread (last run): "
                + ", ".join(f"{name} {cpu:.1f}" for name, cpu in top)
            )
    noisy = [x for x in runs if x.other_cores > 0.25]
    if noisy:
        print(
            f"note: {len(noisy)} of {len(runs)} runs shared the machine with other work "
            f"(> 0.25 busy cores not ours): repeat when it is quiet",
            flush=True,
        )

    result = {
        "args": vars(args),
        "messages_per_partition": counts,
        "summary": summary,
        "ratios": ratios,
        "runs": [
            {f.name: getattr(x, f.name) for f in fields(x) if f.name != "bars"}
            | {"other_cores": round(x.other_cores, 3), "busiest_share": round(x.largest_share(), 3)}
            for x in runs
        ],
    }
    save_results("scaling", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
