"""The volatility detectors' rules (docs/alerts.md), as settings: ``[candlewax.alerts]`` in the
TOML file, JSON in ``CANDLEWAX_ALERTS``, or one rule at a time (``CANDLEWAX_ALERTS__COOLDOWN_MS``).

Threshold tables take ``interval`` keys (the default for every symbol) and ``SYMBOL@interval``
keys (an override for one symbol): ``range = {"1m" = 0.005, "BTCUSDT@1m" = 0.003}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt

from candlewax.codec import INTERVALS
from candlewax.codec.rules import CALENDAR_INTERVALS, SYMBOL_PATTERN

#: The detectors, in the order they are documented.
RULES: Final = ("range", "move", "zscore")

_KEY = re.compile(rf"(?:({SYMBOL_PATTERN})@)?([0-9]+[mhd])")


def _thresholds(table: dict[str, float]) -> dict[str, float]:
    for key, value in table.items():
        m = _KEY.fullmatch(key)
        if m is None or m.group(2) not in INTERVALS:
            raise ValueError(
                f"key {key!r}: use an interval ({', '.join(INTERVALS)}) or SYMBOL@interval"
            )
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{key!r} = {value!r} must be a positive number")
    return table


Thresholds = Annotated[dict[str, float], AfterValidator(_thresholds)]


def _intraday(table: dict[str, float]) -> dict[str, float]:
    days = [key for key in table if key.rsplit("@", 1)[-1] in CALENDAR_INTERVALS]
    if days:
        raise ValueError(f"{days[0]!r}: the range rule runs on intraday intervals (1m … 1h)")
    return table


#: The range rule follows each trade within fixed windows: no calendar (1d) windows.
RangeThresholds = Annotated[Thresholds, AfterValidator(_intraday)]


class AlertRules(BaseModel):
    """Detector settings; every rule is deterministic in event time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: (high − low) / high, e.g. {"1m": 0.005, "5m": 0.01, "BTCUSDT@1m": 0.003}
    range: RangeThresholds = Field(default_factory=lambda: {"1m": 0.005, "5m": 0.01})
    #: |close − close N bars ago| / close, with N = move_bars
    move: Thresholds = Field(default_factory=lambda: {"5m": 0.01})
    move_bars: PositiveInt = 3
    #: k in |log return| / σ ≥ k
    zscore: Thresholds = Field(default_factory=lambda: {"1m": 6.0})
    zscore_halflife_bars: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 30.0
    zscore_warmup_bars: PositiveInt = 30
    #: After an alert, the same (rule, venue, symbol) stays silent this long in event time.
    cooldown_ms: NonNegativeInt = 300_000
    #: Skip incomplete bars and windows (before a symbol's coverage, over a gap marker).
    ignore_incomplete: bool = True

    def threshold(self, rule: str, symbol: str, interval: str) -> float | None:
        table: Mapping[str, float] = getattr(self, rule)
        return table.get(f"{symbol}@{interval}", table.get(interval))

    def intervals(self, rule: str) -> set[str]:
        return {key.rsplit("@", 1)[-1] for key in getattr(self, rule)}
