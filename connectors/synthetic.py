"""A deterministic synthetic market: the default source of ``candlewax demo`` and the load
generator of the benchmarks.

The model
---------
* **Instruments.** ``symbols=N`` gives the first N of a fixed list of real USDT pairs (BTCUSDT,
  ETHUSDT, SOLUSDT, ... with early-2024 prices, tick and lot sizes), then generated ones named
  ``SYM0042USDT`` (the number is the symbol's index). Explicit names are accepted too; unknown
  names get generated parameters. Every instrument has a tick size and a lot size that are powers
  of ten between 10**-8 and 1, so prices and quantities are exact decimal strings with at most
  8 decimals (``"42000.01"``, ``"0.00125"``, ``"37"``).
* **Arrivals.** Trades arrive as a Poisson process of aggregate rate ``trades_per_second``
  (long-run average). Each arrival belongs to symbol *k* (0-based, in the given order) with a
  Zipf probability ∝ 1/(k+1)**1.1, so a few symbols dominate, as on real venues. Splitting a
  Poisson process this way makes every symbol its own Poisson process.
* **Volatility bursts.** Market-wide regimes: calm gaps ~ Exponential, bursts of
  ``min(60 s, burst_every_s / 4)`` × Uniform(0.5, 1.5); one burst starts every
  ``burst_every_s`` on average. During a burst the volatility of every symbol is multiplied by
  ``burst_multiplier`` and trades arrive ``sqrt(burst_multiplier)`` times faster (the calm rate is
  lowered so that the long-run average stays ``trades_per_second``). :meth:`SyntheticMarket.bursts`
  lists the burst periods, so tests and demos can check what the detectors should see.
* **Prices.** The log mid-price of each symbol is a Brownian motion in continuous time, sampled at
  its trades: a market factor (weight 0.7: symbols move together, as crypto does) plus an
  idiosyncratic part, per-symbol annual volatility (50 % for BTC, up to ~150 % for small caps),
  scaled by the burst multiplier while a burst lasts. With the defaults a 1-5 minute range of a
  few tenths of a percent happens now and then in calm markets and often during bursts.
  Trades print on a one-tick book around the mid: buys at the ask, sells at the bid, rounded to
  the tick and never below one tick.
* **Aggressor side.** ``buy`` when the mid's move since the symbol's previous trade plus an equal
  amount of noise is positive: up-ticks are mostly buys, down-ticks mostly sells, half of all
  trades are buys.
* **Quantities.** Log-normal around a per-symbol median notional (~100 USDT, heavy right tail),
  rounded to the lot size, at least one lot.
* **Ids and time.** Trade ids are consecutive integers per symbol (from a random base). ``ts_ms``
  is the floor of the continuous arrival time, non-decreasing over the whole stream; several
  trades may share a millisecond. ``recv_ms`` is None: nothing was received.

Determinism
-----------
Everything comes from ``numpy.random.Generator(PCG64)`` streams spawned from ``seed`` (one for the
instruments, one for the burst schedule, one for the trades); there is no global random state and
no wall clock. The trade stream is generated internally in fixed steps of 65,536 arrivals whatever
the caller asks for, so the same arguments give byte-identical trades for any sequence of chunk
sizes, ``until_ms`` cuts, or mix of :meth:`~SyntheticMarket.batches` and
:meth:`~SyntheticMarket.encoded` calls (on the same numpy version and platform).

The object is a *stream*: each call continues where the previous one stopped.

Speed
-----
Generation is vectorized with numpy; JSON values are assembled column-wise with polars
(``pl.format``, fraction digits from a lookup table), so :meth:`~SyntheticMarket.encoded` makes
1.3-1.6 million Kafka-ready ``(key, value, timestamp)`` tuples per second on one core (10 to
10,000 symbols). :meth:`~SyntheticMarket.batches` builds
:class:`~candlewax.codec.Trade` objects and is slower (one Python object per trade).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from candlewax.codec import (
    DECIMALS,
    MAX_TS_MS,
    MIN_TS_MS,
    Heartbeat,
    Trade,
    format_scaled,
    message_key,
    normalize_symbol,
)
from candlewax.codec.columns import trade_values
from candlewax.codec.rules import is_venue
from candlewax.errors import ConfigError

__all__ = ["DEFAULT_START_MS", "Instrument", "SyntheticMarket"]

#: 2024-01-01T00:00:00Z.
DEFAULT_START_MS = 1_704_067_200_000

#: Arrivals generated per internal step (fixed: chunking must not change the stream).
_STEP = 1 << 16
_MS_PER_YEAR = 365.0 * 86_400_000.0
_ZIPF_EXPONENT = 1.1
#: Weight of the market factor in every symbol's moves (pairwise return correlation beta**2).
_BETA = 0.7
#: Standard deviation of the side noise, relative to the size of the price move.
_SIDE_NOISE = 1.0
_QTY_SIGMA = 1.3
_QTY_CLIP = 5.0
_MAX_BURST_MS = 60_000.0
#: Prices are kept below this many ticks so that float64 holds them exactly.
_MAX_TICKS = 2.0**52

_SYMBOL_RE = re.compile(r"[A-Z0-9]{1,64}")

# name: (start price, price decimals (tick = 10**-d), lot decimals, annual volatility)
_KNOWN: dict[str, tuple[float, int, int, float]] = {
    "BTCUSDT": (42_000.0, 2, 5, 0.50),
    "ETHUSDT": (2_300.0, 2, 4, 0.60),
    "SOLUSDT": (100.0, 2, 3, 0.90),
    "BNBUSDT": (310.0, 1, 3, 0.55),
    "XRPUSDT": (0.62, 4, 0, 0.70),
    "DOGEUSDT": (0.09, 5, 0, 0.85),
    "ADAUSDT": (0.60, 4, 1, 0.80),
    "AVAXUSDT": (38.0, 2, 2, 1.00),
    "LINKUSDT": (15.0, 3, 2, 0.90),
    "DOTUSDT": (8.0, 3, 2, 0.85),
    "MATICUSDT": (0.98, 4, 1, 0.90),
    "LTCUSDT": (72.0, 2, 3, 0.70),
    "TRXUSDT": (0.108, 5, 1, 0.50),
    "BCHUSDT": (250.0, 1, 3, 0.80),
    "ATOMUSDT": (10.0, 3, 2, 0.85),
    "NEARUSDT": (3.5, 3, 1, 1.00),
    "UNIUSDT": (6.5, 3, 2, 0.95),
    "APTUSDT": (9.0, 3, 2, 1.10),
    "ARBUSDT": (1.9, 4, 1, 1.10),
    "OPUSDT": (3.6, 3, 2, 1.10),
    "FILUSDT": (5.7, 3, 2, 0.95),
    "INJUSDT": (37.0, 2, 2, 1.20),
    "ETCUSDT": (27.0, 2, 2, 0.80),
    "XLMUSDT": (0.13, 4, 0, 0.70),
    "SUIUSDT": (0.80, 4, 1, 1.20),
}
_KNOWN_ORDER = tuple(_KNOWN)

_POW10 = 10 ** np.arange(DECIMALS + 1, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Instrument:
    """Static parameters of one simulated symbol (decimal fields are exact decimal strings)."""

    symbol: str
    start_price: str
    tick_size: str
    lot_size: str
    annual_volatility: float
    #: Long-run share of all trades.
    weight: float


@dataclass(slots=True)
class _Block:
    """Trades in event-time order, column-wise (integer units of tick and lot sizes)."""

    sym: np.ndarray  # int64 symbol index
    ts: np.ndarray  # int64 epoch ms
    tid: np.ndarray  # int64 trade id
    price: np.ndarray  # int64 price in ticks
    lots: np.ndarray  # int64 quantity in lots
    buy: np.ndarray  # bool aggressor side

    def __len__(self) -> int:
        return len(self.ts)

    def slice(self, start: int, stop: int) -> _Block:
        return _Block(*(column[start:stop] for column in self._columns()))

    def _columns(self) -> tuple[np.ndarray, ...]:
        return (self.sym, self.ts, self.tid, self.price, self.lots, self.buy)

    @staticmethod
    def concat(parts: list[_Block]) -> _Block:
        if len(parts) == 1:
            return parts[0]
        columns = zip(*(part._columns() for part in parts), strict=True)
        return _Block(*(np.concatenate(column) for column in columns))


class SyntheticMarket:
    """A seeded, event-time-ordered stream of realistic trades (see the module docstring).

    >>> market = SyntheticMarket(3, seed=1)
    >>> market.symbols
    ('BTCUSDT', 'ETHUSDT', 'SOLUSDT')
    >>> trades = [t for chunk in market.batches(until_ms=market.start_ms + 60_000) for t in chunk]
    >>> market.clock_ms - market.start_ms, trades[-1].ts_ms < market.clock_ms
    (60000, True)
    """

    def __init__(
        self,
        symbols: int | Sequence[str] = 10,
        *,
        seed: int = 7,
        start_ms: int = DEFAULT_START_MS,
        venue: str = "synthetic",
        trades_per_second: float = 200.0,
        burst_every_s: float = 120.0,
        burst_multiplier: float = 8.0,
    ) -> None:
        names = _symbol_names(symbols)
        venue = venue.strip().lower() if isinstance(venue, str) else venue
        if not is_venue(venue):
            raise ConfigError(
                f"synthetic venue {venue!r}: 1-32 lower-case letters, digits, '.', '_', '-'"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"synthetic seed must be a non-negative integer, got {seed!r}")
        if isinstance(start_ms, bool) or not isinstance(start_ms, int):
            raise ConfigError(f"synthetic start_ms must be integer epoch ms, got {start_ms!r}")
        if not MIN_TS_MS <= start_ms < MAX_TS_MS:
            raise ConfigError(f"synthetic start_ms={start_ms} is outside 2000..2100 (ms?)")
        if not (math.isfinite(trades_per_second) and trades_per_second > 0):
            raise ConfigError(f"trades_per_second must be > 0, got {trades_per_second!r}")
        if not burst_every_s >= 1.0:  # math.inf disables bursts
            raise ConfigError(f"burst_every_s must be >= 1 (inf: no bursts), got {burst_every_s!r}")
        if not (math.isfinite(burst_multiplier) and burst_multiplier > 0):
            raise ConfigError(f"burst_multiplier must be > 0, got {burst_multiplier!r}")

        self._venue = venue
        self._names = names
        self._start_ms = start_ms
        setup_seq, burst_seq, trade_seq = np.random.SeedSequence(seed).spawn(3)
        self._init_instruments(np.random.Generator(np.random.PCG64(setup_seq)))
        self._rng = np.random.Generator(np.random.PCG64(trade_seq))

        # Burst schedule, as breakpoints of two piecewise-linear functions of the elapsed time
        # t (ms since start_ms): operational time O (arrivals are a unit-rate Poisson process in
        # O, so its slope is the activity multiplier) and effective time E (its slope is the
        # variance multiplier burst_multiplier**2).
        self._bursts_on = math.isfinite(burst_every_s) and burst_multiplier != 1.0
        every_ms = burst_every_s * 1000.0
        self._burst_dur_ms = min(_MAX_BURST_MS, every_ms / 4.0) if self._bursts_on else 0.0
        self._burst_gap_ms = every_ms - self._burst_dur_ms
        self._activity = math.sqrt(burst_multiplier)
        self._variance_mult = burst_multiplier**2
        self._burst_rng = np.random.Generator(np.random.PCG64(burst_seq))
        self._bursts: list[tuple[float, float]] = []
        self._breaks_t = [0.0]
        self._breaks_o = [0.0]
        self._breaks_e = [0.0]
        self._break_arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        burst_share = self._burst_dur_ms / every_ms if self._bursts_on else 0.0
        calm_rate_per_ms = trades_per_second / 1000.0 / (1.0 + (self._activity - 1) * burst_share)
        self._o_per_arrival = 1.0 / calm_rate_per_ms

        # Stream state.
        n = len(names)
        self._o_last = 0.0
        self._e_last = 0.0
        self._w_last = 0.0
        self._sym_e = np.zeros(n)
        self._sym_w = np.zeros(n)
        self._sym_logmid = np.log(self._start_price)
        self._pending: list[_Block] = []
        self._pos = 0
        self._clock_ms = start_ms
        self._emitted = 0

        # Encoding tables.
        self._keys = [message_key(venue, name).encode() for name in names]
        self._key_array = np.empty(n, dtype=object)
        self._key_array[:] = self._keys
        self._symbol_names = pl.Series("symbol", names, dtype=pl.String)

    # ------------------------------------------------------------------ public API

    @property
    def venue(self) -> str:
        return self._venue

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._names

    @property
    def start_ms(self) -> int:
        return self._start_ms

    @functools.cached_property
    def instruments(self) -> tuple[Instrument, ...]:
        """Per-symbol parameters, in symbol order (most active first)."""
        return tuple(
            Instrument(
                symbol=name,
                start_price=format_scaled(
                    int(self._start_ticks[i]), int(self._pdec[i]), int(self._pdec[i])
                ),
                tick_size=format_scaled(1, int(self._pdec[i]), 0),
                lot_size=format_scaled(1, int(self._qdec[i]), 0),
                annual_volatility=float(self._annual_vol[i]),
                weight=float(self._weights[i]),
            )
            for i, name in enumerate(self._names)
        )

    @property
    def clock_ms(self) -> int:
        """Event time reached so far: every trade with ``ts_ms < clock_ms`` has been emitted.

        Starts at ``start_ms``; after a chunk it is the newest emitted ``ts_ms`` (more trades of
        that millisecond may follow), after :meth:`batches` with ``until_ms`` it is ``until_ms``.
        Suitable for heartbeats.
        """
        return self._clock_ms

    @property
    def trades_emitted(self) -> int:
        return self._emitted

    def heartbeat(self) -> Heartbeat:
        """A heartbeat carrying :attr:`clock_ms` (exchange time, never wall-clock time)."""
        return Heartbeat(venue=self._venue, ts_ms=self._clock_ms)

    def bursts(self, until_ms: int) -> list[tuple[int, int]]:
        """Volatility bursts ``(start_ms, end_ms)`` that start before ``until_ms``.

        Bounds are rounded outwards to whole milliseconds. The schedule does not depend on how
        many trades have been generated.
        """
        if not self._bursts_on:
            return []
        horizon = float(until_ms - self._start_ms)
        while self._breaks_t[-1] < horizon:
            self._add_burst()
        return [
            (self._start_ms + math.floor(start), self._start_ms + math.ceil(end))
            for start, end in self._bursts
            if start < horizon
        ]

    def batches(
        self,
        n_trades: int | None = None,
        *,
        until_ms: int | None = None,
        batch_size: int = 10_000,
    ) -> Iterator[list[Trade]]:
        """Next trades as successive event-time-ordered lists of at most ``batch_size``.

        Stops after ``n_trades`` trades, or before the first trade with ``ts_ms >= until_ms``,
        whichever comes first; with neither, never stops. The stream advances as the iterator
        is consumed.
        """
        _check_count("n_trades", n_trades, allow_none=True)
        _check_count("until_ms", until_ms, allow_none=True)
        _check_count("batch_size", batch_size, minimum=1)
        return (self._trades(block) for block in self._blocks(n_trades, until_ms, batch_size))

    def encoded(
        self,
        n_trades: int,
        *,
        batch_size: int = 10_000,
        per_message: int = 1,
    ) -> Iterator[list[tuple[bytes, bytes, int]]]:
        """Next ``n_trades`` trades as Kafka messages ``(key, value, timestamp_ms)``.

        Chunks hold ``batch_size`` trades. With ``per_message=1`` each value is exactly
        ``Trade.encode()`` and the timestamp its ``ts_ms``, in event-time order. With
        ``per_message > 1`` each value is a JSON array (as :func:`~candlewax.codec.encode_trades`)
        of up to ``per_message`` consecutive trades of one symbol from the chunk, stamped with its
        last trade's ``ts_ms``, and messages are ordered by that last trade (as a producer that
        batches per symbol would send them). The trades are the ones :meth:`batches` would give.
        """
        _check_count("n_trades", n_trades)
        _check_count("batch_size", batch_size, minimum=1)
        _check_count("per_message", per_message, minimum=1)
        return (
            self._messages(block, per_message) for block in self._blocks(n_trades, None, batch_size)
        )

    # ------------------------------------------------------------------ instruments

    def _init_instruments(self, rng: np.random.Generator) -> None:
        n = len(self._names)
        # Drawn for every symbol, used only for unknown names: parameters of a symbol depend on
        # its index and the seed, not on which other names are known.
        gen_price = np.exp(rng.uniform(math.log(0.01), math.log(500.0), n))
        gen_vol = np.exp(rng.uniform(math.log(0.6), math.log(1.5), n))
        notional = 100.0 * np.exp(rng.normal(0.0, 0.5, n))
        self._next_id = rng.integers(10**8, 4 * 10**9, n, dtype=np.int64)

        pdec = np.empty(n, dtype=np.int64)
        qdec = np.empty(n, dtype=np.int64)
        price = np.empty(n)
        vol = np.empty(n)
        for i, name in enumerate(self._names):
            known = _KNOWN.get(name)
            if known is not None:
                price[i], pdec[i], qdec[i], vol[i] = known
            else:
                magnitude = math.floor(math.log10(gen_price[i]))
                price[i] = gen_price[i]
                pdec[i] = min(DECIMALS, max(1, 5 - magnitude))
                qdec[i] = min(DECIMALS, max(0, magnitude + 1))
                vol[i] = gen_vol[i]
        self._pdec = pdec
        self._qdec = qdec
        self._price_format = _DecimalFormat.for_decimals(pdec)
        self._qty_format = _DecimalFormat.for_decimals(qdec)
        self._ptick_scale = (10.0**pdec).astype(np.float64)
        self._start_ticks = np.maximum(1, np.rint(price * self._ptick_scale)).astype(np.int64)
        self._start_price = self._start_ticks / self._ptick_scale
        self._annual_vol = vol
        self._sigma_ms = vol / math.sqrt(_MS_PER_YEAR)
        # Median quantity in lots (before rounding), from a median notional in quote currency.
        lot = 10.0 ** (-qdec.astype(np.float64))
        self._qty_mu = np.log(notional / self._start_price / lot)

        weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** _ZIPF_EXPONENT
        self._weights = weights / weights.sum()
        cumulative = np.cumsum(self._weights)
        cumulative[-1] = 1.0
        self._cumulative = cumulative
        self._sort_dtype = np.uint16 if n <= 1 << 16 else np.int64

    # ------------------------------------------------------------------ bursts

    def _add_burst(self) -> None:
        gap = float(self._burst_rng.exponential(self._burst_gap_ms))
        duration = self._burst_dur_ms * float(self._burst_rng.uniform(0.5, 1.5))
        start = self._breaks_t[-1] + gap
        self._bursts.append((start, start + duration))
        self._breaks_t += [start, start + duration]
        o_start = self._breaks_o[-1] + gap
        self._breaks_o += [o_start, o_start + self._activity * duration]
        e_start = self._breaks_e[-1] + gap
        self._breaks_e += [e_start, e_start + self._variance_mult * duration]
        self._break_arrays = None

    def _clocks(self, o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Elapsed time t and effective time E of operational times ``o`` (sorted)."""
        if not self._bursts_on:
            return o, o
        while self._breaks_o[-1] < o[-1]:
            self._add_burst()
        if self._break_arrays is None:
            self._break_arrays = (
                np.array(self._breaks_o),
                np.array(self._breaks_t),
                np.array(self._breaks_e),
            )
        breaks_o, breaks_t, breaks_e = self._break_arrays
        return np.interp(o, breaks_o, breaks_t), np.interp(o, breaks_o, breaks_e)

    # ------------------------------------------------------------------ generation

    def _step(self) -> _Block:
        """Simulate the next ``_STEP`` arrivals (the only place randomness is drawn)."""
        rng = self._rng
        k = _STEP
        o = self._o_last + np.cumsum(rng.standard_exponential(k)) * self._o_per_arrival
        sym = np.searchsorted(self._cumulative, rng.random(k), side="right")
        z_market = rng.standard_normal(k)
        z_own = rng.standard_normal(k)
        z_side = rng.standard_normal(k)
        z_qty = rng.standard_normal(k)
        self._o_last = float(o[-1])

        t, e = self._clocks(o)
        ts = self._start_ms + np.floor(t).astype(np.int64)
        # Market factor: a Brownian motion in effective time, sampled at every arrival.
        de = np.diff(e, prepend=self._e_last)
        w = self._w_last + np.cumsum(np.sqrt(de) * z_market)
        self._e_last = float(e[-1])
        self._w_last = float(w[-1])

        # Per symbol, in event order: a stable sort keeps each symbol's arrivals in time order.
        order = np.argsort(sym.astype(self._sort_dtype), kind="stable")
        ss = sym[order]
        es = e[order]
        ws = w[order]
        first = np.empty(k, dtype=bool)
        first[0] = True
        np.not_equal(ss[1:], ss[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        ends = np.append(starts[1:], k) - 1
        group = np.cumsum(first) - 1
        gsym = ss[starts]
        prev_e = np.empty(k)
        prev_e[1:] = es[:-1]
        prev_e[starts] = self._sym_e[gsym]
        prev_w = np.empty(k)
        prev_w[1:] = ws[:-1]
        prev_w[starts] = self._sym_w[gsym]

        dt_eff = es - prev_e
        sigma = self._sigma_ms[ss]
        shock = sigma * (
            _BETA * (ws - prev_w) + math.sqrt(1.0 - _BETA**2) * np.sqrt(dt_eff) * z_own[order]
        )
        variance = sigma * sigma * dt_eff
        returns = shock - 0.5 * variance
        cumulative = np.cumsum(returns)
        base = self._sym_logmid[gsym] - (cumulative[starts] - returns[starts])
        logmid = base[group] + cumulative
        buy_sorted = shock + _SIDE_NOISE * np.sqrt(variance) * z_side[order] > 0

        bid = np.floor(np.exp(logmid) * self._ptick_scale[ss])
        np.clip(bid, 1.0, _MAX_TICKS, out=bid)
        price_sorted = bid.astype(np.int64) + buy_sorted
        tid_sorted = self._next_id[ss] + (np.arange(k) - starts[group])

        self._sym_e[gsym] = es[ends]
        self._sym_w[gsym] = ws[ends]
        self._sym_logmid[gsym] = logmid[ends]
        self._next_id[gsym] += ends - starts + 1

        lots = np.rint(
            np.exp(self._qty_mu[sym] + _QTY_SIGMA * np.clip(z_qty, -_QTY_CLIP, _QTY_CLIP))
        )
        np.maximum(lots, 1.0, out=lots)

        tid = np.empty(k, dtype=np.int64)
        tid[order] = tid_sorted
        price = np.empty(k, dtype=np.int64)
        price[order] = price_sorted
        buy = np.empty(k, dtype=bool)
        buy[order] = buy_sorted
        return _Block(sym, ts, tid, price, lots.astype(np.int64), buy)

    def _blocks(
        self, n_trades: int | None, until_ms: int | None, batch_size: int
    ) -> Iterator[_Block]:
        """Consume the stream in chunks; the clock advances before each chunk is handed out."""
        remaining = n_trades
        while remaining is None or remaining > 0:
            want = batch_size if remaining is None else min(batch_size, remaining)
            block, reached_until = self._take(want, until_ms)
            if len(block):
                self._emitted += len(block)
                self._clock_ms = max(self._clock_ms, int(block.ts[-1]))
                if remaining is not None:
                    remaining -= len(block)
            if reached_until and until_ms is not None:
                self._clock_ms = max(self._clock_ms, until_ms)
            if len(block):
                yield block
            if reached_until:
                return

    def _take(self, limit: int, until_ms: int | None) -> tuple[_Block, bool]:
        """Up to ``limit`` next trades with ``ts_ms < until_ms``; and whether until_ms was hit."""
        parts: list[_Block] = []
        need = limit
        reached_until = False
        while need > 0:
            if not self._pending:
                self._pending.append(self._step())
            block = self._pending[0]
            stop = len(block)
            if until_ms is not None:
                stop = int(np.searchsorted(block.ts, until_ms, side="left"))
            stop = min(stop, self._pos + need)
            if stop > self._pos:
                parts.append(block.slice(self._pos, stop))
                need -= stop - self._pos
                self._pos = stop
            if self._pos == len(block):
                self._pending.pop(0)
                self._pos = 0
            elif need > 0:
                reached_until = True
                break
        if not parts:
            empty = np.empty(0, dtype=np.int64)
            return _Block(empty, empty, empty, empty, empty, np.empty(0, dtype=bool)), reached_until
        return _Block.concat(parts), reached_until

    # ------------------------------------------------------------------ encoding

    def _frame(self, block: _Block) -> pl.DataFrame:
        """The block's columns, with prices and quantities split into string-ready parts."""
        frame = pl.DataFrame({"id": block.tid, "buy": block.buy, "ts": block.ts})
        for name, units, decimal_format in (
            ("p", block.price, self._price_format),
            ("q", block.lots, self._qty_format),
        ):
            whole, point_digits, low_digits = decimal_format.parts(units, block.sym)
            frame = frame.with_columns(
                pl.Series(f"{name}w", whole),
                point_digits.alias(f"{name}f"),
                low_digits.alias(f"{name}l"),
            )
        return frame

    def _values(self, block: _Block) -> list[bytes]:
        """``Trade.encode()`` of every trade of the block, column-wise, by the codec's encoder."""
        value = trade_values(
            venue=pl.lit(self._venue),
            symbol=pl.lit(self._symbol_names.gather(block.sym)),
            id=pl.col("id").cast(pl.String),
            price=_format(*_DECIMAL_COLUMNS["p"]),
            qty=_format(*_DECIMAL_COLUMNS["q"]),
            side=pl.when(pl.col("buy")).then(pl.lit("buy")).otherwise(pl.lit("sell")),
            ts_ms=pl.col("ts"),
            recv_ms=pl.lit(None, dtype=pl.Int64),
        )
        frame = self._frame(block)
        return frame.select(value.cast(pl.Binary)).to_series().to_list()

    def _trades(self, block: _Block) -> list[Trade]:
        strings = self._frame(block).select(
            pl.col("id").cast(pl.String),
            _format(*_DECIMAL_COLUMNS["p"]).alias("price"),
            _format(*_DECIMAL_COLUMNS["q"]).alias("qty"),
        )
        venue = self._venue
        names = self._names
        sides = ("sell", "buy")
        return [
            Trade(venue, names[s], i, p, q, sides[b], t)
            for s, i, p, q, b, t in zip(
                block.sym.tolist(),
                strings["id"].to_list(),
                strings["price"].to_list(),
                strings["qty"].to_list(),
                block.buy.tolist(),
                block.ts.tolist(),
                strict=True,
            )
        ]

    def _messages(self, block: _Block, per_message: int) -> list[tuple[bytes, bytes, int]]:
        values = self._values(block)
        if per_message == 1:
            keys = self._key_array[block.sym].tolist()
            return list(zip(keys, values, block.ts.tolist(), strict=True))
        n = len(block)
        order = np.argsort(block.sym.astype(self._sort_dtype), kind="stable")
        ss = block.sym[order]
        first = np.empty(n, dtype=bool)
        first[0] = True
        np.not_equal(ss[1:], ss[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        rank = np.arange(n) - starts[np.cumsum(first) - 1]
        message_starts = np.flatnonzero(first | (rank % per_message == 0))
        message_stops = np.append(message_starts[1:], n)
        last = order[message_stops - 1]  # a message's newest trade (stable sort: the largest)
        by_time = np.argsort(last)
        ordered = [values[i] for i in order.tolist()]
        keys = self._keys
        sym = ss[message_starts].tolist()
        lo = message_starts.tolist()
        hi = message_stops.tolist()
        ts = block.ts[last].tolist()
        return [
            (keys[sym[m]], b"[" + b",".join(ordered[lo[m] : hi[m]]) + b"]", ts[m])
            for m in by_time.tolist()
        ]


def _format(*pieces: str | pl.Expr) -> pl.Expr:
    """Concatenate literal text and columns row by row (one pass, like ``pl.concat_str``)."""
    template = "".join(
        piece.replace("{", "{{").replace("}", "}}") if isinstance(piece, str) else "{}"
        for piece in pieces
    )
    return pl.format(template, *(piece for piece in pieces if not isinstance(piece, str)))


#: Columns of a decimal named "p" or "q" in :meth:`SyntheticMarket._frame`.
_DECIMAL_COLUMNS = {
    name: (pl.col(f"{name}w"), pl.col(f"{name}f"), pl.col(f"{name}l")) for name in "pq"
}
#: Start of the zero-padded d-digit fractions in :func:`_digit_table`, for d = 0..4; then the
#: 4-digit groups without a point.
_TABLE_OFFSETS = np.array([0, 1, 11, 111, 1111], dtype=np.int64)
_TABLE_LOW = 11111


@functools.cache
def _digit_table() -> pl.Series:
    """``""``, ``".0"``..``".9"``, ``".00"``..``".99"``, ..., ``".9999"``, then ``"0000"``..``"9999"``."""
    table = [""]
    for d in range(1, 5):
        table += [f".{i:0{d}d}" for i in range(10**d)]
    table += [f"{i:04d}" for i in range(10_000)]
    return pl.Series("digits", table, dtype=pl.String)


@dataclass(frozen=True, slots=True)
class _DecimalFormat:
    """Per-symbol constants that turn integer units into decimal strings (see :meth:`parts`).

    A value ``units * 10**-d`` is written as ``whole`` + ``"." and the first fraction digits``
    + ``the last 4 fraction digits`` (when d > 4), the digit strings coming from
    :func:`_digit_table` instead of being formatted row by row.
    """

    scale: np.ndarray  # 10**d
    split: np.ndarray  # 10**4 when d > 4, else 1
    high_offset: np.ndarray  # where the fractions of (d or d - 4) digits start in the table
    low_offset: np.ndarray  # where the 4-digit groups start (d > 4), else 0 (the empty string)

    @classmethod
    def for_decimals(cls, decimals: np.ndarray) -> _DecimalFormat:
        long = decimals > 4
        return cls(
            scale=_POW10[decimals],
            split=np.where(long, 10_000, 1),
            high_offset=_TABLE_OFFSETS[np.where(long, decimals - 4, decimals)],
            low_offset=np.where(long, _TABLE_LOW, 0),
        )

    def parts(self, units: np.ndarray, sym: np.ndarray) -> tuple[np.ndarray, pl.Series, pl.Series]:
        scale = self.scale[sym]
        split = self.split[sym]
        whole = units // scale
        frac = units - whole * scale
        high = frac // split
        low = frac - high * split
        table = _digit_table()
        return (
            whole,
            table.gather(self.high_offset[sym] + high),
            table.gather(self.low_offset[sym] + low),
        )


def _symbol_names(symbols: int | Sequence[str]) -> tuple[str, ...]:
    if isinstance(symbols, bool):
        raise ConfigError("symbols must be a count or a list of names, got a boolean")
    if isinstance(symbols, int):
        if symbols < 1:
            raise ConfigError(f"symbols must be >= 1, got {symbols}")
        known = _KNOWN_ORDER[:symbols]
        return known + tuple(f"SYM{i:04d}USDT" for i in range(len(known), symbols))
    if isinstance(symbols, str):
        raise ConfigError("symbols must be a list of names, not one string")
    names = tuple(normalize_symbol(str(name)) for name in symbols)
    if not names:
        raise ConfigError("symbols is empty: give a count or at least one name")
    for name in names:
        if not _SYMBOL_RE.fullmatch(name):
            raise ConfigError(
                f"symbol {name!r}: 1-64 upper-case letters and digits only, like BTCUSDT"
            )
    if len(set(names)) != len(names):
        raise ConfigError("symbols contains duplicates (after normalization)")
    return names


def _check_count(
    name: str, value: int | None, *, minimum: int = 0, allow_none: bool = False
) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
