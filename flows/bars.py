"""The bars dataflow: ``trades`` → exact event-time 1m bars and 5m…1h rollups → ``bars`` topic and
Parquet, invalid and late input → ``deadletter``.

Run it with ``candlewax flow`` (which runs ``python -m bytewax.run "flows.bars:build()"``).

Shape::

    trades_in (one item = one Kafka poll of one partition, keyed by partition so that the worker
               reading it holds its state: flows/routing.py)
      └─ bars (stateful_map per partition: decode batch → fold into open windows → close behind
         │     the partition's event-time watermark; see flows/barmath.py)
         ├─ kafka_out   bars + dead letters, confirmed by Kafka before the batch counts as written
         └─ parquet_out one file per (partition, interval, window) + trade archive blocks

A stream item is a batch of messages, never a trade: Bytewax costs ~4-5 µs per item.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from candlewax import metrics
from candlewax.broker import wait_for_broker
from candlewax.codec import (
    INTERVALS,
    MAX_MINUTE_TRADES,
    DeadLetter,
    Heartbeat,
    Trade,
    format_scaled,
)
from candlewax.codec.columns import Decoded, bar_columns, bar_values, decode_batch
from candlewax.errors import BrokerError, CandlewaxError
from candlewax.kafka import consumer_config, read_ahead
from candlewax.logs import SECRETS, setup_logging
from candlewax.settings import Settings
from candlewax.topics import ALERTS, BARS, DEADLETTER, TRADES
from flows.activity import ActivityBars
from flows.barmath import BarState, EmptyIntervals, StepResult, TimeRules
from flows.routing import state_key
from flows.volatility import VolatilityState
from sinks.kafka import KafkaOutput, KafkaRecord
from sinks.parquet import (
    UnsafePath,
    check_writable,
    remove_stale_temp,
    write_bar_window,
    write_trade_block,
)

log = logging.getLogger(__name__)

#: Trade archive files hold this many Kafka offsets of one partition.
ARCHIVE_BLOCK = 100_000


# --------------------------------------------------------------------------- source


@dataclass(frozen=True)
class Batch:
    """One poll's worth of messages from one ``trades`` partition, in offset order.

    ``final`` marks the end of finite input (``exit_when_done``): close every window after it.
    ``rows``: the batch already decoded, as the codec's kernel rows (a backtest reading the
    Parquet archive column-wise); ``values`` then hold nothing.
    """

    partition: int
    values: list[bytes]
    offsets: list[int]
    final: bool = False
    rows: pl.DataFrame | None = None


class _TradesPartition(StatefulSourcePartition[tuple[str, Batch], int]):
    def __init__(
        self,
        settings: Settings,
        partition: int,
        next_offset: int | None,
        stop_ms: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        key: str | None = None,
    ) -> None:
        self._topic = settings.topic(TRADES)
        self._partition = partition
        self._key = str(partition) if key is None else key
        self._batch_max = settings.batch_max
        self._exit_when_done = settings.exit_when_done
        self._next_offset = next_offset
        self._stop_ms = stop_ms
        self._progress = progress
        self._done = False
        conf = consumer_config(settings.connection, settings.group_id, read_ahead(self._batch_max))
        self._consumer = Consumer(conf)
        start = OFFSET_BEGINNING if next_offset is None else next_offset
        self._consumer.assign([TopicPartition(self._topic, partition, start)])
        self._tp = TopicPartition(self._topic, partition)
        self._lag = metrics.CONSUMER_LAG.labels("flow", str(partition))

    def next_batch(self) -> list[tuple[str, Batch]]:
        if self._done:
            raise StopIteration
        at_end = False
        # Never block: what librdkafka's fetcher already holds, up to batch_max. An empty poll
        # returns no item, and Bytewax calls again after 1 ms: a trade waits for at most one
        # round of the worker's other steps, not for a poll timeout per partition.
        msgs = self._consumer.consume(self._batch_max, 0)
        if self._stop_ms is None and not any(m.error() is not None for m in msgs):
            # The common poll: only messages (one pass per accessor, no per-message branches).
            values: list[bytes] = [m.value() for m in msgs]  # type: ignore[misc]
            offsets: list[int] = [m.offset() for m in msgs]  # type: ignore[misc]
            msgs = []
        else:
            values, offsets = [], []
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_end = True
                    continue
                if err.fatal() or err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise BrokerError(
                        f"reading {self._topic}[{self._partition}] failed: {err.str()} — "
                        "does the topic exist (`candlewax topics ensure`)?"
                    )
                log.warning("consumer error on %s[%d]: %s", self._topic, self._partition, err)
                continue
            values.append(msg.value())  # type: ignore[arg-type]
            offsets.append(msg.offset())  # type: ignore[arg-type]
            at_end = False
            if self._stop_ms is not None and msg.timestamp()[1] >= self._stop_ms:
                at_end = True  # a bounded read (backtest) is past its end
                break
        if offsets:
            self._next_offset = offsets[-1] + 1
            metrics.MESSAGES_IN.labels(str(self._partition)).inc(len(offsets))
            # The high watermark as of the last fetch response: no request to the broker.
            _low, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
            if high >= 0:
                self._lag.set(max(0, high - self._next_offset))
            if self._progress is not None:
                self._progress(self._partition, self._next_offset)
        final = at_end and self._exit_when_done
        if final:
            self._done = True
            log.info(
                "%s[%d]: end of input at offset %s", self._topic, self._partition, self._next_offset
            )
        if not offsets and not final:
            return []
        return [(self._key, Batch(self._partition, values, offsets, final))]

    def snapshot(self) -> int:
        return self._next_offset if self._next_offset is not None else OFFSET_BEGINNING

    def close(self) -> None:
        self._consumer.close()


class TradesSource(FixedPartitionedSource[tuple[str, Batch], int]):
    """Every partition of ``trades``; resume state is the next offset to read.

    A backtest bounds it: ``starts`` (partition → first offset) and ``stop_ms`` (a partition ends
    at its first message stamped at or after it), reporting ``progress(partition, next offset)``.

    Each partition's batches are keyed so that its state stays on the worker reading it
    (flows/routing.py); ``workers``: the cluster's, default from the settings.
    """

    def __init__(
        self,
        settings: Settings,
        starts: dict[int, int] | None = None,
        stop_ms: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        workers: int | None = None,
    ) -> None:
        self.settings = settings
        self.starts = starts
        self.stop_ms = stop_ms
        self.progress = progress
        self.workers = settings.cluster.total_workers(os.environ) if workers is None else workers
        self._parts: list[str] | None = None

    def list_parts(self) -> list[str]:
        topic = self.settings.topic(TRADES)
        conf = consumer_config(self.settings.connection, self.settings.group_id)
        consumer = Consumer(conf)
        try:
            meta = consumer.list_topics(topic, timeout=10)
        finally:
            consumer.close()
        info = meta.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise BrokerError(
                f"topic {topic} does not exist on {self.settings.bootstrap_servers}: "
                "run `candlewax topics ensure`"
            )
        self._parts = [str(p) for p in sorted(info.partitions)]
        return self._parts

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _TradesPartition:
        if resume_state is not None and resume_state < 0:
            resume_state = None
        if resume_state is None and self.starts is not None:
            resume_state = self.starts.get(int(for_part))
        parts = self._parts if self._parts is not None else self.list_parts()
        key = state_key(for_part, parts, self.workers)
        return _TradesPartition(
            self.settings, int(for_part), resume_state, self.stop_ms, self.progress, key
        )


# --------------------------------------------------------------------------- the stateful step


@dataclass
class BarWindowFile:
    partition: int
    interval: str
    start_ms: int
    bars: pl.DataFrame
    #: Bars by activity: the first bar's number (several files may share a start_ms).
    seq: int | None = None


@dataclass
class TradeBlockFile:
    partition: int
    block_start: int
    last_offset: int
    rows: pl.DataFrame


@dataclass
class StepOutput:
    records: list[KafkaRecord] = field(default_factory=list)
    files: list[BarWindowFile | TradeBlockFile] = field(default_factory=list)


@dataclass
class PartitionState:
    """Everything one ``trades`` partition needs across batches (and across restarts)."""

    bars: BarState
    vol: VolatilityState
    #: Trades not yet in a complete archive block, one frame per batch (concatenated only when
    #: a block completes: appending stays O(batch), not O(pending)).
    archive: list[pl.DataFrame] = field(default_factory=list)
    #: Last offset consumed: names the archive's last, partial block deterministically.
    last_offset: int = -1
    #: Bars by activity (flows/activity.py), when any symbol has kinds configured.
    activity: ActivityBars | None = None

    def __setstate__(self, saved: dict[str, Any]) -> None:
        # A snapshot of an earlier version kept the pending archive as one frame (or None).
        pending = saved.get("archive")
        if not isinstance(pending, list):
            saved["archive"] = [] if pending is None or not pending.height else [pending]
        self.__dict__.update(saved)


class BarStep:
    """The mapper of the ``bars`` stateful_map: pure apart from metrics."""

    def __init__(
        self,
        settings: Settings,
        between_ms: tuple[int, int] | None = None,
        symbols: frozenset[str] | None = None,
        covered_from_ms: int | None = None,
    ) -> None:
        self.between_ms = between_ms
        self.covered_from_ms = covered_from_ms
        self.symbols = symbols
        self.intervals = settings.intervals
        self.lateness_ms = settings.lateness_ms
        self.time_rules = TimeRules(
            settings.max_clock_skew_ms, settings.max_time_jump_ms, settings.time_jump_quorum
        )
        empty = settings.empty_intervals
        self.empty = EmptyIntervals(
            empty.default, tuple(sorted(empty.venues.items())), tuple(sorted(empty.symbols.items()))
        )
        self.calendar = settings.calendar
        self.activity = settings.activity_bars()
        self._reconfigured: set[int] = set()  # partitions whose activity state took the settings
        self.archive = settings.archive_trades
        self.trades_topic = settings.topic(TRADES)
        self.bars_topic = settings.topic(BARS)
        self.deadletter_topic = settings.topic(DEADLETTER)
        self.alerts_topic = settings.topic(ALERTS)
        self.rules = settings.alerts
        self.market = metrics.SymbolLimit(settings.metric_symbols_max)

    def __call__(
        self, state: PartitionState | None, batch: Batch
    ) -> tuple[PartitionState, StepOutput]:
        if state is None:
            bars = BarState(
                self.intervals, self.lateness_ms, self.time_rules, self.empty, self.calendar
            )
            bars.covered_from_ms = self.covered_from_ms
            state = PartitionState(bars, VolatilityState(self.rules))
        if self.activity.configured or state.activity is not None:
            if state.activity is None:
                state.activity = ActivityBars(self.activity.symbols, self.activity.default)
            elif batch.partition not in self._reconfigured:  # restored: today's settings rule
                state.activity = state.activity.reconfigured(
                    self.activity.symbols, self.activity.default
                )
            self._reconfigured.add(batch.partition)
        if batch.offsets:
            state.last_offset = batch.offsets[-1]
        out = StepOutput()
        if batch.rows is not None:
            decoded = Decoded(batch.rows)
        else:
            decoded = decode_batch(batch.values, batch.offsets)  # type: ignore[arg-type]
        for index, rejected in decoded.rejected:
            metrics.PARSE_ERRORS.labels("flow", rejected.reason).inc()
            raw = batch.values[index] or b""
            self._dead(out, batch, rejected.reason, rejected.detail, raw, batch.offsets[index],
                       rejected.index)  # fmt: skip
        rows = decoded.rows
        if self.between_ms is not None or self.symbols is not None:
            rows = rows.filter(self._selected())
        results = [state.bars.step(rows, decoded.markers)]
        if batch.final:
            results.append(state.bars.flush())
        closed: dict[str, pl.DataFrame] = {}
        activity: dict[str, list[pl.DataFrame]] = {}
        alerts = []
        for result in results:
            if state.activity is not None and state.activity.configured:
                for kind, frame in state.activity.step(result.on_time).items():
                    activity.setdefault(kind, []).append(state.bars.flag_spans(frame))
            self._account(out, batch, state, result)
            for interval, frame in result.closed.items():
                closed[interval] = (
                    pl.concat([closed[interval], frame]) if interval in closed else frame
                )
            alerts += state.vol.on_trades(result.on_time, state.bars)
            alerts += state.vol.on_closed(result.closed)
        self._emit_bars(out, batch.partition, closed)
        self._emit_activity(out, batch.partition, activity)
        state.vol.expire(None if batch.final else state.bars.watermark_ms)
        now_ms = time.time() * 1000
        for alert in alerts:
            metrics.ALERTS.labels(alert.rule, alert.interval).inc()
            metrics.ALERT_LATENCY.labels(alert.rule).observe(max(0.0, now_ms - alert.ts_ms) / 1000)
            if self.market.allows(alert.venue, alert.symbol):
                metrics.LAST_ALERT.labels(alert.venue, alert.symbol, alert.rule).set(
                    alert.ts_ms / 1000
                )
            out.records.append(
                KafkaRecord(self.alerts_topic, alert.key.encode(), alert.encode(), alert.ts_ms)
            )
        if self.archive:
            self._archive(state, out, batch, decoded.rows)
        if state.bars.watermark_ms is not None:
            metrics.WATERMARK.labels(str(batch.partition)).set(state.bars.watermark_ms / 1000)
        for interval, count in state.bars.open_windows().items():
            metrics.OPEN_WINDOWS.labels(str(batch.partition), interval).set(count)
        return state, out

    def _account(
        self, out: StepOutput, batch: Batch, state: PartitionState, result: StepResult
    ) -> None:
        """Dead letters and counts for what a kernel step did not aggregate."""
        for row in result.late.iter_rows(named=True):
            metrics.LATE_TRADES.labels(row["venue"]).inc()
            self._dead(
                out, batch, "late", _late_detail(row, state.bars), _row_json(row), row["off"]
            )
        for held in result.implausible:
            metrics.PARSE_ERRORS.labels("flow", "implausible_time").inc()
            self._dead(out, batch, "implausible_time", held.detail, _row_json(held.row),
                       held.row["off"])  # fmt: skip
        for row in result.too_many.iter_rows(named=True):
            metrics.PARSE_ERRORS.labels("flow", "too_large").inc()
            detail = f"its 1m bar already holds {MAX_MINUTE_TRADES} trades (the most one takes)"
            self._dead(out, batch, "too_large", detail, _row_json(row), row["off"])
        for venue, count in _venue_counts(result.refilled):
            metrics.FLOW_REFILLED.labels(venue).inc(count)
        for venue, count in _venue_counts(result.out_of_session):
            metrics.OUT_OF_SESSION.labels(venue).inc(count)
        for venue, count in _venue_counts(result.duplicates):
            metrics.FLOW_DUPLICATES.labels(venue).inc(count)
        for venue, count in _venue_counts(result.on_time):
            metrics.TRADES_IN.labels(venue).inc(count)

    def _selected(self) -> pl.Expr:
        """Trades in the backtest's range/symbols, and heartbeats before its end (they move the
        watermark; none beyond the range, or its flat bars would run past it)."""
        keep = pl.lit(True)
        beat = pl.col("hb")
        if self.between_ms is not None:
            keep = keep & pl.col("ts_ms").is_between(*self.between_ms, closed="left")
            beat = beat & (pl.col("ts_ms") < self.between_ms[1])
        if self.symbols is not None:
            keep = keep & pl.col("symbol").is_in(list(self.symbols))
        return beat | (~pl.col("hb") & keep)

    def _dead(
        self,
        out: StepOutput,
        batch: Batch,
        reason: str,
        detail: str,
        raw: bytes,
        offset: int,
        index: int | None = None,
    ) -> None:
        source: dict[str, Any] = {
            "topic": self.trades_topic,
            "partition": batch.partition,
            "offset": offset,
        }
        if index is not None:  # one item of an array message
            source["index"] = index
        letter = DeadLetter(reason, detail, raw, source)
        out.records.append(KafkaRecord(self.deadletter_topic, None, letter.encode()))

    def _emit_bars(self, out: StepOutput, partition: int, closed: dict[str, pl.DataFrame]) -> None:
        now = time.time()
        for interval, kernel_bars in closed.items():
            if not kernel_bars.height:
                continue
            frame = bar_columns(kernel_bars, interval)
            metrics.BARS_EMITTED.labels(interval).inc(frame.height)
            self._market_gauges(frame, interval)
            values = bar_values(frame)
            keys = frame.select(pl.concat_str("venue", pl.lit(":"), "symbol"))[:, 0].to_list()
            for key, value, end_ms in zip(keys, values, frame["end_ms"].to_list(), strict=True):
                out.records.append(KafkaRecord(self.bars_topic, key.encode(), value, end_ms - 1))
            for (start_ms,), window in frame.group_by("start_ms", maintain_order=True):
                metrics.BAR_CLOSE_LAG.labels(interval).observe(
                    max(0.0, now - (int(start_ms) + INTERVALS[interval]) / 1000)
                )
                out.files.append(BarWindowFile(partition, interval, int(start_ms), window))

    def _emit_activity(
        self, out: StepOutput, partition: int, closed: dict[str, list[pl.DataFrame]]
    ) -> None:
        """Bars by activity: to ``bars`` like time bars (key venue:SYMBOL, timestamp
        end_ms - 1), and one Parquet file per kind and step, named by its first bar's ``seq``."""
        for kind, frames in closed.items():
            kernel_bars = pl.concat(frames)
            frame = bar_columns(kernel_bars, kind)
            metrics.BARS_EMITTED.labels(kind).inc(frame.height)
            values = bar_values(frame)
            keys = frame.select(pl.concat_str("venue", pl.lit(":"), "symbol"))[:, 0].to_list()
            for key, value, end_ms in zip(keys, values, frame["end_ms"].to_list(), strict=True):
                out.records.append(KafkaRecord(self.bars_topic, key.encode(), value, end_ms - 1))
            first = int(kernel_bars["seq"].min())  # type: ignore[arg-type]
            start = int(frame["start_ms"].min())  # type: ignore[arg-type]
            out.files.append(BarWindowFile(partition, kind, start, frame, seq=first))

    def _market_gauges(self, frame: pl.DataFrame, interval: str) -> None:
        if not self.market.limit:
            return
        latest = frame.group_by("venue", "symbol").agg(pl.all().sort_by("start_ms").last())
        for row in latest.select("venue", "symbol", "close", "high", "low", "volume").iter_rows():
            venue, symbol, close, high, low, volume = row
            if not self.market.allows(venue, symbol):
                continue
            hi = float(high)
            metrics.BAR_CLOSE.labels(venue, symbol, interval).set(float(close))
            metrics.BAR_RANGE.labels(venue, symbol, interval).set((hi - float(low)) / hi)
            metrics.BAR_VOLUME.labels(venue, symbol, interval).set(float(volume))

    def _archive(
        self, state: PartitionState, out: StepOutput, batch: Batch, rows: pl.DataFrame
    ) -> None:
        trades = rows.filter(~pl.col("hb"))
        if trades.height:
            state.archive.append(trades)
        if not state.archive:
            return
        complete_below = (state.last_offset + 1) // ARCHIVE_BLOCK * ARCHIVE_BLOCK
        first = int(state.archive[0]["off"][0])  # parts are in offset order
        if first >= complete_below and not batch.final:
            return  # no block completed
        # Zero-copy: chunks concatenated, blocks cut by offset (the rows are in offset order).
        pending = pl.concat(state.archive, rechunk=False)
        done, pending = _cut(pending, complete_below)
        for start, part in _blocks(done):
            out.files.append(
                TradeBlockFile(batch.partition, start, start + ARCHIVE_BLOCK - 1, part)
            )
        if batch.final and pending.height:
            last = state.last_offset
            for start, part in _blocks(pending):
                end = min(last, start + ARCHIVE_BLOCK - 1)
                out.files.append(TradeBlockFile(batch.partition, start, end, part))
            pending = pending.clear()
        state.archive = [pending] if pending.height else []


def _cut(rows: pl.DataFrame, offset: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows (in offset order) below ``offset``, and the others: two slices, no copy."""
    at = int(rows["off"].search_sorted(offset, side="left"))
    return rows.slice(0, at), rows.slice(at)


def _blocks(rows: pl.DataFrame) -> list[tuple[int, pl.DataFrame]]:
    """Rows (in offset order) as (block start, slice) per archive block."""
    out = []
    while rows.height:
        start = int(rows["off"][0]) // ARCHIVE_BLOCK * ARCHIVE_BLOCK
        part, rows = _cut(rows, start + ARCHIVE_BLOCK)
        out.append((start, part))
    return out


def _venue_counts(rows: pl.DataFrame) -> list[tuple[str, int]]:
    """Trades per venue of kernel trade rows (no heartbeats among them)."""
    if not rows.height:
        return []
    return list(rows.group_by("venue").len().iter_rows())


def _row_json(row: dict[str, Any]) -> bytes:
    """A kernel row back in the trades wire format (for the dead letter of a late trade or of
    an implausible trade or heartbeat)."""
    if row["hb"]:
        return Heartbeat(row["venue"], row["ts_ms"]).encode()
    side = None if row["buy"] is None else ("buy" if row["buy"] else "sell")
    price, qty = format_scaled(row["p"]), format_scaled(row["q"])
    trade = Trade(
        row["venue"], row["symbol"], row["id"], price, qty, side, row["ts_ms"], row["recv_ms"]
    )
    return trade.encode()


def _late_detail(row: dict[str, Any], bars: BarState) -> str:
    start = row["ts_ms"] - row["ts_ms"] % INTERVALS["1m"]
    return f"1m window {start} closed before this trade arrived (watermark {bars.watermark_ms})"


# --------------------------------------------------------------------------- parquet sink


class _ParquetPartition(StatelessSinkPartition[BarWindowFile | TradeBlockFile]):
    def __init__(self, settings: Settings) -> None:
        self.data_dir = settings.data_dir
        removed = remove_stale_temp(self.data_dir)
        if removed:
            log.info("removed %d temp file(s) of writers killed mid-write", removed)

    def write_batch(self, items: list[BarWindowFile | TradeBlockFile]) -> None:
        for item in items:
            try:
                if isinstance(item, BarWindowFile):
                    write_bar_window(
                        self.data_dir, item.interval, item.partition, item.start_ms, item.bars,
                        item.seq,
                    )  # fmt: skip
                else:
                    write_trade_block(
                        self.data_dir, item.partition, item.block_start, item.last_offset, item.rows
                    )
            except UnsafePath as exc:  # the codec keeps such names out; this is the backstop
                metrics.PARQUET_REFUSED.inc()
                log.error("refused to write a Parquet file: %s", exc)


class ParquetOutput(DynamicSink[BarWindowFile | TradeBlockFile]):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ParquetPartition:
        return _ParquetPartition(self.settings)


# --------------------------------------------------------------------------- wiring


def build_flow(
    settings: Settings,
    source: Any = None,
    step: BarStep | None = None,
    records_sink: Any = None,
) -> Dataflow:
    """The dataflow for ``settings`` (pure wiring; checks nothing). A backtest passes its own
    bounded ``source``, a ``step`` with its range, and a ``records_sink`` that writes files
    instead of topics; everything else is the same code as the live flow."""
    flow = Dataflow("candlewax_bars")
    batches = op.input("trades_in", flow, source or TradesSource(settings))
    keyed_out = op.stateful_map("bars", batches, step or BarStep(settings))
    outputs = op.map("unkey", keyed_out, lambda kv: kv[1])
    records = op.flat_map("records", outputs, lambda o: o.records)
    op.output(
        "kafka_out",
        records,
        records_sink or KafkaOutput(settings.connection, settings.topic(DEADLETTER)),
    )
    files = op.flat_map("files", outputs, lambda o: o.files)
    op.output("parquet_out", files, ParquetOutput(settings))
    return flow


def build() -> Dataflow:
    """Entry point of ``python -m bytewax.run "flows.bars:build()"``: the settings its parent
    handed down whole (``CANDLEWAX_SETTINGS_JSON``, from ``candlewax flow``), else the file in
    ``CANDLEWAX_CONFIG`` and the ``CANDLEWAX_*`` environment; broker checked first.
    An operator error ends the process with one line and exit code 1, as the CLI's do."""
    level = os.environ.get("CANDLEWAX_LOG_LEVEL", "INFO")
    setup_logging(level)
    try:
        settings = Settings.inherited()
        if not settings.bootstrap_servers:
            raise BrokerError("CANDLEWAX_BOOTSTRAP_SERVERS is not set: where is Kafka?")
        check_writable(settings.data_dir)  # before anything is consumed, not at the first write
        wait_for_broker(settings.connection)
        metrics.serve(settings.metrics_host, settings.metrics_port)
    except CandlewaxError as exc:
        if level.upper() == "DEBUG":
            log.debug("the error's traceback:", exc_info=True)
        print(f"candlewax flow: error: {SECRETS.redact(str(exc))}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    return build_flow(settings)
