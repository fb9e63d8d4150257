"""Days and trading sessions (candlewax/calendar.py) in the bar kernel, across the US change to
daylight-saving time of Sunday 2024-03-10: US equities open at 09:30 New York time, which is
14:30 UTC on Friday 03-08 (EST, UTC-5) and 13:30 UTC from Monday 03-11 (EDT, UTC-4).

The expected instants below are written out in UTC by hand from those two offsets, not computed
with the time zone database the code uses."""

from __future__ import annotations

import datetime as dt

import pytest

from candlewax.calendar import Calendar, Session, parse_hours, parse_timezone, parse_weekdays
from candlewax.codec import Bar, Trade
from candlewax.codec.columns import bar_columns, decode_batch
from candlewax.settings import Settings
from flows.barmath import BarState, EmptyIntervals, TimeRules


def utc(text: str) -> int:
    return int(dt.datetime.fromisoformat(text + "+00:00").timestamp() * 1000)


# AAPL on finnhub, local New York times in the comments.
AAPL = [
    ("a1", "2024-03-08T13:00:00"),  # Fri 08:00 EST: pre-market
    ("a2", "2024-03-08T15:00:00"),  # Fri 10:00: regular
    ("a3", "2024-03-08T20:59:30"),  # Fri 15:59:30: regular, its last minute
    ("a4", "2024-03-08T22:00:00"),  # Fri 17:00: post-market
    ("a5", "2024-03-09T02:00:00"),  # Fri 21:00: after every session part
    ("a6", "2024-03-11T13:30:00"),  # Mon 09:30 EDT: the open, an hour earlier in UTC
    ("a7", "2024-03-11T20:30:00"),  # Mon 16:30: post-market
    ("a8", "2024-03-12T16:00:00"),  # Tue 12:00: regular
]
START, END = utc("2024-03-08T00:00:00"), utc("2024-03-13T00:00:00")
US = Session(
    "us",
    "America/New_York",
    parse_hours("09:30-16:00"),
    parse_hours("04:00-09:30"),
    parse_hours("16:00-20:00"),
)


def run(calendar: Calendar) -> tuple[dict[str, list[dict[str, object]]], int]:
    """Every 5 minutes a BUSY crypto trade moves time; AAPL trades as above. → bars, and the
    count of trades outside their session."""
    trades = [Trade("binance", "BUSY", f"b{i}", "10.0", "1.0", "buy", t)
              for i, t in enumerate(range(START, END, 300_000))]  # fmt: skip
    trades += [Trade("finnhub", "AAPL", i, f"17{n}.5", "2.0", None, utc(t))
               for n, (i, t) in enumerate(AAPL)]  # fmt: skip
    trades.sort(key=lambda t: t.ts_ms)
    state = BarState(
        lateness_ms=0,
        time_rules=TimeRules(max_jump_ms=10**10, quorum=1),
        empty=EmptyIntervals("flat"),
        calendar=calendar,
    )
    values = [t.encode() for t in trades]
    results = [state.step(decode_batch(values[i : i + 97]).rows) for i in range(0, len(values), 97)]
    results.append(state.flush())
    bars: dict[str, list[dict[str, object]]] = {}
    for result in results:
        for name, frame in result.closed.items():
            if frame.height:
                bars.setdefault(name, []).extend(bar_columns(frame, name).to_dicts())
    return bars, sum(r.out_of_session.height for r in results)


def of(bars: dict[str, list[dict[str, object]]], name: str, symbol: str) -> list[dict[str, object]]:
    return sorted((b for b in bars[name] if b["symbol"] == symbol), key=lambda b: b["start_ms"])  # type: ignore[arg-type,return-value]


def test_regular_hours_follow_new_york_across_the_dst_change() -> None:
    bars, outside = run(Calendar("UTC", {"us": US}, {"finnhub": "us"}))
    days = of(bars, "1d", "AAPL")
    assert [(d["start_ms"], d["end_ms"]) for d in days] == [
        (utc("2024-03-08T14:30:00"), utc("2024-03-08T21:00:00")),  # Fri, EST
        (utc("2024-03-11T13:30:00"), utc("2024-03-11T20:00:00")),  # Mon, EDT
        (utc("2024-03-12T13:30:00"), utc("2024-03-12T20:00:00")),  # Tue
    ]  # no Saturday, no Sunday
    assert [(d["first_id"], d["last_id"], d["trades"]) for d in days] == [
        ("a2", "a3", 2), ("a6", "a6", 1), ("a8", "a8", 1)
    ]  # fmt: skip
    assert outside == 4  # a1 (pre), a4 and a7 (post), a5 (night): no bar, archived
    # Friday's session opened before AAPL's first counted trade: honest flags.
    assert [d["complete"] for d in days] == [False, True, True]
    # Intraday bars, flat ones included, only within the regular hours of trading days.
    minutes = of(bars, "1m", "AAPL")
    per_day: dict[str, int] = {}
    for bar in minutes:
        start = dt.datetime.fromtimestamp(bar["start_ms"] / 1000, dt.UTC)  # type: ignore[operator]
        per_day[start.date().isoformat()] = per_day.get(start.date().isoformat(), 0) + 1
        open_utc = 14.5 if start.day == 8 else 13.5
        assert open_utc <= start.hour + start.minute / 60 < open_utc + 6.5, start
    # Friday from its first bar (10:00) to the close; Monday and Tuesday the whole session.
    assert per_day == {"2024-03-08": 360, "2024-03-11": 390, "2024-03-12": 390}
    # Daily bars of the crypto symbol stay UTC days: five of them, 24 h each.
    busy = of(bars, "1d", "BUSY")
    assert [b["start_ms"] for b in busy] == [START + k * 86_400_000 for k in range(5)]
    for bar in days + busy + minutes[:3]:  # valid `bars` messages, calendar days included
        assert Bar.from_dict(bar).to_dict() == bar


def test_extended_hours_make_their_own_daily_bars() -> None:
    extended = Session(**{**US.__dict__, "out_of_session": "bars"})
    bars, outside = run(Calendar("UTC", {"us": extended}, {"finnhub:AAPL": "us"}))
    days = [(d["start_ms"], d["end_ms"], d["trades"]) for d in of(bars, "1d", "AAPL")]
    assert days == [
        (utc("2024-03-08T09:00:00"), utc("2024-03-08T14:30:00"), 1),  # pre, EST
        (utc("2024-03-08T14:30:00"), utc("2024-03-08T21:00:00"), 2),
        (utc("2024-03-08T21:00:00"), utc("2024-03-09T01:00:00"), 1),  # post
        (utc("2024-03-11T08:00:00"), utc("2024-03-11T13:30:00"), 0),  # pre, EDT: flat
        (utc("2024-03-11T13:30:00"), utc("2024-03-11T20:00:00"), 1),
        (utc("2024-03-11T20:00:00"), utc("2024-03-12T00:00:00"), 1),
        (utc("2024-03-12T08:00:00"), utc("2024-03-12T13:30:00"), 0),
        (utc("2024-03-12T13:30:00"), utc("2024-03-12T20:00:00"), 1),
        (utc("2024-03-12T20:00:00"), utc("2024-03-13T00:00:00"), 0),
    ]
    assert outside == 1  # a5, 21:00 New York time, after the post-market


def test_days_of_a_zone_with_dst_last_23_hours_in_spring() -> None:
    bars, _ = run(Calendar("America/New_York"))
    days = [(b["start_ms"], b["end_ms"]) for b in of(bars, "1d", "BUSY")]
    assert (utc("2024-03-10T05:00:00"), utc("2024-03-11T04:00:00")) in days  # 23 h
    assert (utc("2024-03-09T05:00:00"), utc("2024-03-10T05:00:00")) in days  # 24 h
    offset, _ = run(Calendar("+08:00"))  # as Binance's timeZone=8 klines
    starts = [b["start_ms"] for b in of(offset, "1d", "BUSY")]
    assert utc("2024-03-09T16:00:00") in starts and all(
        s % 86_400_000 == 57_600_000 for s in starts
    )


def test_calendar_settings_are_checked() -> None:
    assert parse_weekdays("mon-wed,fri") == frozenset({1, 2, 3, 5})
    assert parse_timezone("-03:30").utcoffset(None) == dt.timedelta(hours=-3, minutes=-30)
    for bad in ("25:00-26:00", "16:00-09:30", "9:30-16:00", "09:30"):
        with pytest.raises(ValueError, match="hours"):
            parse_hours(bad)
    for tz in ("Mars/Olympus", "+25:00", "", "../../etc/passwd", "America", "a" * 300, "\x00"):
        with pytest.raises(ValueError, match="time zone"):
            parse_timezone(tz)
    with pytest.raises(ValueError, match="weekdays"):
        parse_weekdays("fri-mon")
    with pytest.raises(ValueError, match="overlap"):
        Session("x", "UTC", (600, 900), pre=(500, 700))
    with pytest.raises(ValueError, match="not defined"):
        Settings(session_of={"finnhub": "us"})
    with pytest.raises(ValueError, match="IANA"):
        Settings(sessions={"us": {"timezone": "+05:00", "regular": "09:30-16:00"}})
    with pytest.raises(ValueError, match="intraday"):
        Settings(alerts={"range": {"1d": 0.1}})
    with pytest.raises(ValueError, match="bar kind"):
        Settings(bar_kinds={"binance:BTCUSDT": ["volume:-1"]})
    with pytest.raises(ValueError, match="venue:SYMBOL"):
        Settings(bar_kinds={"BTCUSDT": ["tick:10"]})
