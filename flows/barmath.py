"""Pure bar math: fold decoded ``trades`` rows into open windows, close windows behind the
watermark. No Bytewax, no Kafka: everything here is testable alone.

Exactness: prices and quantities are fixed-point integers (units of 1e-8, see
``codec.to_scaled``) held in Polars Int128 columns, so volume, quote volume (Σ price·qty at 1e-16)
and the taker-buy sums are exact — no float ever touches them.

One function, :func:`merge`, does all aggregation: a trade is a bar of one trade; 1m bars are
merges of trades; 5m…1h bars are merges of closed 1m bars. Merging is associative, so a rollup
equals the bar built directly from the same trades.

Order: the open (close) of a bar is the trade with the smallest (largest) event time, ties broken
by log order — for Binance that is trade-id order, exactly as its klines.

Time: the watermark of a ``trades`` partition is the newest *plausible* event time seen in it
(trades and heartbeats, see :class:`EventClock`) minus ``lateness_ms``. A window ``[start, end)``
closes once ``end <= watermark``. A trade is *late* when its window had closed before it
arrived; lateness is decided row by row in log order, so the same log gives the same bars
whatever the batch boundaries or replay speed.

Duplicates: a trade whose (venue, symbol, id) was already counted in an open window is dropped
(:class:`SeenTrades`); memory is bounded by the trades of the open 1m windows.

Empty windows (:class:`EmptyIntervals`): as Binance makes a kline for every interval, a window of
a symbol without trades closes as a *flat* bar — open = high = low = close = the previous bar's
close, volume 0, trades 0, no ids — once the watermark passes its end, from the symbol's first
bar on. Flat bars come from the watermark alone (deterministic on replay) and are made per
interval, never rolled up: a 5m bar is merged from the *trades'* 1m bars, and is flat only when
its five minutes have no trade, so rollups over flat minutes equal bars built directly.

Flags (:meth:`BarState._flag`): every closed bar carries ``complete`` and ``gaps``. A symbol's
*coverage* starts at its first record in the log: a :class:`~candlewax.codec.Since` marker (a
connector's start-up fill covers every trade from that time on) or else its first counted
trade. ``gaps`` counts the :class:`~candlewax.codec.Gap` markers of the symbol that overlap the
window and arrived while it was still open (decided by the newest event time before the
marker, as lateness is: the same log gives the same flags whatever the batching). A bar is
complete when its window starts at or after the coverage start and ``gaps`` is 0.

The rows come from :func:`candlewax.codec.columns.decode_batch` (schema ``ROW_SCHEMA``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from candlewax.calendar import Calendar
from candlewax.codec import INTERVALS, MAX_MINUTE_TRADES, Gap, Marker, Since
from candlewax.codec.columns import ROW_SCHEMA, empty_rows
from candlewax.codec.rules import CALENDAR_INTERVALS, MAX_WINDOW_MS

#: Columns of a (partial or closed) bar in the kernel. Amounts are scaled integers:
#: prices and volumes at 1e-8, quote amounts at 1e-16.
BAR_SCHEMA: dict[str, pl.DataType] = {
    "venue": pl.String(),
    "symbol": pl.String(),
    "start_ms": pl.Int64(),
    "open_ts": pl.Int64(),
    "open": pl.Int128(),
    "open_id": pl.String(),
    "close_ts": pl.Int64(),
    "close": pl.Int128(),
    "close_id": pl.String(),
    "high": pl.Int128(),
    "low": pl.Int128(),
    "volume": pl.Int128(),
    "quote": pl.Int128(),
    "trades": pl.Int64(),
    "buy_volume": pl.Int128(),
    "buy_quote": pl.Int128(),
}
KEYS = ["venue", "symbol", "start_ms"]
_MINUTE = INTERVALS["1m"]

__all__ = [
    "BAR_SCHEMA",
    "ROW_SCHEMA",
    "BarState",
    "EmptyIntervals",
    "EventClock",
    "SeenTrades",
    "TimeRules",
]

#: At most this much of flat windows is made for a symbol at once: when event time jumps further
#: in one step (a feed back after a day), the symbol gets no more flat bars until its next trade
#: (a dormant symbol costs nothing; a day of 1m bars is 1 440 per symbol). Time that moves in
#: steady steps keeps a silent symbol's flat bars coming, as Binance's klines do.
FLAT_MAX_GAP_MS = 86_400_000

#: Per (venue, symbol) and interval: where its next bar starts, and the close it carries.
_LAST_SCHEMA: dict[str, pl.DataType] = {
    "venue": pl.String(),
    "symbol": pl.String(),
    "next_ms": pl.Int64(),
    "price": pl.Int128(),
}


#: Per (venue, symbol): where its coverage starts (see "Flags" above).
_COVER_SCHEMA: dict[str, pl.DataType] = {
    "venue": pl.String(),
    "symbol": pl.String(),
    "since_ms": pl.Int64(),
}
#: Gap markers that may still overlap an open window; ``seen_ms``: the newest event time before
#: the marker (a window that had closed by then does not count it).
_GAP_SCHEMA: dict[str, pl.DataType] = {
    "venue": pl.String(),
    "symbol": pl.String(),
    "from_ms": pl.Int64(),
    "to_ms": pl.Int64(),
    "seen_ms": pl.Int64(),
}


_REFILL_SCHEMA: dict[str, pl.DataType] = {
    "venue": pl.String(),
    "symbol": pl.String(),
    "from_ms": pl.Int64(),
    "to_ms": pl.Int64(),
    "after_off": pl.Int64(),
}


def empty_bars() -> pl.DataFrame:
    return pl.DataFrame(schema=BAR_SCHEMA)


# --------------------------------------------------------------------------- event time


@dataclass(frozen=True)
class TimeRules:
    """How far event time may plausibly move (docs/reliability.md, "Event time").

    - ``max_skew_ms``: a record's ``ts_ms`` may run at most this far ahead of its own
      ``recv_ms`` (the local clock of the connector that received it). Checked when present.
    - ``max_jump_ms`` / ``quorum``: a record more than ``max_jump_ms`` ahead of the partition's
      event time is held, not used, until records of ``quorum`` distinct messages agree with
      it (each within ``max_jump_ms`` of the next: a real gap, such as a feed back after an
      outage); once ``quorum`` later messages carry on at the old time instead, it is
      implausible. The same holds at the start of a partition, before any time is known.
    """

    max_skew_ms: int = 60_000
    max_jump_ms: int = 60_000
    quorum: int = 3

    def __post_init__(self) -> None:
        if self.max_skew_ms < 0 or self.max_jump_ms < 0 or self.quorum < 1:
            raise ValueError("max_skew_ms and max_jump_ms must be >= 0, quorum >= 1")


@dataclass(frozen=True)
class EmptyIntervals:
    """What a window without trades becomes: ``"flat"`` (a bar at the previous close, as
    Binance's klines) or ``"skip"`` (no bar). ``symbols`` (``"venue:SYMBOL"``) override
    ``venues``, which override ``default``."""

    default: str = "flat"
    venues: tuple[tuple[str, str], ...] = ()
    symbols: tuple[tuple[str, str], ...] = ()

    def flat(self, venue: str, symbol: str) -> bool:
        mode = dict(self.symbols).get(f"{venue}:{symbol}") or dict(self.venues).get(venue)
        return (mode or self.default) == "flat"


#: Pending clusters of held rows kept at once; a new one beyond this drops the oldest.
_MAX_CLUSTERS = 8


@dataclass
class _Cluster:
    """Held rows whose times chain together (each within max_jump_ms of the cluster)."""

    oldest_ms: int
    newest_ms: int
    first_off: int
    rows: list[pl.DataFrame] = field(default_factory=list)
    offsets: set[int] = field(default_factory=set)
    #: Messages used (admitted) since this cluster was formed: evidence against it.
    against: set[int] = field(default_factory=set)

    def fits(self, ts: int, jump: int) -> bool:
        return self.oldest_ms - jump <= ts <= self.newest_ms + jump

    def add(self, row: pl.DataFrame, ts: int, off: int) -> None:
        self.rows.append(row)
        self.offsets.add(off)
        self.oldest_ms = min(self.oldest_ms, ts)
        self.newest_ms = max(self.newest_ms, ts)

    def frame(self) -> pl.DataFrame:
        return pl.concat(self.rows)


@dataclass
class Implausible:
    """A row that may not move event time, and why."""

    row: dict[str, Any]
    detail: str


@dataclass
class EventClock:
    """The newest plausible event time of one ``trades`` partition, decided from the log alone
    (never the wall clock), so replays stay deterministic. See :class:`TimeRules`.

    :meth:`admit` takes rows in log order and returns the rows that may be used, in the order
    they become usable, and the implausible ones. A clean batch costs two vectorized
    comparisons; only a batch with a held or implausible row is walked row by row.
    """

    rules: TimeRules = field(default_factory=TimeRules)
    newest_ms: int | None = None
    clusters: list[_Cluster] = field(default_factory=list)

    def admit(self, rows: pl.DataFrame) -> tuple[pl.DataFrame, list[Implausible]]:
        if not rows.height:
            return rows, []
        bad: list[Implausible] = []
        skew, jump = self.rules.max_skew_ms, self.rules.max_jump_ms
        ahead = (pl.col("ts_ms") - pl.col("recv_ms") > skew).fill_null(False)
        if self.newest_ms is not None and not self.clusters:
            # One pass for a clean batch: no row ahead of its receive clock, none jumping.
            before = pl.col("ts_ms").cum_max().shift(1, fill_value=self.newest_ms)
            jumps = pl.col("ts_ms") > pl.max_horizontal(before, pl.lit(self.newest_ms)) + jump
            clean = rows.select(~(ahead | jumps).any()).item()
            if clean:
                self.newest_ms = max(self.newest_ms, int(rows["ts_ms"].max()))  # type: ignore[arg-type]
                return rows, bad
        skewed = rows.select(ahead).to_series()
        if skewed.any():
            for row in rows.filter(skewed).iter_rows(named=True):
                bad.append(
                    Implausible(
                        row,
                        (
                            f"ts_ms {row['ts_ms']} is {row['ts_ms'] - row['recv_ms']} ms after its "
                            f"recv_ms {row['recv_ms']} (max_clock_skew_ms {skew})"
                        ),
                    )
                )
            rows = rows.filter(~skewed)
            if not rows.height:
                return rows, bad
        if self.newest_ms is not None and not self.clusters:  # clean once the skewed are out?
            ts = rows["ts_ms"]
            seen = ts.cum_max().shift(1, fill_value=self.newest_ms).clip(lower_bound=self.newest_ms)
            if (ts <= seen + jump).all():
                self.newest_ms = max(self.newest_ms, int(ts.max()))  # type: ignore[arg-type]
                return rows, bad
        admitted, held_bad = self._walk(rows)
        return admitted, bad + held_bad

    def flush(self) -> tuple[pl.DataFrame, list[Implausible]]:
        """End of input. A partition that never reached a quorum is taken as it is (largest
        cluster first); otherwise what is still held was never corroborated: implausible."""
        pieces: list[pl.DataFrame] = []
        bad: list[Implausible] = []
        while self.clusters and self.newest_ms is None:
            best = max(self.clusters, key=lambda c: (len(c.offsets), -c.first_off))
            pieces.append(self._accept(best))
            pieces.extend(self._release())
        for cluster in self.clusters:
            bad.extend(self._reject(cluster, "never corroborated before the end of input"))
        self.clusters = []
        return (pl.concat(pieces) if pieces else empty_rows()), bad

    def _walk(self, rows: pl.DataFrame) -> tuple[pl.DataFrame, list[Implausible]]:
        jump, quorum = self.rules.max_jump_ms, self.rules.quorum
        pieces: list[pl.DataFrame] = []
        bad: list[Implausible] = []
        run: list[int] = []
        for i, (ts, off) in enumerate(
            zip(rows["ts_ms"].to_list(), rows["off"].to_list(), strict=True)
        ):
            if self.newest_ms is not None and ts <= self.newest_ms + jump:
                run.append(i)
                self.newest_ms = max(self.newest_ms, ts)
                for cluster in list(self.clusters):
                    if off > cluster.first_off:
                        cluster.against.add(off)
                    if len(cluster.against) >= quorum:
                        self.clusters.remove(cluster)
                        bad.extend(
                            self._reject(
                                cluster, f"{quorum} later messages kept the partition's time"
                            )
                        )
                continue
            home = next((c for c in self.clusters if c.fits(ts, jump)), None)
            if home is None:
                if len(self.clusters) >= _MAX_CLUSTERS:
                    bad.extend(self._reject(self.clusters.pop(0), "too many times in dispute"))
                home = _Cluster(ts, ts, off)
                self.clusters.append(home)
            home.add(rows.slice(i, 1), ts, off)
            if len(home.offsets) >= quorum:
                if run:
                    pieces.append(rows[run])
                    run = []
                pieces.append(self._accept(home))
                pieces.extend(self._release())
        if run:
            pieces.append(rows[run])
        return (pl.concat(pieces) if pieces else rows.clear()), bad

    def _accept(self, cluster: _Cluster) -> pl.DataFrame:
        """A corroborated cluster: its time becomes the partition's, its rows usable (in log
        order); every other held cluster counts its messages as evidence against it."""
        self.clusters.remove(cluster)
        frame = cluster.frame()
        newest = cluster.newest_ms
        self.newest_ms = newest if self.newest_ms is None else max(self.newest_ms, newest)
        for other in self.clusters:
            other.against.update(o for o in cluster.offsets if o > other.first_off)
        return frame

    def _release(self) -> list[pl.DataFrame]:
        """Held rows that are no longer ahead of the partition's time: usable now."""
        assert self.newest_ms is not None
        limit = self.newest_ms + self.rules.max_jump_ms
        out = []
        for cluster in list(self.clusters):
            if cluster.newest_ms <= limit:
                self.clusters.remove(cluster)
                out.append(cluster.frame())
        return out

    def _reject(self, cluster: _Cluster, why: str) -> list[Implausible]:
        now = "unknown" if self.newest_ms is None else str(self.newest_ms)
        return [
            Implausible(
                row,
                (
                    f"ts_ms {row['ts_ms']} is more than max_time_jump_ms {self.rules.max_jump_ms} "
                    f"ahead of the partition's event time {now}; {why}"
                ),
            )
            for row in cluster.frame().iter_rows(named=True)
        ]


# --------------------------------------------------------------------------- duplicates


_KEY = ["venue", "symbol", "id"]


class SeenTrades:
    """(venue, symbol, id) of the trades counted in open 1m windows.

    A trade already counted is dropped, however its copy arrived (a producer retried, a
    connector republished, a topic was replayed into itself). A copy carries its trade's
    ``ts_ms``, so it falls in the same window: keys are kept per 1m window, exactly, as
    columns, and released with the window — about 100 bytes per trade of the open windows. Per
    window, a set of the keys' 64-bit hashes answers "seen?" in one pass; only where a hash
    repeats do the exact keys decide, so a hash collision can never drop a real trade. The hash
    sets are not part of the state a snapshot keeps: they are rebuilt from the exact keys on
    restore, so they never depend on the process (or the Polars version) that computed them.
    """

    def __init__(self) -> None:
        self.windows: dict[int, list[pl.DataFrame]] = {}
        self._hashes: dict[int, set[int]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"windows": self.windows}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.windows = state["windows"]
        self._hashes = {
            start: {h for frame in frames for h in frame.select(_KEY).hash_rows().to_list()}
            for start, frames in self.windows.items()
        }

    def __len__(self) -> int:
        return sum(f.height for fs in self.windows.values() for f in fs)

    def drop_counted(self, trades: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """``trades`` (on time, log order) → (first copies, duplicates)."""
        if not trades.height:
            return trades, trades
        starts = trades["ts_ms"] - trades["ts_ms"] % _MINUTE
        first, last = int(starts.min()), int(starts.max())  # type: ignore[arg-type]
        keys = trades.select(_KEY)
        hashes = keys.hash_rows()
        if first == last:
            parts = [(first, keys, hashes.to_list())]
        else:
            framed = keys.with_columns(h=hashes, s=starts)
            parts = [
                (int(start), part.select(_KEY), part["h"].to_list())
                for (start,), part in framed.group_by("s", maintain_order=True)
            ]
        repeated = False
        for start, _, listed in parts:
            known = self._hashes.setdefault(start, set())
            if not repeated and not known.isdisjoint(listed):
                repeated = True
            size = len(known)
            known.update(listed)
            # Fewer new hashes than rows, all new to the window: a hash repeats in the batch.
            repeated = repeated or len(known) - size != len(listed)
        if not repeated:
            for start, part_keys, _ in parts:
                self.windows.setdefault(start, []).append(part_keys)
            return trades, trades.clear()
        fresh = self._exact(keys, starts)  # a hash repeats: the exact keys decide
        for start, part_keys, _ in parts:  # store the first copies only
            keep = fresh.filter(starts == start) if len(parts) > 1 else fresh
            self.windows.setdefault(start, []).append(part_keys.filter(keep))
        return trades.filter(fresh), trades.filter(~fresh)

    def _exact(self, keys: pl.DataFrame, starts: pl.Series) -> pl.Series:
        """First copies by exact key: first in the batch and not among the counted keys (the
        keys stored so far, which this batch's are not yet among)."""
        fresh = keys.select(pl.struct(_KEY).is_first_distinct()).to_series()
        known = [f for s in starts.unique().to_list() for f in self.windows.get(s, [])]
        if known:
            counted = keys.with_row_index("i").join(pl.concat(known), on=_KEY, how="semi")["i"]
            fresh = fresh.scatter(counted, False)
        return fresh

    def release(self, below_ms: int | None) -> None:
        """Forget the windows that start before ``below_ms`` (all of them for None)."""
        for start in [s for s in self.windows if below_ms is None or s < below_ms]:
            del self.windows[start]
            del self._hashes[start]


_EMPTY: frozenset[int] = frozenset()


# --------------------------------------------------------------------------- aggregation


def trades_as_bars(rows: pl.DataFrame, interval_ms: int) -> pl.DataFrame:
    """Each trade row as a bar of one trade (heartbeat rows must be filtered out before)."""
    quote = pl.col("p") * pl.col("q")
    zero = pl.lit(0, dtype=pl.Int128)
    return rows.select(
        "venue",
        "symbol",
        start_ms=pl.col("ts_ms") - pl.col("ts_ms") % interval_ms,
        open_ts="ts_ms",
        open="p",
        open_id="id",
        close_ts="ts_ms",
        close="p",
        close_id="id",
        high="p",
        low="p",
        volume="q",
        quote=quote,
        trades=pl.lit(1, dtype=pl.Int64),
        buy_volume=pl.when("buy").then("q").otherwise(zero),
        buy_quote=pl.when("buy").then(quote).otherwise(zero),
    )


def merge(bars: pl.DataFrame, interval_ms: int | None = None) -> pl.DataFrame:
    """Merge bars that fall in the same (venue, symbol, window). Rows must be in log order, and
    the rows of one key must not overlap in time (single trades, or bars of distinct windows).

    With ``interval_ms``, ``start_ms`` is first floored to that interval (rollups).
    """
    if interval_ms is not None:
        bars = bars.with_columns(start_ms=pl.col("start_ms") - pl.col("start_ms") % interval_ms)
    # A stable sort on time keeps log order among equal times, so within each group the first
    # row opens (smallest time, earliest in log) and the last row closes (largest, latest).
    ordered = bars.sort("open_ts", maintain_order=True)
    return ordered.group_by(KEYS, maintain_order=True).agg(
        open_ts=pl.col("open_ts").first(),
        open=pl.col("open").first(),
        open_id=pl.col("open_id").first(),
        close_ts=pl.col("close_ts").last(),
        close=pl.col("close").last(),
        close_id=pl.col("close_id").last(),
        high=pl.col("high").max(),
        low=pl.col("low").min(),
        volume=pl.col("volume").sum(),
        quote=pl.col("quote").sum(),
        trades=pl.col("trades").sum(),
        buy_volume=pl.col("buy_volume").sum(),
        buy_quote=pl.col("buy_quote").sum(),
    )


_SUMS = ("volume", "quote", "trades", "buy_volume", "buy_quote")


def combine(state: pl.DataFrame, fresh: pl.DataFrame) -> pl.DataFrame:
    """Fold ``fresh`` partial bars (later in the log) into ``state``; one row per key in each.

    Open: the earlier open time wins, the state's on a tie (it came first in the log). Close: the
    later close time wins, the fresh one on a tie (it came last).
    """
    if not state.height:
        return fresh
    if not fresh.height:
        return state
    j = state.join(fresh, on=KEYS, how="full", coalesce=True, suffix="_n")
    old_open = pl.col("open_ts")
    new_open = pl.col("open_ts_n")
    use_new_open = old_open.is_null() | (new_open.is_not_null() & (new_open < old_open))
    use_new_close = pl.col("close_ts").is_null() | (
        pl.col("close_ts_n").is_not_null() & (pl.col("close_ts_n") >= pl.col("close_ts"))
    )

    def pick(name: str, use_new: pl.Expr) -> pl.Expr:
        return pl.when(use_new).then(pl.col(f"{name}_n")).otherwise(pl.col(name)).alias(name)

    return j.select(
        *KEYS,
        pick("open_ts", use_new_open),
        pick("open", use_new_open),
        pick("open_id", use_new_open),
        pick("close_ts", use_new_close),
        pick("close", use_new_close),
        pick("close_id", use_new_close),
        pl.max_horizontal("high", "high_n").alias("high"),
        pl.min_horizontal("low", "low_n").alias("low"),
        *[(pl.col(n).fill_null(0) + pl.col(f"{n}_n").fill_null(0)).alias(n) for n in _SUMS],
    )


@dataclass
class StepResult:
    """What one batch produced: closed bars per interval, and what was not counted."""

    closed: dict[str, pl.DataFrame]
    late: pl.DataFrame
    trades: int
    #: The trade rows that counted (on time, first copies), in log order: what the detectors see.
    on_time: pl.DataFrame = field(default_factory=lambda: empty_rows())
    #: Rows (trades or heartbeats) that may not move event time (dead letters).
    implausible: list[Implausible] = field(default_factory=list)
    #: Trades already counted (dropped; only counted in metrics).
    duplicates: pl.DataFrame = field(default_factory=lambda: empty_rows())
    #: Trades beyond MAX_MINUTE_TRADES in their symbol's minute (dead letters).
    too_many: pl.DataFrame = field(default_factory=lambda: empty_rows())
    #: Late trades a restarted connector re-published (after its Since marker, within the
    #: event time seen before it): counted, not dead-lettered.
    refilled: pl.DataFrame = field(default_factory=lambda: empty_rows())
    #: Trades outside their symbol's trading session (no bar; archived; counted).
    out_of_session: pl.DataFrame = field(default_factory=lambda: empty_rows())


@dataclass
class BarState:
    """Open windows of one ``trades`` partition, per interval, its event clock and the trades
    counted in its open 1m windows.

    Memory is bounded by symbols × open windows (and the ids of the open 1m windows' trades):
    trades are folded into partial bars as they come, never kept.
    """

    intervals: tuple[str, ...] = tuple(INTERVALS)
    lateness_ms: int = 2_000
    time_rules: TimeRules = field(default_factory=TimeRules)
    empty: EmptyIntervals = field(default_factory=EmptyIntervals)
    #: Day windows (``1d``) and trading sessions (flows/calendar.py).
    calendar: Calendar = field(default_factory=Calendar)
    open: dict[str, pl.DataFrame] = field(default_factory=dict)
    #: Per interval, the symbols that get flat bars: next window start and its price.
    last: dict[str, pl.DataFrame] = field(default_factory=dict)
    #: Earliest end of any open window: nothing can close before the watermark reaches it.
    next_due_ms: int | None = None
    clock: EventClock = field(init=False)
    seen: SeenTrades = field(default_factory=SeenTrades)
    #: Newest event time the windows have seen (trades and heartbeats, in log order).
    max_ts_ms: int | None = None
    #: The input holds every trade from this time on (a backtest over a topic that starts
    #: before its range): no symbol's coverage starts later than this.
    covered_from_ms: int | None = None
    #: Coverage start per symbol, and the gap markers still in reach of an open window.
    cover: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_COVER_SCHEMA))
    gaps: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_GAP_SCHEMA))
    #: Per symbol, the latest Since marker that came after its coverage began (a connector
    #: restarted and re-published its window): the late trades it covers are refills.
    refill: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_REFILL_SCHEMA))

    def __post_init__(self) -> None:
        # 1m first: rollups are fed by the 1m bars that close in the same step.
        self.intervals = tuple(sorted(self.intervals, key=INTERVALS.__getitem__))
        for name in self.intervals:
            self.open.setdefault(name, empty_bars())
            self.last.setdefault(name, pl.DataFrame(schema=_LAST_SCHEMA))
        self.clock = EventClock(self.time_rules)
        self._flat_cache: dict[tuple[str, str], bool] = {}
        #: (venue, symbol) → since_ms: ``cover`` as a dict, for the per-batch checks.
        self._covered: dict[tuple[str, str], int] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_flat_cache", None)
        state.pop("_covered", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("last", {})
        self.__dict__.setdefault("empty", EmptyIntervals())
        self.__dict__.setdefault("cover", pl.DataFrame(schema=_COVER_SCHEMA))
        self.__dict__.setdefault("covered_from_ms", None)
        self.__dict__.setdefault("refill", pl.DataFrame(schema=_REFILL_SCHEMA))
        self.__dict__.setdefault("calendar", Calendar())
        self.__dict__.setdefault("gaps", pl.DataFrame(schema=_GAP_SCHEMA))
        for name in self.intervals:
            self.last.setdefault(name, pl.DataFrame(schema=_LAST_SCHEMA))
        self._flat_cache = {}
        self._covered = {(v, sym): t for v, sym, t in self.cover.select(*_COVER_SCHEMA).iter_rows()}

    @property
    def watermark_ms(self) -> int | None:
        return None if self.max_ts_ms is None else self.max_ts_ms - self.lateness_ms

    def step(self, rows: pl.DataFrame, markers: Sequence[tuple[int, Marker]] = ()) -> StepResult:
        """Fold one decoded batch (log order) in, with its markers (Kafka offset, marker);
        close what the watermark has passed."""
        admitted, implausible = self.clock.admit(rows)
        result = self._fold(admitted, markers)
        result.implausible = implausible
        return result

    def flush(self) -> StepResult:
        """End of input: use or reject what the clock still holds, then close every window."""
        admitted, implausible = self.clock.flush()
        result = self._fold(admitted)
        closed = self._close(None)
        result.closed = {
            k: pl.concat([result.closed[k], v]) if k in result.closed else v
            for k, v in closed.items()
        }
        result.implausible = implausible
        return result

    def _fold(self, rows: pl.DataFrame, markers: Sequence[tuple[int, Marker]] = ()) -> StepResult:
        prev = self.max_ts_ms if self.max_ts_ms is not None else -(2**62)
        if markers:
            self._note_gaps(rows, markers, prev)
        duplicates = too_many = outside = refilled = empty_rows()
        if rows.height:
            # Newest event time seen *before* each row, in log order (trades and heartbeats).
            seen_before = rows["ts_ms"].cum_max().shift(1, fill_value=prev).clip(lower_bound=prev)
            hb = rows["hb"]
            trades = rows.filter(~hb) if hb.any() else rows
            ts = trades["ts_ms"]
            if hb.any():
                seen_before = seen_before.filter(~hb)
            is_late = ts - ts % _MINUTE + _MINUTE + self.lateness_ms <= seen_before
            if is_late.any():  # the common batch has none: no filter
                late = trades.filter(is_late)
                trades = trades.filter(~is_late)
            else:
                late = trades.clear()
            if late.height and self.refill.height:
                late, refilled = self._refills(late)
            on_time, duplicates = self.seen.drop_counted(trades)
            on_time, too_many = self._within_cap(on_time)
            if self.calendar.has_sessions and on_time.height:
                keep = self.calendar.in_session(on_time)
                if not keep.all():
                    outside, on_time = on_time.filter(~keep), on_time.filter(keep)
            self._note_cover(on_time, markers)
            batch_max = int(rows["ts_ms"].max())  # type: ignore[arg-type]
            self.max_ts_ms = max(prev, batch_max) if self.max_ts_ms is not None else batch_max
            if on_time.height:
                fresh = merge(trades_as_bars(on_time, _MINUTE))
                self.open["1m"] = combine(self.open["1m"], fresh)
                first_end = int(fresh["start_ms"].min()) + _MINUTE  # type: ignore[arg-type]
                if self.next_due_ms is None or first_end < self.next_due_ms:
                    self.next_due_ms = first_end
        else:
            late, on_time = empty_rows(), empty_rows()
            self._note_cover(on_time, markers)
        watermark = self.watermark_ms
        closed: dict[str, pl.DataFrame] = {}
        if self.next_due_ms is not None and watermark is not None and watermark >= self.next_due_ms:
            closed = self._close(watermark)
        return StepResult(
            closed, late, on_time.height, on_time, duplicates=duplicates, too_many=too_many,
            out_of_session=outside, refilled=refilled,
        )  # fmt: skip

    def _within_cap(self, trades: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Split off the trades beyond MAX_MINUTE_TRADES in their (venue, symbol) minute: what
        keeps every sum inside Int128 and the Parquet decimals (see codec.rules). Costs one
        comparison unless a bar comes near the cap."""
        open_1m = self.open["1m"]
        most = int(open_1m["trades"].max() or 0) if open_1m.height else 0  # type: ignore[arg-type]
        if most + trades.height <= MAX_MINUTE_TRADES:
            return trades, trades.clear()
        counted = (
            trades.with_columns(start_ms=pl.col("ts_ms") - pl.col("ts_ms") % _MINUTE)
            .join(open_1m.select(*KEYS, "trades"), on=KEYS, how="left", maintain_order="left")
            .with_columns(
                n=pl.col("trades").fill_null(0) + pl.int_range(1, pl.len() + 1).over(KEYS)
            )
        )
        keep = counted["n"] <= MAX_MINUTE_TRADES
        return trades.filter(keep), trades.filter(~keep)

    def _close(self, watermark_ms: int | None) -> dict[str, pl.DataFrame]:
        closed: dict[str, pl.DataFrame] = {}
        traded_1m = empty_bars()  # rollups merge the trades' 1m bars, never flat ones
        for name in self.intervals:
            length = INTERVALS[name]
            frame = self.open[name]
            if name != "1m" and traded_1m.height:
                frame = combine(frame, merge(self._rolled(name, traded_1m)))
            if watermark_ms is None:
                done, frame = frame, empty_bars()
                # End of input closes the window of the newest event time: so far, flat too.
                horizon = None
                if self.max_ts_ms is not None:
                    horizon = self.max_ts_ms - self.max_ts_ms % length + length
                    if name in CALENDAR_INTERVALS:
                        day = self.calendar.day_of("", self.max_ts_ms)
                        horizon = day[1] if day else horizon  # (always a day without a key)
            else:
                due = self._ends(name, frame) <= watermark_ms
                done, frame = frame.filter(due), frame.filter(~due)
                horizon = watermark_ms
            self.open[name] = frame
            if name == "1m":
                traded_1m = done
            closed[name] = self._flag(name, self._with_flat(name, done, horizon)).sort(KEYS)
        # A 1m window that closed can take no more trades: its ids are not needed any longer.
        self.seen.release(None if watermark_ms is None else watermark_ms - _MINUTE + 1)
        if self.gaps.height and watermark_ms is not None:  # no open window reaches back to it
            longest = max(self._longest(name) for name in self.intervals)
            self.gaps = self.gaps.filter(pl.col("to_ms") > watermark_ms - longest)
        ends = [
            int(self._ends(name, frame).min())  # type: ignore[arg-type]
            for name, frame in self.open.items()
            if frame.height
        ] + [  # the next window of a symbol that gets flat bars is due as well (no sooner)
            int(frame["next_ms"].min()) + self._shortest(name)  # type: ignore[arg-type]
            for name, frame in self.last.items()
            if frame.height
        ]
        self.next_due_ms = min(ends) if ends else None
        return closed

    # ------------------------------------------------------------------ windows

    def _calendar_window(self, name: str) -> bool:
        """Does ``name`` need the calendar (a day, or any session symbol's windows)?"""
        return name in CALENDAR_INTERVALS or self.calendar.has_sessions

    @staticmethod
    def _longest(name: str) -> int:
        return MAX_WINDOW_MS if name in CALENDAR_INTERVALS else INTERVALS[name]

    def _shortest(self, name: str) -> int:
        """A lower bound of the windows' length (a session's day may last minutes)."""
        if name in CALENDAR_INTERVALS and self.calendar.day_offset_ms is None:
            return _MINUTE
        return INTERVALS[name]

    def _day_windows(self, frame: pl.DataFrame, column: str) -> pl.DataFrame:
        """Per row, the ``1d`` window ``(day_start, day_end)`` holding ``column`` (a time),
        null outside every session part; one calendar call per distinct (key, minute)."""
        keyed = frame.select("venue", "symbol", column).with_columns(
            cal=self.calendar.keys(frame), t=pl.col(column) - pl.col(column) % _MINUTE
        )
        pairs = keyed.select("cal", "t").unique()
        spans = [self.calendar.day_of(c, t) for c, t in pairs.iter_rows()]
        mapping = pairs.with_columns(
            day_start=pl.Series([w and w[0] for w in spans], dtype=pl.Int64),
            day_end=pl.Series([w and w[1] for w in spans], dtype=pl.Int64),
        )
        return keyed.join(mapping, on=["cal", "t"], how="left", maintain_order="left")

    def _rolled(self, name: str, bars: pl.DataFrame) -> pl.DataFrame:
        """Closed 1m bars with ``start_ms`` moved to their window of ``name`` (for a rollup)."""
        length = INTERVALS[name]
        offset = self.calendar.day_offset_ms if name in CALENDAR_INTERVALS else 0
        if offset is not None:  # fixed windows (a day of a fixed offset: shifted by it)
            start = pl.col("start_ms")
            return bars.with_columns(start_ms=start - (start + offset) % length)
        days = self._day_windows(bars, "start_ms")["day_start"]
        return bars.with_columns(start_ms=days).filter(pl.col("start_ms").is_not_null())

    def _ends(self, name: str, frame: pl.DataFrame) -> pl.Series:
        """The (exclusive) end of each row's window of ``name``."""
        if name not in CALENDAR_INTERVALS or self.calendar.day_offset_ms is not None:
            return (frame["start_ms"] + INTERVALS[name]).alias("end_ms")
        if not frame.height:
            return pl.Series("end_ms", [], dtype=pl.Int64)
        return self._day_windows(frame, "start_ms")["day_end"].alias("end_ms")

    # ------------------------------------------------------------------ flags

    def _note_cover(self, on_time: pl.DataFrame, markers: Sequence[tuple[int, Marker]]) -> None:
        """Symbols seen for the first time: their coverage starts at their first record in the
        log, a Since marker (its time) or a counted trade (its event time)."""
        since = [(off, m) for off, m in markers if isinstance(m, Since)]
        if not on_time.height and not since:
            return
        if not since:  # the common batch: only symbols already covered (one unique, no join)
            pairs = on_time.select("venue", "symbol").unique()
            if pairs.height <= self.cover.height and all(
                pair in self._covered for pair in pairs.iter_rows()
            ):
                return
        firsts = [
            on_time.select("venue", "symbol", since_ms="ts_ms", off="off", rank=pl.lit(1)),
            pl.DataFrame(
                [(m.venue, m.symbol, m.ts_ms, off, 0) for off, m in since],
                schema={**_COVER_SCHEMA, "off": pl.Int64(), "rank": pl.Int32()},
                orient="row",
            ),
        ]
        first = (
            pl.concat(firsts, how="vertical_relaxed")
            .sort("off", "rank", maintain_order=True)  # a marker before a trade of its message
            .unique(["venue", "symbol"], keep="first", maintain_order=True)
            .select(list(_COVER_SCHEMA))
        )
        new = first.join(self.cover, on=["venue", "symbol"], how="anti")
        if new.height and self.covered_from_ms is not None:
            new = new.with_columns(since_ms=pl.min_horizontal("since_ms", self.covered_from_ms))
        if new.height:
            self.cover = pl.concat([self.cover, new])
            self._covered.update(
                ((v, sym), t) for v, sym, t in new.select(*_COVER_SCHEMA).iter_rows()
            )

    def _refills(self, late: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Split late trades into (late, refilled): a refill is a late trade of a symbol that
        comes after a Since marker of a later connector run, at or after the marker's time and
        before the event time seen when the marker came (its windows were already closed)."""
        marked = late.with_row_index("_row").join(
            self.refill, on=["venue", "symbol"], how="left", maintain_order="left"
        )
        hit = (
            (pl.col("off") > pl.col("after_off"))
            & (pl.col("ts_ms") >= pl.col("from_ms"))
            & (pl.col("ts_ms") < pl.col("to_ms"))
        ).fill_null(False)
        rows = marked.filter(hit)["_row"]
        refilled = late.with_row_index("_row").filter(pl.col("_row").is_in(rows.implode()))
        kept = late.with_row_index("_row").filter(~pl.col("_row").is_in(rows.implode()))
        return kept.drop("_row"), refilled.drop("_row")

    def _note_gaps(
        self, rows: pl.DataFrame, markers: Sequence[tuple[int, Marker]], prev: int
    ) -> None:
        """Keep the batch's gap markers, each with the newest event time seen before it, and
        note the Since markers of symbols already covered (a restarted connector's refill)."""
        ts, offs = rows["ts_ms"].to_list(), rows["off"].to_list()

        def seen_before(off: int) -> int:
            return max([prev, *(t for t, o in zip(ts, offs, strict=True) if o < off)])

        since = [(off, m) for off, m in markers if isinstance(m, Since)]
        if since:  # a symbol counted before the marker (earlier, or earlier in this batch)
            covered = set(self.cover.select("venue", "symbol").iter_rows())
            trades = rows.filter(~pl.col("hb")).select("venue", "symbol", "off")
            again = [
                (m.venue, m.symbol, m.ts_ms, seen_before(off), off)
                for off, m in since
                if (m.venue, m.symbol) in covered
                or trades.filter(
                    (pl.col("off") < off)
                    & (pl.col("venue") == m.venue)
                    & (pl.col("symbol") == m.symbol)
                ).height
            ]
            fresh = pl.DataFrame(again, schema=_REFILL_SCHEMA, orient="row")
            if fresh.height:
                self.refill = pl.concat(
                    [self.refill.join(fresh, on=["venue", "symbol"], how="anti"),
                     fresh.unique(["venue", "symbol"], keep="last", maintain_order=True)]
                )  # fmt: skip
        gaps = [(off, m) for off, m in markers if isinstance(m, Gap)]
        if not gaps:
            return
        noted = []
        for off, gap in gaps:
            noted.append((gap.venue, gap.symbol, gap.from_ms, gap.to_ms, seen_before(off)))
        self.gaps = pl.concat([self.gaps, pl.DataFrame(noted, schema=_GAP_SCHEMA, orient="row")])

    def _flag(self, name: str, bars: pl.DataFrame) -> pl.DataFrame:
        """``bars`` (closed, of ``name``) with ``complete`` and ``gaps``."""
        if not bars.height:
            return bars.with_columns(
                end_ms=pl.lit(0, pl.Int64), complete=pl.lit(True), gaps=pl.lit(0, pl.Int64)
            )
        if "end_ms" not in bars.columns:  # bars by activity bring their own
            bars = bars.with_columns(self._ends(name, bars))
        flagged = bars.join(self.cover, on=["venue", "symbol"], how="left", maintain_order="left")
        if self.gaps.height:
            end = pl.col("end_ms")
            hits = (
                bars.select("venue", "symbol", "start_ms", "end_ms")
                .with_row_index("_row")
                .join(self.gaps, on=["venue", "symbol"])
                .filter(
                    (pl.col("from_ms") < end)
                    & (pl.col("to_ms") > pl.col("start_ms"))
                    & (end + self.lateness_ms > pl.col("seen_ms"))  # still open at the marker
                )
                .group_by("_row")
                .agg(gaps=pl.len().cast(pl.Int64))
            )
            flagged = (
                flagged.with_row_index("_row")
                .join(hits, on="_row", how="left", maintain_order="left")
                .drop("_row")
            )
        else:
            flagged = flagged.with_columns(gaps=pl.lit(None, pl.Int64))
        return flagged.with_columns(gaps=pl.col("gaps").fill_null(0)).select(
            *bars.columns,
            complete=(pl.col("start_ms") >= pl.col("since_ms")).fill_null(False)
            & (pl.col("gaps") == 0),
            gaps="gaps",
        )

    def flag_spans(self, bars: pl.DataFrame) -> pl.DataFrame:
        """Bars with their own ``end_ms`` (by activity) flagged like time bars: complete when
        their trades' span starts at or after the coverage and no gap marker overlaps it."""
        return self._flag("", bars)

    def all_complete(self, rows: pl.DataFrame, length: int) -> bool:
        """Are the windows of every row, of ``length`` or shorter, known complete — no gap marker
        held, every symbol covered from before the batch's first window start? The common
        batch's answer, without the joins of :meth:`incomplete_windows`."""
        if not rows.height:
            return True
        if self.gaps.height:
            return False
        first = int(rows["ts_ms"].min())  # type: ignore[arg-type]
        start = first - first % length
        covered = self._covered
        for pair in rows.select("venue", "symbol").unique().iter_rows():
            since = covered.get(pair)
            if since is None or since > start:
                return False
        return True

    def incomplete_windows(self, rows: pl.DataFrame, length: int) -> pl.Series:
        """Per trade row: is its window of ``length`` (starting at ``ts - ts % length``) known to
        be incomplete — before its symbol's coverage, or over a gap marker? (The range detector
        skips those: flows/volatility.py.)"""
        start = pl.col("ts_ms") - pl.col("ts_ms") % length
        marked = rows.select("venue", "symbol", "ts_ms").join(
            self.cover, on=["venue", "symbol"], how="left", maintain_order="left"
        )
        before = (start < pl.col("since_ms")).fill_null(True)
        if not self.gaps.height:
            return marked.select(before).to_series()
        over = (
            marked.with_row_index("i")
            .join(self.gaps, on=["venue", "symbol"], how="left", maintain_order="left")
            .group_by("i", maintain_order=True)
            .agg(
                gap=((pl.col("from_ms") < start + length) & (pl.col("to_ms") > start))
                .fill_null(False)
                .any()
            )
        )["gap"]
        return marked.select(before).to_series() | over

    def _is_flat(self, venue: str, symbol: str) -> bool:
        key = (venue, symbol)
        if key not in self._flat_cache:
            self._flat_cache[key] = self.empty.flat(venue, symbol)
        return self._flat_cache[key]

    def _with_flat(self, name: str, done: pl.DataFrame, horizon: int | None) -> pl.DataFrame:
        """``done`` (the traded bars of ``name`` that close now) and the flat bars of every
        tracked symbol's windows without trades that end at or before ``horizon``; remembers,
        per symbol, where its next window starts and the close it carries."""
        length = INTERVALS[name]
        last = self.last[name]
        if done.height:  # symbols with their first bars join the tracked ones
            pairs = done.select("venue", "symbol").unique(maintain_order=True)
            keep = [self._is_flat(v, s) for v, s in pairs.iter_rows()]
            new = pairs.filter(pl.Series(keep, dtype=pl.Boolean)).join(
                last.select("venue", "symbol"), on=["venue", "symbol"], how="anti"
            )
            if new.height:
                first = done.join(new, on=["venue", "symbol"]).group_by(["venue", "symbol"])
                starts = first.agg(next_ms=pl.col("start_ms").min(), price=pl.lit(None, pl.Int128))
                last = pl.concat([last, starts.select(list(_LAST_SCHEMA))])
        if not last.height or horizon is None:
            return done
        due = last.filter(pl.col("next_ms") + self._shortest(name) <= horizon)
        flat = empty_bars()
        # By the calendar (a day, a session symbol), else every window of a fixed length.
        by_calendar = None
        if name in CALENDAR_INTERVALS and self.calendar.day_offset_ms is None:
            by_calendar = pl.Series([True] * due.height, dtype=pl.Boolean)
        elif self.calendar.has_sessions:
            by_calendar = self.calendar.keys(due) != ""
        if due.height:
            plain = due if by_calendar is None else due.filter(~by_calendar)
            stop = pl.min_horizontal(pl.lit(horizon), pl.col("next_ms") + FLAT_MAX_GAP_MS)
            windows = (
                plain.select(
                    "venue",
                    "symbol",
                    start_ms=pl.int_ranges("next_ms", stop - length + 1, length, dtype=pl.Int64),
                )
                .explode("start_ms")
                .drop_nulls("start_ms")
                .with_columns(end_ms=pl.col("start_ms") + length)
            )
            dormant = pl.DataFrame(schema={"venue": pl.String(), "symbol": pl.String()})
            if by_calendar is not None and by_calendar.any():
                more, dormant = self._calendar_flats(name, due.filter(by_calendar), horizon)
                windows = pl.concat([windows, more])
            windows = windows.join(done.select(KEYS), on=KEYS, how="anti")
            # The price of a flat window: the close of the symbol's latest bar before it.
            before = pl.concat(
                [
                    due.select(
                        "venue", "symbol", start_ms=pl.col("next_ms") - length, close="price"
                    ),
                    done.select("venue", "symbol", "start_ms", "close"),
                ]
            ).filter(pl.col("close").is_not_null())
            priced = (
                windows.sort("start_ms")
                .join_asof(
                    before.sort("start_ms"),
                    on="start_ms",
                    by=["venue", "symbol"],
                    strategy="backward",
                    allow_exact_matches=False,
                    check_sortedness=False,  # sorted by start_ms, so within each symbol too
                )
                .filter(pl.col("close").is_not_null())
            )
            none = pl.lit(None, dtype=pl.String)
            zero = pl.lit(0, dtype=pl.Int128)
            flat = priced.select(
                "venue",
                "symbol",
                "start_ms",
                open_ts="start_ms",
                open="close",
                open_id=none,
                close_ts=pl.col("end_ms") - 1,
                close="close",
                close_id=none,
                high="close",
                low="close",
                volume=zero,
                quote=zero,
                trades=pl.lit(0, dtype=pl.Int64),
                buy_volume=zero,
                buy_quote=zero,
            )
        out = pl.concat([done, flat]) if flat.height else done
        if out.height:  # the newest bar of each symbol sets its next start and price
            newest = (
                out.with_columns(self._ends(name, out))
                .sort("start_ms")
                .group_by(["venue", "symbol"])
                .agg(next_ms=pl.col("end_ms").last(), price=pl.col("close").last())
            )
            last = pl.concat(
                [
                    last.join(newest, on=["venue", "symbol"], how="anti"),
                    newest.join(last.select("venue", "symbol"), on=["venue", "symbol"]).select(
                        list(_LAST_SCHEMA)
                    ),
                ]
            )
        if due.height:  # windows still missing up to the horizon: dormant, until its next trade
            if by_calendar is not None:  # windows by the calendar: it said which are dormant
                plain_due = due.filter(~by_calendar).select("venue", "symbol")
                cut = plain_due.join(
                    last.filter(pl.col("next_ms") + length <= horizon), on=["venue", "symbol"]
                )
                last = last.join(pl.concat([cut.select("venue", "symbol"), dormant]),
                                 on=["venue", "symbol"], how="anti")  # fmt: skip
            else:
                last = last.filter(pl.col("next_ms") + length > horizon)
        self.last[name] = last
        return out

    def _calendar_flats(
        self, name: str, due: pl.DataFrame, horizon: int
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The windows without trades of ``due`` symbols by the calendar (days, session hours)
        from each one's next start to ``horizon`` — at most a day of open windows at once (closed
        hours, weekends and holidays do not count) — and the symbols that went past that day
        (dormant until their next trade)."""
        rows: list[tuple[str, str, int, int]] = []
        dormant: list[tuple[str, str]] = []
        for venue, symbol, next_ms in due.select("venue", "symbol", "next_ms").iter_rows():
            key = self.calendar.key(venue, symbol)
            t, opened = next_ms, 0
            while (window := self.calendar.next_window(key, name, t)) is not None:
                start, end = window
                if opened >= FLAT_MAX_GAP_MS:  # a day of open windows at once: dormant
                    dormant.append((venue, symbol))
                    break
                opened += end - start
                if end > horizon:
                    break
                rows.append((venue, symbol, start, end))
                t = end
        schema = {"venue": pl.String(), "symbol": pl.String(), "start_ms": pl.Int64(),
                  "end_ms": pl.Int64()}  # fmt: skip
        pairs = {"venue": pl.String(), "symbol": pl.String()}
        return (
            pl.DataFrame(rows, schema=schema, orient="row"),
            pl.DataFrame(dormant, schema=pairs, orient="row"),
        )

    def open_windows(self) -> dict[str, int]:
        return {name: frame.height for name, frame in self.open.items()}
