"""Publishing loop shared by the replay and synthetic connectors: pace, shift, heartbeat, publish.

``speed`` is relative to the recorded receive clock: 0 publishes as fast as Kafka takes it, 1
replays in real time, 10 ten times faster. ``shift_ms`` moves event and receive times together
(e.g. to replay a 2024 capture as if it happened now, so the broker's retention keeps it).

Heartbeats carry the newest *exchange* time seen per venue into every partition of ``trades``,
every ``heartbeat_ms`` of event time: they let idle symbols' windows close, and because they are
derived from the data, a replay at any speed writes the same log.

:func:`publish` takes items one by one — ``(recv_ms, trades, rejected)``, one recorded message
each — or :class:`TradeBatch` es: runs of consecutive items column-wise, their trades already
encoded (the replay's batch readers, ``connectors.replay.iter_batches``). Both forms of the same
items write the same messages, in the same order, with the same dead letters, heartbeats and
counts; a batch only skips the per-trade objects.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import polars as pl

from candlewax.codec import DeadLetter, Trade
from connectors.producer import TradeProducer

log = logging.getLogger(__name__)

#: Per-trade columns of a :class:`TradeBatch` besides its values and keys.
TIMES_SCHEMA: dict[str, pl.DataType] = {
    "venue": pl.String(),
    "ts_ms": pl.Int64(),
    "recv_ms": pl.Int64(),
}
#: The end of a canonical trade message: what a time shift rewrites.
_TIMES_TAIL = r',"ts_ms":-?[0-9]+,"recv_ms":(?:null|-?[0-9]+)\}$'


def shift_trade(trade: Trade, shift_ms: int) -> Trade:
    """The same trade ``shift_ms`` later (earlier if negative): ``ts_ms`` and ``recv_ms`` move."""
    recv_ms = None if trade.recv_ms is None else trade.recv_ms + shift_ms
    return replace(trade, ts_ms=trade.ts_ms + shift_ms, recv_ms=recv_ms)


@dataclass(slots=True)
class TradeBatch:
    """Consecutive items (recorded messages) of a replay, column-wise.

    Per trade, in publishing order: ``values`` — its message, exactly ``Trade.encode()`` —,
    ``keys`` (``venue:SYMBOL``) and ``times`` (columns :data:`TIMES_SCHEMA`). Per item: ``ends``,
    the index one past its last trade (an item may have none), ``recv_ms``, its receive time
    (what pacing follows), and in ``rejected`` its dead letters, by item index.
    """

    values: list[bytes]
    keys: list[str]
    times: pl.DataFrame
    ends: list[int]
    recv_ms: list[int]
    rejected: dict[int, list[DeadLetter]] = field(default_factory=dict)

    @classmethod
    def from_items(cls, items: Iterable[tuple[int, list[Trade], list[DeadLetter]]]) -> TradeBatch:
        """The batch of items given one by one (readers whose parsers make Trade objects)."""
        recv_ms: list[int] = []
        ends: list[int] = []
        trades: list[Trade] = []
        rejected: dict[int, list[DeadLetter]] = {}
        for index, (item_recv_ms, item_trades, item_rejected) in enumerate(items):
            recv_ms.append(item_recv_ms)
            trades.extend(item_trades)
            ends.append(len(trades))
            if item_rejected:
                rejected[index] = list(item_rejected)
        times = pl.DataFrame(
            {
                "venue": [t.venue for t in trades],
                "ts_ms": [t.ts_ms for t in trades],
                "recv_ms": [t.recv_ms for t in trades],
            },
            schema=TIMES_SCHEMA,
        )
        values = [t.encode() for t in trades]
        return cls(values, [t.key for t in trades], times, ends, recv_ms, rejected)

    def __len__(self) -> int:
        """Items in the batch."""
        return len(self.ends)

    def shifted_values(self, shift_ms: int) -> list[bytes]:
        """The messages of the trades ``shift_ms`` later (what :func:`shift_trade` + encode
        write): the canonical text up to ``ts_ms``, then the moved times."""
        if not shift_ms or not self.values:
            return self.values
        ts = pl.col("ts_ms") + shift_ms
        recv = pl.col("recv_ms") + shift_ms
        frame = self.times.with_columns(
            head=pl.Series(self.values, dtype=pl.Binary)
            .cast(pl.String)
            .str.replace(_TIMES_TAIL, "")
        )
        text = frame.select(
            pl.concat_str(
                pl.col("head"),
                pl.lit(',"ts_ms":'),
                ts.cast(pl.String),
                pl.lit(',"recv_ms":'),
                recv.cast(pl.String).fill_null("null"),
                pl.lit("}"),
            ).cast(pl.Binary)
        )
        return text.to_series().to_list()


@dataclass
class PublishStats:
    trades: int = 0
    rejected: int = 0
    heartbeats: int = 0
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None


Item = tuple[int, list[Trade], list[DeadLetter]]


def publish(
    items: Iterable[Item | TradeBatch],
    producer: TradeProducer,
    *,
    speed: float = 0.0,
    shift_ms: int = 0,
    heartbeat_ms: int = 1_000,
    per_message: int = 1,
    stop: threading.Event | None = None,
    stats: PublishStats | None = None,
) -> PublishStats:
    """Publish ``(recv_ms, trades, rejected)`` items (or :class:`TradeBatch` es of them) in
    order; returns counts.

    Rejected input goes to the dead-letter topic; nothing else stops the stream.
    """
    run = _Run(producer, speed, shift_ms, heartbeat_ms, per_message, stop, stats or PublishStats())
    for item in items:
        if isinstance(item, TradeBatch):
            if not run.batch(item):
                break
            continue
        recv_ms, trades, rejected = item
        if not run.pace(recv_ms):
            break
        run.item(trades, rejected)
    return run.stats


class _Run:
    """One publish call's state: the pacing clock, the newest exchange time per venue and the
    next heartbeat due per venue."""

    def __init__(
        self,
        producer: TradeProducer,
        speed: float,
        shift_ms: int,
        heartbeat_ms: int,
        per_message: int,
        stop: threading.Event | None,
        stats: PublishStats,
    ) -> None:
        self.producer = producer
        self.speed = speed
        self.shift_ms = shift_ms
        self.heartbeat_ms = heartbeat_ms
        self.per_message = per_message
        self.stop = stop
        self.stats = stats
        self.next_beat: dict[str, int] = {}
        self.newest: dict[str, int] = {}  # in the order the venues were first seen
        self.wall0: float | None = None
        self.recv0: int | None = None

    # ------------------------------------------------------------------ one item at a time

    def pace(self, recv_ms: int) -> bool:
        """Wait until ``recv_ms`` is due (speed > 0); False once stopped."""
        stop = self.stop
        if stop is not None and stop.is_set():
            return False
        if self.speed > 0:
            if self.wall0 is None or self.recv0 is None:
                self.wall0, self.recv0 = time.monotonic(), recv_ms
            delay = self.wall0 + (recv_ms - self.recv0) / 1000 / self.speed - time.monotonic()
            if delay > 0:
                if stop is not None:
                    if stop.wait(delay):
                        return False
                else:
                    time.sleep(delay)
        return True

    def item(self, trades: list[Trade], rejected: list[DeadLetter]) -> None:
        producer, stats = self.producer, self.stats
        for letter in rejected:
            producer.dead_letter(letter)
            stats.rejected += 1
        if not trades:
            return
        if self.shift_ms:
            trades = [shift_trade(t, self.shift_ms) for t in trades]
        stats.trades += producer.send(trades, self.per_message)
        newest = self.newest
        for trade in trades:
            if trade.ts_ms > newest.get(trade.venue, -1):
                newest[trade.venue] = trade.ts_ms
        if stats.first_ts_ms is None:
            stats.first_ts_ms = min(t.ts_ms for t in trades)
        stats.last_ts_ms = max(stats.last_ts_ms or 0, max(t.ts_ms for t in trades))
        if self.heartbeat_ms > 0:
            for venue, ts in newest.items():
                due = self.next_beat.get(venue)
                if due is None:
                    self.next_beat[venue] = ts - ts % self.heartbeat_ms + self.heartbeat_ms
                elif ts >= due:
                    self._beat(venue, ts)

    def _beat(self, venue: str, ts: int) -> None:
        self.producer.heartbeat(venue, ts)
        self.stats.heartbeats += 1
        self.next_beat[venue] = ts - ts % self.heartbeat_ms + self.heartbeat_ms

    # ------------------------------------------------------------------ batches

    def batch(self, batch: TradeBatch) -> bool:
        """Publish a batch as its items one by one would be; False once stopped.

        The heartbeats due after each item are worked out column-wise first (they depend on the
        exchange times only); then the trades between two items that carry dead letters or
        heartbeats go out in one call. With ``speed > 0`` each item is paced on its own.
        """
        if not batch.ends:
            return True
        stop = self.stop
        if stop is not None and stop.is_set():
            return False
        n = len(batch.values)
        ts_column = batch.times["ts_ms"]
        if self.shift_ms:
            ts_column = ts_column + self.shift_ms
        ts = ts_column.to_list()
        values = batch.shifted_values(self.shift_ms)
        ends = batch.ends
        starts = [0, *ends[:-1]]
        venue_names, codes = _venue_codes(batch.times["venue"])
        beats = self._batch_beats(ts_column.to_numpy(), ends, venue_names, codes) if n else {}
        send = _Sender(self, values, batch.keys, ts, starts, ends, venue_names, codes)
        if self.speed > 0:
            for index, recv_ms in enumerate(batch.recv_ms):
                if not self.pace(recv_ms):
                    return False
                send.item(index, batch.rejected.get(index, ()), beats.get(index, ()))
            return True
        marks = sorted({*batch.rejected, *beats})
        done = 0  # items sent so far
        for index in marks:
            send.items(done, index)  # the items in between: trades only
            send.item(index, batch.rejected.get(index, ()), beats.get(index, ()))
            done = index + 1
        send.items(done, len(ends))
        return True

    def _batch_beats(
        self, ts: np.ndarray, ends: list[int], venue_names: list[str], codes: np.ndarray | None
    ) -> dict[int, list[tuple[str, int]]]:
        """Per item index, the heartbeats due after it — ``(venue, ts)`` in the order the
        per-item loop sends them — and ``newest`` / ``next_beat`` moved past the batch.

        After an item with trades the per-item loop checks every venue seen so far; a venue's
        heartbeat is due when its newest time enters a later ``heartbeat_ms`` window than at its
        last check (the first check only sets the window). The newest time only moves with the
        venue's own trades, so only items with trades of it can fire.
        """
        item_of = np.searchsorted(np.asarray(ends), np.arange(len(ts)), side="right")
        per_venue = []
        for code, venue in enumerate(venue_names):
            at = np.arange(len(ts)) if codes is None else np.flatnonzero(codes == code)
            prior = self.newest.get(venue, -1)
            newest = np.maximum(np.maximum.accumulate(ts[at]), prior)
            # Before a venue's first time above -1 the loop has not seen it (newest.get(-1)).
            seen = newest > -1
            at, newest = at[seen], newest[seen]
            if not len(at):
                continue
            last = np.ones(len(at), dtype=bool)  # the venue's last trade in each item
            last[:-1] = item_of[at[1:]] != item_of[at[:-1]]
            per_venue.append((int(at[0]), venue, item_of[at[last]], newest[last]))
        beats: dict[int, list[tuple[str, int]]] = {}
        fired: list[tuple[int, int, str, int]] = []
        hb = self.heartbeat_ms
        for _, venue, items, newest in sorted(per_venue, key=lambda v: v[0]):
            self.newest[venue] = int(newest[-1])  # new venues join in order of first sight
            if hb <= 0:
                continue
            window = newest // hb
            due = self.next_beat.get(venue)
            before = np.empty_like(window)
            before[0] = window[0] if due is None else due // hb - 1
            before[1:] = window[:-1]
            fire = window > before
            order = list(self.newest).index(venue)
            fired.extend(
                (item, order, venue, ts_ms)
                for item, ts_ms in zip(items[fire].tolist(), newest[fire].tolist(), strict=True)
            )
            self.next_beat[venue] = (int(window[-1]) + 1) * hb
        for item, _, venue, ts_ms in sorted(fired):
            beats.setdefault(item, []).append((venue, ts_ms))
        return beats


def _venue_codes(venues: pl.Series) -> tuple[list[str], np.ndarray | None]:
    """The batch's venues in order of first appearance, and each trade's index among them
    (None when there is one venue)."""
    names: list[str] = venues.unique(maintain_order=True).to_list()
    if len(names) <= 1:
        return names, None
    codes = venues.replace_strict(names, list(range(len(names))), return_dtype=pl.Int64)
    return names, codes.to_numpy()


class _Sender:
    """Sends the items of one batch: dead letters, trades, heartbeats, with the stats."""

    def __init__(
        self,
        run: _Run,
        values: list[bytes],
        keys: list[str],
        ts: list[int],
        starts: list[int],
        ends: list[int],
        venue_names: list[str],
        codes: np.ndarray | None,
    ) -> None:
        self.run = run
        self.values = values
        self.keys = keys
        self.ts = ts
        self.starts = starts
        self.ends = ends
        self.venue_names = venue_names
        self.codes = codes

    def item(
        self, index: int, rejected: Iterable[DeadLetter], beats: Iterable[tuple[str, int]]
    ) -> None:
        run = self.run
        for letter in rejected:
            run.producer.dead_letter(letter)
            run.stats.rejected += 1
        self.items(index, index + 1)
        for venue, ts in beats:
            run._beat(venue, ts)

    def items(self, first: int, stop: int) -> None:
        """The trades of items ``first`` ..< ``stop``."""
        if first >= stop:
            return
        lo, hi = self.starts[first], self.ends[stop - 1]
        if hi <= lo:
            return
        run, stats = self.run, self.run.stats
        ts = self.ts[lo:hi]
        if self.codes is None:
            counts: dict[str, int] = {self.venue_names[0]: hi - lo}
        else:
            per_code = np.bincount(self.codes[lo:hi], minlength=len(self.venue_names))
            counts = {v: int(c) for v, c in zip(self.venue_names, per_code, strict=True) if c}
        bounds: list[int] | None = None
        if run.per_message > 1:
            bounds = [end - lo for end in self.ends[first:stop]]
        stats.trades += run.producer.send_encoded(
            self.values[lo:hi], self.keys[lo:hi], ts, counts, run.per_message, bounds
        )
        if stats.first_ts_ms is None:
            first_with = next(i for i in range(first, stop) if self.ends[i] > self.starts[i])
            stats.first_ts_ms = min(self.ts[self.starts[first_with] : self.ends[first_with]])
        stats.last_ts_ms = max(stats.last_ts_ms or 0, max(ts))
