"""Backtests: the live flow's code over a bounded slice of history, with other detector settings,
writing into a directory only — never into live topics.

Input is the ``trades`` topic from the first offset at the range's start (found with
``offsets_for_times``, verified, and by binary search over message timestamps where the broker
answers wrongly — Tansu does), or a Parquet trade archive (``--from-archive``). The same
:class:`flows.bars.BarStep` builds bars and alerts; bars go to ``OUT/bars/...`` Parquet exactly as
the live flow writes them, alerts and dead letters to JSON lines, and a summary to JSON.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main
from confluent_kafka import Consumer, KafkaError, TopicPartition

from candlewax.codec import MAX_TS_MS, MIN_TS_MS
from candlewax.codec.columns import decode_trade_columns, trade_messages
from candlewax.errors import ConfigError
from candlewax.kafka import consumer_config
from candlewax.settings import Settings
from candlewax.storage import DataPath, scan_parquet
from candlewax.topics import ALERTS, BARS, DEADLETTER, TRADES
from flows.bars import BarStep, Batch, TradesSource, build_flow
from sinks.kafka import KafkaRecord
from sinks.parquet import write_atomic

log = logging.getLogger(__name__)

#: Trades may sit this far out of time order in the log (lateness, and heartbeats stamped with
#: another venue's time): reading starts this much before the range and ends this much after it.
MARGIN_MS = 60_000


# --------------------------------------------------------------------------- finding offsets


class OffsetFinder:
    """Message timestamps of one topic, read one at a time (assign + consume)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        conf = consumer_config(settings.connection, f"candlewax-backtest-{uuid.uuid4().hex}")
        conf["fetch.wait.max.ms"] = 10  # one message per probe: do not wait for more
        self.consumer = Consumer(conf)
        self.topic = topic
        self.probes = 0
        #: How often the broker's offsets_for_times answer was wrong (and a search ran).
        self.searches = 0

    def timestamp_at(self, partition: int, offset: int, wait_s: float = 3.0) -> int | None:
        """Timestamp of the first message at or after ``offset``; None at or past the end (an
        EOF event, or — Tansu past its end — silence for ``wait_s``)."""
        self.probes += 1
        self.consumer.assign([TopicPartition(self.topic, partition, offset)])
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            for msg in self.consumer.consume(1, 0.2):
                err = msg.error()
                if err is None:
                    return int(msg.timestamp()[1])
                if err.code() == KafkaError._PARTITION_EOF:
                    return None
        return None

    def end_hint(self, partition: int) -> int:
        """The broker's high watermark: a hint only (Tansu's lags the real end a little).
        Starting a read *earlier* than needed is always safe; the search never goes later."""
        _low, high = self.consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), timeout=10, cached=False
        )
        return max(0, int(high))

    def low(self, partition: int) -> int:
        """The partition's first offset still in the log."""
        low, _high = self.consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), timeout=10, cached=False
        )
        return max(0, int(low))

    def first_at_or_after(self, partition: int, ts_ms: int, end: int) -> int:
        """First offset below ``end`` whose timestamp is ≥ ``ts_ms`` (else ``end``): the broker's
        ``offsets_for_times`` answer if it checks out, else a binary search on timestamps."""
        answer = self.consumer.offsets_for_times(
            [TopicPartition(self.topic, partition, ts_ms)], timeout=10
        )[0].offset
        if 0 <= answer <= end and self._is_boundary(partition, answer, ts_ms, end):
            return answer
        log.info(
            "%s[%d]: offsets_for_times(%d) answered %d, which is wrong; binary search",
            self.topic,
            partition,
            ts_ms,
            answer,
        )
        self.searches += 1
        lo, hi = 0, end
        while lo < hi:
            mid = (lo + hi) // 2
            ts = self.timestamp_at(partition, mid)
            if ts is not None and ts >= ts_ms:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _is_boundary(self, partition: int, offset: int, ts_ms: int, end: int) -> bool:
        at = self.timestamp_at(partition, offset) if offset < end else None
        if offset < end and (at is None or at < ts_ms):
            return False
        if offset == 0:
            return True
        before = self.timestamp_at(partition, offset - 1)
        return before is not None and before < ts_ms

    def close(self) -> None:
        self.consumer.close()


# --------------------------------------------------------------------------- outputs


@dataclass
class Collected:
    """Alerts and dead letters of a backtest, in the order the flow produced them."""

    alerts: list[dict[str, Any]] = field(default_factory=list)
    bars: int = 0
    deadletters: list[dict[str, Any]] = field(default_factory=list)


class _FilesPartition(StatelessSinkPartition[KafkaRecord]):
    def __init__(self, sink: FileRecords) -> None:
        self.sink = sink

    def write_batch(self, items: list[KafkaRecord]) -> None:
        for item in items:
            self.sink.take(item)


class FileRecords(DynamicSink[KafkaRecord]):
    """Where a backtest's would-be Kafka records go: memory, then files. Never a topic."""

    def __init__(self, settings: Settings) -> None:
        self.bars_topic = settings.topic(BARS)
        self.alerts_topic = settings.topic(ALERTS)
        self.deadletter_topic = settings.topic(DEADLETTER)
        self.collected = Collected()
        self.lock = threading.Lock()

    def take(self, record: KafkaRecord) -> None:
        with self.lock:
            if record.topic == self.alerts_topic:
                self.collected.alerts.append(orjson.loads(record.value))
            elif record.topic == self.bars_topic:
                self.collected.bars += 1  # the Parquet files are the bars' output
            elif record.topic == self.deadletter_topic:
                self.collected.deadletters.append(orjson.loads(record.value))
            else:  # pragma: no cover - the step only names these three
                raise ValueError(f"unexpected topic {record.topic}")

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _FilesPartition:
        return _FilesPartition(self)


# --------------------------------------------------------------------------- archive input

#: Rows per batch from the archive: larger than a Kafka poll, since the kernel's cost per batch
#: is mostly fixed (the bars do not depend on the batching: flows/barmath.py).
ARCHIVE_BATCH = 100_000


class _ArchivePartition(StatefulSourcePartition[tuple[str, Batch], int]):
    def __init__(self, batches: Iterator[Batch]) -> None:
        self._batches = batches

    def next_batch(self) -> list[tuple[str, Batch]]:
        batch = next(self._batches)  # StopIteration ends the partition
        return [(str(batch.partition), batch)]

    def snapshot(self) -> int:
        return 0


class ArchiveSource(FixedPartitionedSource[tuple[str, Batch], int]):
    """The Parquet trade archive (``DATA_DIR/trades/...``) as the flow's batches: per original
    ``trades`` partition, in offset order, re-encoded as wire trades."""

    def __init__(self, root: DataPath, between_ms: tuple[int, int], batch_max: int) -> None:
        files = sorted(root.rglob("*.parquet"))
        if not files:
            raise ConfigError(f"no Parquet trade archive under {root} (DATA_DIR/trades)")
        lo, hi = between_ms
        scan = scan_parquet(files)
        self._earliest_ms = scan.select(pl.col("ts_ms").min()).collect().item()
        self.frame = (
            scan.filter(pl.col("ts_ms").is_between(lo - MARGIN_MS, hi + MARGIN_MS, closed="left"))
            .sort("partition", "offset", maintain_order=True)
            .collect()
        )
        self.batch_max = batch_max

    def has_trades_before(self, ts_ms: int) -> bool:
        """Does the archive reach back before ``ts_ms`` (so it holds the range's first trades)?"""
        return self._earliest_ms is not None and self._earliest_ms < ts_ms

    def list_parts(self) -> list[str]:
        parts = self.frame["partition"].unique().sort().to_list() if self.frame.height else [0]
        return [str(p) for p in parts]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _ArchivePartition:
        return _ArchivePartition(self._batches(int(for_part)))

    def _batches(self, partition: int) -> Iterator[Batch]:
        """Column-wise: a slice whose every row is canonical becomes kernel rows directly
        (:func:`~candlewax.codec.columns.decode_trade_columns`); any other slice is re-encoded
        as wire trades and decoded like the topic's, so a damaged archive row is rejected with
        its reason, as before."""
        rows = self.frame.filter(pl.col("partition") == partition).with_columns(
            price=pl.col("price").cast(pl.String), qty=pl.col("qty").cast(pl.String)
        )
        total = rows.height
        for i in range(0, max(total, 1), self.batch_max):
            last = i + self.batch_max >= total
            part = rows.slice(i, self.batch_max)
            offsets = part["offset"].to_list()
            decoded = decode_trade_columns(part.rename({"offset": "off"}))
            if decoded is not None:
                yield Batch(partition, [], offsets, last, rows=decoded)
            else:
                yield Batch(partition, trade_messages(part), offsets, last)


# --------------------------------------------------------------------------- running it


@dataclass
class Progress:
    """Offsets done of offsets to do, per partition, for the terminal progress bar."""

    start: dict[int, int]
    end: dict[int, int]
    at: dict[int, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def update(self, partition: int, next_offset: int) -> None:
        self.at[partition] = next_offset

    def fraction(self) -> float:
        total = sum(max(0, self.end[p] - self.start[p]) for p in self.start)
        done = sum(
            min(max(0, self.at.get(p, self.start[p]) - self.start[p]), self.end[p] - self.start[p])
            for p in self.start
        )
        return 1.0 if total == 0 else min(1.0, done / total)

    def line(self) -> str:
        f = self.fraction()
        elapsed = time.monotonic() - self.started
        eta = f"{elapsed * (1 - f) / f:5.0f} s" if f > 0 else "    ? s"
        bar = "#" * int(30 * f)
        return f"\rbacktest [{bar:<30}] {100 * f:5.1f}%  ETA {eta}"


def run_backtest(
    settings: Settings,
    between_ms: tuple[int, int],
    out: DataPath,
    symbols: frozenset[str] | None = None,
    archive: DataPath | None = None,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Run the flow over ``[from, to)`` into ``out``; return the summary (also ``summary.json``)."""
    lo, hi = between_ms
    if lo >= hi:
        raise ConfigError(f"--from must be before --to (got {lo} >= {hi})")
    out.mkdir(parents=True, exist_ok=True)
    # Never a live topic: outputs are files; the flow writes Parquet under OUT only.
    run_settings = settings.replace(data_dir=out, archive_trades=False, exit_when_done=True)
    records = FileRecords(run_settings)
    progress: Progress | None = None
    started = time.monotonic()
    source: Any
    # Bars starting at the range's start are complete if the input holds earlier trades too.
    covered_from: int | None = None
    if archive is not None:
        source = ArchiveSource(archive, between_ms, max(settings.batch_max, ARCHIVE_BATCH))
        read_from = f"archive {archive}"
        if source.has_trades_before(lo):
            covered_from = lo
    else:
        finder = OffsetFinder(settings, settings.topic(TRADES))
        try:
            parts = [int(p) for p in TradesSource(settings, workers=1).list_parts()]
            ends = {p: finder.end_hint(p) for p in parts}
            starts = {
                p: finder.first_at_or_after(p, lo - settings.lateness_ms - MARGIN_MS, ends[p])
                for p in parts
            }
            probes = finder.probes
            if all(starts[p] > finder.low(p) for p in parts):
                covered_from = lo
        finally:
            finder.close()
        log.info(
            "backtest reads %s from offsets %s (%d probes)", settings.topic(TRADES), starts, probes
        )
        progress = Progress(starts, ends)
        source = TradesSource(
            run_settings,
            starts=starts,
            stop_ms=hi + settings.lateness_ms + MARGIN_MS,
            progress=progress.update,
            workers=1,  # run_main: one worker, whatever the cluster settings say
        )
        read_from = f"topic {settings.topic(TRADES)} offsets {starts} of {ends}"
    step = BarStep(run_settings, between_ms, symbols, covered_from_ms=covered_from)
    flow = build_flow(run_settings, source=source, step=step, records_sink=records)
    show = sys.stderr.isatty() if show_progress is None else show_progress
    done = threading.Event()
    ticker = None
    if show and progress is not None:
        ticker = threading.Thread(target=_tick, args=(progress, done), daemon=True)
        ticker.start()
    try:
        run_main(flow)
    finally:
        done.set()
        if ticker is not None:
            ticker.join(2)
            sys.stderr.write(progress.line() + "\n" if progress else "\n")
    return _write_outputs(out, records.collected, between_ms, symbols, read_from, started)


def _tick(progress: Progress, done: threading.Event) -> None:
    while not done.wait(0.5):
        sys.stderr.write(progress.line())
        sys.stderr.flush()


def _write_outputs(
    out: DataPath,
    collected: Collected,
    between_ms: tuple[int, int],
    symbols: frozenset[str] | None,
    read_from: str,
    started: float,
) -> dict[str, Any]:
    alerts = sorted(collected.alerts, key=lambda a: (a["ts_ms"], a["id"]))
    (out / "alerts.jsonl").write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in alerts))
    (out / "deadletter.jsonl").write_bytes(
        b"".join(orjson.dumps(d) + b"\n" for d in collected.deadletters)
    )
    if alerts:
        write_atomic(pl.DataFrame(alerts), out / "alerts.parquet")
    by_rule: dict[str, int] = {}
    for a in alerts:
        by_rule[a["rule"]] = by_rule.get(a["rule"], 0) + 1
    summary = {
        "from_ms": between_ms[0],
        "to_ms": between_ms[1],
        "symbols": sorted(symbols) if symbols else None,
        "input": read_from,
        "bars": collected.bars,
        "alerts": len(alerts),
        "alerts_by_rule": by_rule,
        "deadletters": len(collected.deadletters),
        "seconds": round(time.monotonic() - started, 3),
    }
    (out / "summary.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary


def parse_time(text: str) -> int:
    """``2024-08-08T23:55:00Z`` / ``2024-08-08 23:55`` (UTC unless an offset is given) or epoch
    milliseconds → epoch milliseconds."""
    from datetime import UTC, datetime

    text = text.strip()
    if text.isascii() and text.isdigit():
        ms = int(text)
        if not MIN_TS_MS <= ms < MAX_TS_MS:
            raise ConfigError(
                f"time {text!r} is not epoch milliseconds between 2000 and 2100 "
                "(a year? write 2024-01-01T00:00:00Z)"
            )
        return ms
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"time {text!r}: use ISO 8601 (2024-08-08T23:55:00Z) or epoch milliseconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)
