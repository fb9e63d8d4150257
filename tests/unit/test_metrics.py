"""Every metric label's value set is bounded, whatever the input brings."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from candlewax import metrics
from candlewax.codec import Trade
from candlewax.codec.columns import decode_batch
from candlewax.settings import Settings
from flows.bars import BarStep, Batch


def _series(metric: object) -> list[dict[str, str]]:
    return [s.labels for family in metric.collect() for s in family.samples]  # type: ignore[attr-defined]


def test_values_beyond_a_labels_limit_are_folded_into_other() -> None:
    registry = CollectorRegistry()
    counter = metrics.Counter("t_total", "test", ["venue", "reason"], registry=registry)
    for i in range(5_000):
        counter.labels(f"venue{i}", "json").inc()
    venues = {s["venue"] for s in _series(counter) if "venue" in s}
    assert len(venues) == metrics.LABEL_LIMITS["venue"] + 1 and metrics.OTHER in venues
    assert registry.get_sample_value("t_total", {"venue": "other", "reason": "json"}) == 5_000 - 32
    gauge = metrics.Gauge("g", "test", ["partition"], registry=registry)
    for p in range(2_000):
        gauge.labels(str(p)).set(p)
    assert len(_series(gauge)) == metrics.LABEL_LIMITS["partition"] + 1


def test_five_thousand_venues_in_the_flow_make_a_bounded_number_of_series() -> None:
    before = {s["venue"] for s in _series(metrics.TRADES_IN) if "venue" in s}
    step = BarStep(Settings(intervals=("1m",), archive_trades=False))
    trades = [Trade(f"v{i}", "BTCUSDT", str(i), "1", "1", "buy", 1723161240000 + i)
              for i in range(5_000)]  # fmt: skip
    values = [t.encode() for t in trades]
    state, _ = step(None, Batch(0, values, list(range(len(values)))))
    state, _ = step(state, Batch(1, [], [], final=True))
    assert decode_batch(values).rows.height == 5_000  # all valid, all counted
    venues = {s["venue"] for s in _series(metrics.TRADES_IN) if "venue" in s}
    assert len(venues) <= metrics.LABEL_LIMITS["venue"] + 1 and len(venues - before) <= 33
    opened = [s for s in _series(metrics.OPEN_WINDOWS) if s.get("partition") == "0"]
    assert opened, "candlewax_open_windows is set"
