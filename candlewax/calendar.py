"""Days and trading sessions: which window a trade's daily bar is, and which trades count.

Intraday bars (1m … 1h) are aligned to UTC, as Binance's. The ``1d`` interval is a *calendar*
window, so its length varies:

- a symbol without a session gets days aligned to midnight of ``day_timezone`` — ``"UTC"``
  (the default), a fixed offset such as ``"+08:00"`` (as Binance's ``timeZone`` klines), or an
  IANA name such as ``"America/New_York"`` (a day is then 23 or 25 hours across a DST change);
- a symbol with a :class:`Session` (US equities on Finnhub, say) gets one daily bar per session
  part it keeps: the regular hours, and with ``out_of_session = "bars"`` the pre- and post-market
  hours as daily bars of their own (distinct ``start_ms``), on trading days only.

A session's trades outside the parts it keeps count toward no bar at all: with
``out_of_session = "archive"`` (the default) that is everything outside the regular hours; with
``"bars"`` everything outside pre, regular and post. They still move event time and are kept in
the trade archive. Local times come from the time zone database (``zoneinfo``), never from
hard-coded offsets, so daylight-saving changes move the session's UTC times by themselves.

Everything here is a pure function of its settings, cached per (key, minute): the kernel calls it
for the few distinct window starts of a step, never per trade (the trade filter is vectorized).
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from dataclasses import dataclass, field
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from candlewax.codec import INTERVALS

__all__ = ["Calendar", "Session", "parse_hours", "parse_timezone"]

_DAY_MS = 86_400_000
_OFFSET = re.compile(r"([+-])([01][0-9]|2[0-3]):([0-5][0-9])")
_HOURS = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_timezone(text: str) -> dt.tzinfo:
    """``"UTC"``, ``"+08:00"`` / ``"-03:30"`` or an IANA name → tzinfo; ValueError otherwise."""
    m = _OFFSET.fullmatch(text)
    if m:
        minutes = int(m.group(2)) * 60 + int(m.group(3))
        return dt.timezone(dt.timedelta(minutes=-minutes if m.group(1) == "-" else minutes))
    try:
        if not 0 < len(text) <= 64:
            raise ValueError(text)
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # a directory, a name too long
        raise ValueError(
            f"time zone {text[:60]!r} is neither UTC, an offset like +08:00, nor an IANA name"
        ) from None


def parse_hours(text: str) -> tuple[int, int]:
    """``"09:30-16:00"`` → minutes of the local day ``(570, 960)``; the end is exclusive."""
    m = _HOURS.fullmatch(text)
    if m is None:
        raise ValueError(f"hours {text[:40]!r}: use HH:MM-HH:MM (local time, 24 h)")
    lo = int(m.group(1)) * 60 + int(m.group(2))
    hi = int(m.group(3)) * 60 + int(m.group(4))
    if not lo < hi <= 1440:
        raise ValueError(f"hours {text!r}: the start must come before the end, within one day")
    return lo, hi


def parse_weekdays(text: str) -> frozenset[int]:
    """``"mon-fri"`` or ``"mon,wed,fri"`` → ISO weekdays (Monday 1 … Sunday 7)."""
    days: set[int] = set()
    for part in text.lower().split(","):
        ends = part.strip().split("-")
        if len(ends) > 2 or any(e not in _WEEKDAYS for e in ends):
            raise ValueError(f"weekdays {text[:40]!r}: use mon-fri or mon,tue,… (mon … sun)")
        lo, hi = _WEEKDAYS.index(ends[0]), _WEEKDAYS.index(ends[-1])
        if hi < lo:
            raise ValueError(f"weekdays {text!r}: {ends[0]}-{ends[-1]} runs backwards")
        days.update(range(lo + 1, hi + 2))
    return frozenset(days)


@dataclass(frozen=True)
class Session:
    """A trading calendar: time zone, regular hours, optional pre/post hours (minutes of the
    local day, end exclusive), trading weekdays, holidays (local dates), and what becomes of
    trades outside the regular hours (``"archive"``: no bar; ``"bars"``: pre/post bars)."""

    name: str
    timezone: str
    regular: tuple[int, int]
    pre: tuple[int, int] | None = None
    post: tuple[int, int] | None = None
    weekdays: frozenset[int] = frozenset(range(1, 6))
    holidays: frozenset[dt.date] = frozenset()
    out_of_session: str = "archive"

    def __post_init__(self) -> None:
        parse_timezone(self.timezone)
        if self.out_of_session not in ("archive", "bars"):
            raise ValueError(f"out_of_session {self.out_of_session!r}: use archive or bars")
        parts = sorted(self.parts(extended=True))
        for (_, hi), (lo, _) in itertools.pairwise(parts):
            if lo < hi:
                raise ValueError(f"session {self.name}: pre, regular and post hours overlap")

    def parts(self, extended: bool | None = None) -> list[tuple[int, int]]:
        """The parts whose trades count (``extended``: pre and post too; default: the mode's)."""
        if extended is None:
            extended = self.out_of_session == "bars"
        out = [self.regular]
        if extended:
            out += [p for p in (self.pre, self.post) if p is not None]
        return sorted(out)

    def trading(self, day: dt.date) -> bool:
        return day.isoweekday() in self.weekdays and day not in self.holidays


@dataclass
class Calendar:
    """Sessions per venue (``"finnhub"``) or symbol (``"finnhub:AAPL"``, which wins), and the
    day time zone of everything else. ``key`` of a symbol: its session's name, ``""`` for none."""

    day_timezone: str = "UTC"
    sessions: dict[str, Session] = field(default_factory=dict)
    #: ``"venue"`` or ``"venue:SYMBOL"`` → session name
    assign: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._tz = parse_timezone(self.day_timezone)
        self._keys: dict[tuple[str, str], str] = {}
        for target, name in self.assign.items():
            if name not in self.sessions:
                raise ValueError(f"{target} uses session {name!r}, which is not defined")

    def __getstate__(self) -> dict[str, object]:
        return {k: self.__dict__[k] for k in ("day_timezone", "sessions", "assign")}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    def __hash__(self) -> int:  # lru_cache on methods: one calendar per flow, compared by id
        return id(self)

    @property
    def has_sessions(self) -> bool:
        return bool(self.assign)

    @property
    def day_offset_ms(self) -> int | None:
        """The day time zone's fixed offset (UTC: 0), None for a zone with DST rules: with a
        fixed offset and no session, every day is 24 h and ``1d`` windows are plain arithmetic
        (the kernel's fast path)."""
        if self.has_sessions:
            return None
        if isinstance(self._tz, dt.timezone):
            offset = self._tz.utcoffset(None)
            return int(offset.total_seconds() * 1000)
        if self.day_timezone in ("UTC", "Etc/UTC"):
            return 0
        return None

    def key(self, venue: str, symbol: str) -> str:
        pair = (venue, symbol)
        if pair not in self._keys:
            self._keys[pair] = self.assign.get(f"{venue}:{symbol}") or self.assign.get(venue, "")
        return self._keys[pair]

    def keys(self, frame: pl.DataFrame) -> pl.Series:
        """The calendar key of each row's (venue, symbol)."""
        pairs = frame.select("venue", "symbol").unique()
        mapping = pairs.with_columns(
            cal=pl.Series([self.key(v, s) for v, s in pairs.iter_rows()], dtype=pl.String)
        )
        return frame.select("venue", "symbol").join(
            mapping, on=["venue", "symbol"], how="left", maintain_order="left"
        )["cal"]

    # ------------------------------------------------------------------ windows

    def day_of(self, key: str, ts_ms: int) -> tuple[int, int] | None:
        """The ``1d`` window ``(start, end)`` holding ``ts_ms``; None outside every session part
        the key keeps (its trades count toward no bar)."""
        return _day_of(self, key, ts_ms - ts_ms % 60_000)

    def next_window(self, key: str, interval: str, t_ms: int) -> tuple[int, int] | None:
        """The first window of ``interval`` starting at or after ``t_ms`` in which the key can
        trade (every window, without a session), within a year; None if there is none."""
        if interval == "1d":
            return _next_day(self, key, t_ms)
        length = INTERVALS[interval]
        start = -(-t_ms // length) * length
        if not key:
            return start, start + length
        session = self.sessions[key]
        for _ in range(400 * 4):
            if self._open(session, start, length):
                return start, start + length
            nxt = self._next_part_start(session, start + length)
            if nxt is None:
                return None
            start = max(start + length, nxt - nxt % length)
        return None

    def window_open(self, key: str, start_ms: int, length: int) -> bool:
        """Can the key trade in the intraday window ``[start, start + length)``?"""
        return not key or self._open(self.sessions[key], start_ms, length)

    def _open(self, session: Session, start_ms: int, length: int) -> bool:
        return _open(self, session.name, start_ms, length)

    def _next_part_start(self, session: Session, t_ms: int) -> int | None:
        """UTC ms of the first session part (kept by the mode) starting at or after ``t_ms``."""
        tz = parse_timezone(session.timezone)
        day = dt.datetime.fromtimestamp(t_ms / 1000, tz).date()
        for i in range(400):
            d = day + dt.timedelta(days=i)
            if not session.trading(d):
                continue
            for lo, _hi in session.parts():
                at = _local_ms(d, lo, tz)
                if at >= t_ms:
                    return at
        return None

    # ------------------------------------------------------------------ trades

    def in_session(self, rows: pl.DataFrame) -> pl.Series:
        """Per trade row: does it count toward bars (within a part its session keeps, on a
        trading day)? True for every symbol without a session. Vectorized per session."""
        frame = rows.select("ts_ms").with_columns(cal=self.keys(rows))
        keep = pl.lit(True)
        for name in frame["cal"].unique().to_list():
            if not name:
                continue
            session = self.sessions[name]
            local = (
                pl.from_epoch(pl.col("ts_ms"), time_unit="ms")
                .dt.replace_time_zone("UTC")
                .dt.convert_time_zone(session.timezone)
            )
            minute = local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)
            inside = pl.lit(False)
            for lo, hi in session.parts():
                inside = inside | minute.is_between(lo, hi, closed="left")
            trading = local.dt.weekday().is_in(sorted(session.weekdays))
            if session.holidays:
                trading = trading & ~local.dt.date().is_in(sorted(session.holidays))
            keep = pl.when(pl.col("cal") == name).then(inside & trading).otherwise(keep)
        return frame.select(keep.alias("keep"))["keep"]


def _local_ms(day: dt.date, minute: int, tz: dt.tzinfo) -> int:
    """UTC ms of ``minute`` (of the local day ``day``) in ``tz``; 24:00 is the next midnight.
    A wall time that does not exist (a spring-forward gap) maps as zoneinfo's fold=0 does."""
    base = dt.datetime(day.year, day.month, day.day, tzinfo=tz)
    if minute >= 1440:
        nxt = day + dt.timedelta(days=1)
        return int(dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).timestamp() * 1000)
    local = base.replace(hour=minute // 60, minute=minute % 60)
    return int(local.timestamp() * 1000)


@lru_cache(maxsize=65_536)
def _day_of(cal: Calendar, key: str, minute_ms: int) -> tuple[int, int] | None:
    if not key:
        tz = cal._tz
        day = dt.datetime.fromtimestamp(minute_ms / 1000, tz).date()
        return _local_ms(day, 0, tz), _local_ms(day, 1440, tz)
    session = cal.sessions[key]
    tz = parse_timezone(session.timezone)
    local = dt.datetime.fromtimestamp(minute_ms / 1000, tz)
    if not session.trading(local.date()):
        return None
    minute = local.hour * 60 + local.minute
    for lo, hi in session.parts():
        if lo <= minute < hi:
            return _local_ms(local.date(), lo, tz), _local_ms(local.date(), hi, tz)
    return None


@lru_cache(maxsize=65_536)
def _next_day(cal: Calendar, key: str, t_ms: int) -> tuple[int, int] | None:
    if not key:
        window = _day_of(cal, "", t_ms - t_ms % 60_000)
        assert window is not None
        if window[0] >= t_ms:
            return window
        return _day_of(cal, "", window[1])
    session = cal.sessions[key]
    start = cal._next_part_start(session, t_ms)
    return None if start is None else _day_of(cal, key, start)


@lru_cache(maxsize=262_144)
def _open(cal: Calendar, name: str, start_ms: int, length: int) -> bool:
    session = cal.sessions[name]
    tz = parse_timezone(session.timezone)
    for edge in (start_ms, start_ms + length - 1):
        day = dt.datetime.fromtimestamp(edge / 1000, tz).date()
        if not session.trading(day):
            continue
        for lo, hi in session.parts():
            if _local_ms(day, lo, tz) < start_ms + length and _local_ms(day, hi, tz) > start_ms:
                return True
    return False
