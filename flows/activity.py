"""Bars by activity: ``tick:<N>``, ``volume:<V>`` and ``value:<Q>`` bars, configured per symbol.
Pure Polars, no Bytewax, no Kafka, like :mod:`flows.barmath`, and exact the same way: prices
and quantities are scaled integers (1e-8) in Int128 columns, quote amounts Σ price·qty at
1e-16; no float touches an amount. A closed bar has the time bars' fields
(:data:`flows.barmath.BAR_SCHEMA`) plus ``end_ms`` and ``seq`` (:data:`ACTIVITY_BAR_SCHEMA`).

**Input.** :meth:`ActivityBars.step` takes the trades that count for the time bars —
:attr:`flows.barmath.StepResult.on_time`: on time, first copies, in the order the kernel used
them (log order) — so activity bars and time bars are made of the same trades.

**The amount.** A ``tick:N`` bar counts trades (1 each), a ``volume:V`` bar base quantity
(Σ q, V at 1e-8), a ``value:Q`` bar quote amount (Σ p·q, Q in quote units, compared at 1e-16).

**The boundary rule: a fixed grid.** Per (venue, symbol, kind) let ``C`` be the amount of the
trades counted since the symbol's first trade this state saw, in log order. A trade whose
amount before it is ``C_before`` belongs to bar ``k = floor(C_before / size)``; bar ``k``
closes with the trade that brings ``C`` to ``(k + 1) · size`` or beyond. A trade is never split:
one that crosses several grid lines closes its bar, and the grid indices it jumps over make no
bar (``seq`` numbers the bars that exist, without holes). Consequences, all deliberate:

- the boundaries never drift: the n-th line is crossed by the trade that brings ``C`` to
  ``n · size``, whatever the sizes of the trades before it — an overshoot is not carried into
  the later bars' boundaries — so on average a bar holds ``size``;
- a bar holds at least one trade and less than ``size`` + one trade; the bar after a trade
  that overshot its line starts mid-cell, so it can hold *less* than ``size`` (a 10-lot bar
  after a 15-lot trade closes at 20: 5 lots);
- tick bars hold exactly N trades (a trade counts 1, nothing overshoots);
- it vectorizes: a cumulative sum per (venue, symbol, kind) and one integer division give
  every trade its bar, so the cost is a few Polars passes per batch, never a Python call per
  trade. (The usual alternative, each bar restarting from 0 after its closing trade, makes
  every boundary depend on the previous one: a sequential scan.)

The state carries, per (venue, symbol, kind), ``C`` modulo ``size`` (so it never grows), the
number of bars closed so far and the forming bar, so cutting the same trades into other
batches gives the same bars, and a snapshot taken between batches resumes exactly. The grid
starts at the first trade the state sees: a replay that starts elsewhere in the log makes
other bars (activity bars are defined by the sequence, so they depend on where it starts).

**Order inside a bar is log order**, not event time: a bar *is* a stretch of the sequence, and
its closing trade is by definition the one that crossed the line. ``open``/``open_id``/
``open_ts`` are those of its first trade in the log, ``close``/``close_id``/``close_ts`` those
of its last (the closing trade). ``start_ms`` is the smallest event time of its trades and
``end_ms`` the largest + 1, so that, as for every bar, its trades have
``start_ms <= ts_ms < end_ms`` (on a feed in trade-id order — most venues — ``start_ms`` is
the first trade's time and ``end_ms - 1`` the closing trade's). Bars of one symbol may overlap
in time (several tick bars in one millisecond): the key of a bar is (venue, symbol, kind,
``seq``), ``seq`` counting the bars of that (venue, symbol, kind) from 0.

**End of input**: a bar that has not reached its size is not a bar yet and is not emitted
(emitting it would make the bars depend on where the input stops); :meth:`ActivityBars.forming`
shows the forming bars.

**Range.** A kind's size is positive and below 1e14 (``volume``/``value``, like any amount of
a trade) or at most :data:`~candlewax.codec.MAX_MINUTE_TRADES` trades (``tick``). With the
codec's limits on a trade (price and quantity < 1e14, price·qty < 1e13) every sum of a tick or
value bar stays far inside Int128 and the Parquet decimals: a tick bar holds at most 1e7
trades (as a 1m bar), a value bar less than Q + 1e13 of quote and 1e22 of volume. A volume
bar's quote is below V × its highest price + 1e13: inside DECIMAL(38,16) whenever V × price
< 1e22 (BTC at 1e6 with V = 1e9 is 1e15): real markets are many orders of magnitude away.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import polars as pl

from candlewax.codec import MAX_MINUTE_TRADES, SCALE, format_scaled, to_scaled
from candlewax.codec.rules import SYMBOL_PATTERN, VENUE_PATTERN, decimal
from candlewax.errors import ParseError
from flows.barmath import BAR_SCHEMA

__all__ = [
    "ACTIVITY_BAR_SCHEMA",
    "MEASURES",
    "ActivityBars",
    "BarKind",
    "parse_kind",
]

#: What each kind counts: trades, base quantity (1e-8), quote amount (1e-16).
MEASURES: Final = ("tick", "volume", "value")
#: Most trades a tick bar takes: as many as a 1m bar, so its sums are bounded the same way.
MAX_TICKS: Final = MAX_MINUTE_TRADES
#: Digits before the point of a volume or value size: below 1e14, as any amount of a trade.
_WHOLE_DIGITS: Final = 14

#: A closed (or forming) activity bar: the time bars' columns, the exclusive end of its trades'
#: event times and its number among the bars of its (venue, symbol, kind).
ACTIVITY_BAR_SCHEMA: dict[str, pl.DataType] = {
    **BAR_SCHEMA,
    "end_ms": pl.Int64(),
    "seq": pl.Int64(),
}
_GROUP = ["venue", "symbol", "kind"]
#: The carry of :class:`ActivityBars`, one row per (venue, symbol, kind).
_CARRY_SCHEMA: dict[str, pl.DataType] = {
    "venue": pl.String(),
    "symbol": pl.String(),
    "kind": pl.String(),
    "measure": pl.UInt8(),
    "size": pl.Int128(),
    "r": pl.Int128(),
    **{k: v for k, v in ACTIVITY_BAR_SCHEMA.items() if k not in ("venue", "symbol")},
}
_CONFIG_SCHEMA: dict[str, pl.DataType] = {
    "venue": pl.String(),
    "symbol": pl.String(),
    "kind": pl.String(),
    "measure": pl.UInt8(),
    "size": pl.Int128(),
}
_DIGITS_RE = re.compile(r"[1-9][0-9]*")
_VENUE_RE = re.compile(VENUE_PATTERN)
_SYMBOL_RE = re.compile(SYMBOL_PATTERN)
_USAGE = "expected tick:<N>, volume:<V> or value:<Q> (e.g. tick:1000, volume:12.5, value:1000000)"


# --------------------------------------------------------------------------- kinds


@dataclass(frozen=True)
class BarKind:
    """One kind of activity bar. ``size`` is in the measure's exact units: trades (``tick``),
    1e-8 of the base asset (``volume``), 1e-16 of the quote asset (``value``, a multiple of 1e8:
    a size has at most 8 decimals)."""

    measure: str
    size: int

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise ValueError(f"bar kind measure {self.measure!r}: expected one of {MEASURES}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0:
            raise ValueError(f"bar kind {self.measure} size {self.size!r}: a positive integer")
        if self.measure == "tick" and self.size > MAX_TICKS:
            raise ValueError(f"tick:{self.size} is too large: at most {MAX_TICKS} trades a bar")
        unit = SCALE * SCALE if self.measure == "value" else SCALE
        if self.measure != "tick" and self.size >= 10**_WHOLE_DIGITS * unit:
            raise ValueError(f"{self.measure} bar size is too large: it must be below 1e14")
        if self.measure == "value" and self.size % SCALE:
            raise ValueError("value bar size has more than 8 decimals")

    @property
    def name(self) -> str:
        """The canonical spelling, the bar's ``interval``: the measure, ``:``, the size as the
        shortest exact decimal — no trailing zeros, no trailing point, no exponent
        (``volume:12.50`` is ``volume:12.5``, ``value:1000000.0`` is ``value:1000000``).
        :func:`parse_kind` reads it back to an equal kind."""
        if self.measure == "tick":
            return f"tick:{self.size}"
        scale = 16 if self.measure == "value" else 8
        return f"{self.measure}:{format_scaled(self.size, scale, min_decimals=0)}"

    def __str__(self) -> str:
        return self.name


def parse_kind(text: str) -> BarKind:
    """``"tick:1000"`` (a positive integer of trades), ``"volume:12.5"`` (base quantity) or
    ``"value:1000000"`` (quote amount): positive plain decimals with at most 8 decimals, below
    1e14. Anything else raises :class:`ValueError` saying what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"bar kind {text!r} is not text: {_USAGE}")
    measure, sep, amount = text.partition(":")
    if not sep or measure not in MEASURES:
        raise ValueError(f"bar kind {text[:40]!r}: {_USAGE}")
    shown = f"bar kind {text[:40]!r}"
    if measure == "tick":
        if amount.startswith("-") or (amount and amount.strip("0") == ""):
            raise ValueError(f"{shown}: N must be a positive number of trades")
        if not _DIGITS_RE.fullmatch(amount):
            raise ValueError(
                f"{shown}: N must be a whole number of trades in plain digits "
                "(no sign, point, exponent or leading zero)"
            )
        if len(amount) > len(str(MAX_TICKS)) or int(amount) > MAX_TICKS:
            raise ValueError(f"{shown} is too large: at most {MAX_TICKS} trades a bar")
        return BarKind("tick", int(amount))
    try:
        value = decimal(amount, measure, whole_digits=_WHOLE_DIGITS)
    except ParseError as exc:
        why = {
            "non_positive": "must be positive",
            "out_of_range": "is too large: it must be below 1e14",
            "precision": "has more than 8 decimals",
        }.get(exc.reason, "is not a plain decimal (digits and one '.'; no sign, exponent, spaces)")
        raise ValueError(f"{shown}: the size {why}") from None
    units = to_scaled(value)
    return BarKind(measure, units * SCALE if measure == "value" else units)


# --------------------------------------------------------------------------- the state


@dataclass
class ActivityBars:
    """The activity bars of one ``trades`` partition: which kinds each symbol gets, and the
    carry — one row per (venue, symbol, kind): the amount since its grid line, the number of
    its forming bar and the forming bar itself. That is all a snapshot holds.

    ``symbols`` maps ``"venue:SYMBOL"`` to its kinds; ``default`` are the kinds of every symbol
    not listed (a symbol listed with no kinds gets none). A symbol without kinds makes no bar
    and costs one hash join.
    """

    symbols: Mapping[str, Sequence[BarKind]] = field(default_factory=dict)
    default: Sequence[BarKind] = ()
    #: One row per configured (venue, symbol, kind), listed or (default kinds) seen:
    #: ``r`` = amount counted since the forming bar's grid line (C mod size), ``seq`` = the
    #: forming bar's number, then the forming bar (``trades`` 0, the rest null, while empty).
    carry: pl.DataFrame = field(init=False)

    def __post_init__(self) -> None:
        self.symbols = {key: _kinds(kinds, key) for key, kinds in self.symbols.items()}
        self.default = _kinds(self.default, "default")
        for key in self.symbols:
            venue, sep, symbol = key.partition(":")
            if not (sep and _VENUE_RE.fullmatch(venue) and _SYMBOL_RE.fullmatch(symbol)):
                raise ValueError(
                    f"activity bars: {key[:80]!r} is not venue:SYMBOL (e.g. binance:BTCUSDT)"
                )
        self._build()
        self.carry = _fresh(self._listed_kinds)

    def __getstate__(self) -> dict[str, Any]:
        return {"symbols": self.symbols, "default": self.default, "carry": self.carry}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._build()

    def _build(self) -> None:
        """The configuration as frames (derived, not snapshotted)."""
        pairs = {"venue": pl.String(), "symbol": pl.String()}
        self._listed = pl.DataFrame(
            [key.split(":", 1) for key in self.symbols], schema=pairs, orient="row"
        )
        self._listed_kinds = pl.DataFrame(
            [
                (*key.split(":", 1), kind.name, MEASURES.index(kind.measure), kind.size)
                for key, kinds in self.symbols.items()
                for kind in kinds
            ],
            schema=_CONFIG_SCHEMA,
            orient="row",
        )
        self._default = pl.DataFrame(
            [(k.name, MEASURES.index(k.measure), k.size) for k in self.default],
            schema={k: v for k, v in _CONFIG_SCHEMA.items() if k not in pairs},
            orient="row",
        )

    def reconfigured(
        self, symbols: Mapping[str, Sequence[BarKind]], default: Sequence[BarKind] = ()
    ) -> ActivityBars:
        """This state under another configuration (a restart with changed settings: a snapshot
        holds the configuration it was taken with). A (venue, symbol, kind) still configured
        keeps its grid, bar count and forming bar; a new one starts from nothing; one no
        longer configured is dropped, forming bar included."""
        new = ActivityBars(symbols, default)
        old = self.carry
        listed = old.join(new._listed_kinds, on=_GROUP, how="semi")
        by_default = old.join(new._listed, on=["venue", "symbol"], how="anti").filter(
            pl.col("kind").is_in(new._default["kind"].implode())
        )
        started = new.carry.join(listed, on=_GROUP, how="anti")
        new.carry = pl.concat([listed, started, by_default])
        return new

    @property
    def configured(self) -> bool:
        """Whether any symbol gets activity bars (if not, the flow need not call :meth:`step`)."""
        return bool(self.default) or bool(self._listed_kinds.height)

    def kinds(self, venue: str, symbol: str) -> tuple[BarKind, ...]:
        return tuple(self.symbols.get(f"{venue}:{symbol}", self.default))

    def step(self, trades: pl.DataFrame) -> dict[str, pl.DataFrame]:
        """Fold trades (rows of ``ROW_SCHEMA``, the kernel's ``on_time``, in log order; heartbeat
        rows are ignored) in; the bars that closed, per kind name, each frame in
        :data:`ACTIVITY_BAR_SCHEMA` sorted by (venue, symbol, seq). Kinds without a closed
        bar in this batch are absent."""
        if not trades.height or not self.configured:
            return {}
        if "hb" in trades.columns and trades["hb"].any():
            trades = trades.filter(~pl.col("hb"))
        if self._default.height:
            self._admit(trades)
        bars = self._fold(trades)
        if bars is None:
            return {}
        self._remember(bars)
        return _by_kind(bars.filter("closed"))

    def forming(self) -> dict[str, pl.DataFrame]:
        """The bars still forming (with at least one trade), per kind name, like :meth:`step`."""
        return _by_kind(self.carry.filter(pl.col("trades") > 0))

    def _admit(self, trades: pl.DataFrame) -> None:
        """Carry rows for the default kinds of the batch's unlisted symbols that have none yet
        (symbols seen for the first time, or default kinds added by :meth:`reconfigured`)."""
        pairs = ["venue", "symbol"]
        new = (
            trades.select(pairs)
            .unique(maintain_order=True)
            .join(self._listed, on=pairs, how="anti")
            .join(self._default, how="cross")
            .join(self.carry, on=_GROUP, how="anti")
        )
        if new.height:
            self.carry = pl.concat([self.carry, _fresh(new)])

    def _fold(self, trades: pl.DataFrame) -> pl.DataFrame | None:
        """Every bar the batch touches, one row per (venue, symbol, kind, seq) sorted by carry
        row ``g`` and ``seq``, merged with the forming bar it continues; ``closed`` tells which
        are done, ``r`` the carry after each."""
        c = pl.col
        keys = self.carry.with_row_index("g")
        rows = (
            trades.select("venue", "symbol", "p", "q", "buy", "ts_ms")
            .with_row_index("i")
            .join(
                keys.select("venue", "symbol", "g", "measure", "size", "r"),
                on=["venue", "symbol"],
                how="inner",
                maintain_order="left",
            )
        )
        if not rows.height:
            return None
        zero = pl.lit(0, pl.Int128)
        rows = (
            rows.select(
                "i",
                "g",
                "p",
                "q",
                "ts_ms",
                "size",
                "r",
                pq=c("p") * c("q"),
                bq=pl.when("buy").then("q").otherwise(zero),
                bpq=pl.when("buy").then(c("p") * c("q")).otherwise(zero),
                a=pl.when(c("measure") == 0)
                .then(pl.lit(1, pl.Int128))
                .when(c("measure") == 1)
                .then(c("q"))
                .otherwise(c("p") * c("q")),
            )
            # The rows of one (venue, symbol, kind) are in log order: the join keeps the
            # trades' order, and `over` evaluates in row order.
            .with_columns(after=c("r") + c("a").cum_sum().over("g"))
            .with_columns(cell=(c("after") - c("a")) // c("size"))
        )
        fresh = (
            rows.group_by("g", "cell")
            .agg(
                i0=c("i").min(),
                i1=c("i").max(),
                start_ms=c("ts_ms").min(),
                end_ms=c("ts_ms").max() + 1,
                high=c("p").max(),
                low=c("p").min(),
                volume=c("q").sum(),
                quote=c("pq").sum(),
                trades=pl.len().cast(pl.Int64),
                buy_volume=c("bq").sum(),
                buy_quote=c("bpq").sum(),
                after=c("after").max(),
            )
            .sort("g", "cell")
        )
        # Open and close: the bar's first and last trade. `_c`: its carry row (venue, symbol,
        # kind, seq, forming bar). The first bar of a carry row in the batch — cell 0, as the
        # carry holds less than a size — continues that row's forming bar.
        row = pl.int_range(pl.len(), dtype=pl.Int64)
        new_g = c("g") != c("g").shift(1, fill_value=-1)
        j = fresh.with_columns(
            open_ts=pl.lit(trades["ts_ms"]).gather("i0"),
            open=pl.lit(trades["p"]).gather("i0"),
            open_id=pl.lit(trades["id"]).gather("i0"),
            close_ts=pl.lit(trades["ts_ms"]).gather("i1"),
            close=pl.lit(trades["p"]).gather("i1"),
            close_id=pl.lit(trades["id"]).gather("i1"),
            nth=row - pl.when(new_g).then(row).forward_fill(),
            **{f"{n}_c": pl.lit(keys[n]).gather("g") for n in keys.columns if n != "g"},
        )
        had = (c("cell") == 0) & (c("trades_c") > 0)

        def first(name: str) -> pl.Expr:
            return pl.when(had).then(c(f"{name}_c")).otherwise(c(name)).alias(name)

        def total(name: str) -> pl.Expr:
            return (c(name) + pl.when(had).then(c(f"{name}_c")).otherwise(0)).alias(name)

        return j.select(
            "g",
            venue="venue_c",
            symbol="symbol_c",
            kind="kind_c",
            measure="measure_c",
            size="size_c",
            seq=c("seq_c") + c("nth"),
            start_ms=pl.when(had)
            .then(pl.min_horizontal("start_ms", "start_ms_c"))
            .otherwise(c("start_ms")),
            end_ms=pl.when(had)
            .then(pl.max_horizontal("end_ms", "end_ms_c"))
            .otherwise(c("end_ms")),
            open_ts=first("open_ts"),
            open=first("open"),
            open_id=first("open_id"),
            close_ts="close_ts",
            close="close",
            close_id="close_id",
            high=pl.when(had).then(pl.max_horizontal("high", "high_c")).otherwise(c("high")),
            low=pl.when(had).then(pl.min_horizontal("low", "low_c")).otherwise(c("low")),
            volume=total("volume"),
            quote=total("quote"),
            trades=total("trades"),
            buy_volume=total("buy_volume"),
            buy_quote=total("buy_quote"),
            closed=c("after") >= (c("cell") + 1) * c("size_c"),
            r=c("after") % c("size_c"),
        )

    def _remember(self, bars: pl.DataFrame) -> None:
        """The carry after the batch, from the last bar of each carry row the batch touched:
        that bar forms on, or (closed) the next one starts empty."""
        c = pl.col
        last = bars.filter(c("g") != c("g").shift(-1, fill_value=-1))
        done = c("closed")
        fresh = last.select(
            *_GROUP,
            "measure",
            "size",
            "r",
            seq=c("seq") + done.cast(pl.Int64),
            **{
                n: pl.when(done).then(pl.lit(None, ACTIVITY_BAR_SCHEMA[n])).otherwise(c(n))
                for n in _FORMING
            },
            trades=pl.when(done).then(pl.lit(0, pl.Int64)).otherwise(c("trades")),
        )
        kept = self.carry.with_row_index("g").filter(~c("g").is_in(last["g"].implode()))
        self.carry = pl.concat([kept.drop("g"), fresh.select(list(_CARRY_SCHEMA))])


#: The forming bar's columns in the carry, but ``trades`` (0 when empty, never null).
_FORMING = [n for n in ACTIVITY_BAR_SCHEMA if n not in ("venue", "symbol", "seq", "trades")]


def _fresh(kinds: pl.DataFrame) -> pl.DataFrame:
    """Carry rows for new (venue, symbol, kind) rows of ``_CONFIG_SCHEMA``: nothing counted."""
    return kinds.select(
        *_CONFIG_SCHEMA,
        r=pl.lit(0, pl.Int128),
        seq=pl.lit(0, pl.Int64),
        **{n: pl.lit(None, ACTIVITY_BAR_SCHEMA[n]) for n in _FORMING},
        trades=pl.lit(0, pl.Int64),
    ).select(list(_CARRY_SCHEMA))


def _by_kind(bars: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Bars with a ``kind`` column → per kind name (sorted), frames of ACTIVITY_BAR_SCHEMA
    sorted by (venue, symbol, seq)."""
    if not bars.height:
        return {}
    ordered = bars.sort("kind", "venue", "symbol", "seq")
    frame = ordered.select(*ACTIVITY_BAR_SCHEMA)
    out, start = {}, 0
    # Slices, not partition_by: no copy (and partition_by costs ~2 µs a row).
    for run in ordered["kind"].rle().to_list():
        out[run["value"]] = frame.slice(start, run["len"])
        start += run["len"]
    return out


def _kinds(kinds: Sequence[BarKind], where: str) -> tuple[BarKind, ...]:
    out = tuple(kinds)
    for kind in out:
        if not isinstance(kind, BarKind):
            raise ValueError(f"activity bars of {where}: {kind!r} is not a BarKind (parse_kind)")
    names = [k.name for k in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"activity bars of {where}: {', '.join(twice)} listed twice")
    return out
