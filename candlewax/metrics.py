"""Every Prometheus metric candlewax exports, declared once (prometheus_client's default registry,
which Bytewax's own ``/metrics`` endpoint also serves).

Every label's value set is bounded, whatever the input brings: each metric keeps the first
:data:`LABEL_LIMITS` values of a label (64 unless listed) and folds later ones into ``other``.
Venues come from data (a replayed file may name thousands), partitions from the topic, reasons
from a fixed set; per-symbol series exist only for ``metric_symbols_max`` symbols
(:class:`SymbolLimit`).
"""

from __future__ import annotations

import errno
import logging
import threading
from typing import Any

import prometheus_client
from prometheus_client import start_http_server

from candlewax.errors import ConfigError

log = logging.getLogger(__name__)

#: Most distinct values one metric keeps per label; the rest are counted under ``other``.
LABEL_LIMITS = {"venue": 32, "partition": 1024, "symbol": 1000}
_DEFAULT_LABEL_LIMIT = 64
OTHER = "other"


class _Bounded:
    """Label values pass through their label's bound before a series is made."""

    _labelnames: tuple[str, ...]
    _bounds_lock = threading.Lock()

    def labels(self, *values: Any, **named: Any) -> Any:
        seen: dict[str, set[str]] = self.__dict__.setdefault("_label_values", {})
        if not self._labelnames:
            return super().labels(*values, **named)  # type: ignore[misc]
        if named:
            values = tuple(named[name] for name in self._labelnames)
        folded = []
        with self._bounds_lock:
            for name, value in zip(self._labelnames, values, strict=True):
                text = str(value)
                known = seen.setdefault(name, set())
                if text not in known:
                    if len(known) >= LABEL_LIMITS.get(name, _DEFAULT_LABEL_LIMIT):
                        text = OTHER
                    else:
                        known.add(text)
                folded.append(text)
        return super().labels(*folded)  # type: ignore[misc]


class Counter(_Bounded, prometheus_client.Counter):
    pass


class Gauge(_Bounded, prometheus_client.Gauge):
    pass


class Histogram(_Bounded, prometheus_client.Histogram):
    pass


TRADES_IN = Counter(
    "candlewax_flow_trades_total", "Valid trades the flow aggregated into bars.", ["venue"]
)
MESSAGES_IN = Counter(
    "candlewax_flow_messages_total", "Kafka messages the flow consumed from trades.", ["partition"]
)
PARSE_ERRORS = Counter(
    "candlewax_parse_errors_total",
    "Input items rejected and dead-lettered, by stage and reason.",
    ["stage", "reason"],
)
LATE_TRADES = Counter(
    "candlewax_late_trades_total",
    "Trades that arrived after their 1m window closed (dead-lettered with reason=late).",
    ["venue"],
)
BARS_EMITTED = Counter("candlewax_bars_emitted_total", "Closed bars emitted.", ["interval"])
OPEN_WINDOWS = Gauge(
    "candlewax_open_windows",
    "Open (not yet closed) bar windows held in flow state, per trades partition and interval.",
    ["partition", "interval"],
)
FLOW_DUPLICATES = Counter(
    "candlewax_flow_duplicate_trades_total",
    "Trades the flow had already counted (same venue, symbol, id in an open window), dropped.",
    ["venue"],
)
FLOW_REFILLED = Counter(
    "candlewax_flow_refilled_trades_total",
    "Late trades a restarted connector's start-up fill re-published (after its Since marker, "
    "in windows already closed): counted, not dead-lettered.",
    ["venue"],
)
OUT_OF_SESSION = Counter(
    "candlewax_out_of_session_trades_total",
    "Trades outside their symbol's trading session: no bar (kept in the trade archive).",
    ["venue"],
)
WATERMARK = Gauge(
    "candlewax_watermark_seconds",
    "Event-time watermark of a trades partition (Unix time, seconds).",
    ["partition"],
)
BAR_CLOSE_LAG = Histogram(
    "candlewax_bar_close_lag_seconds",
    "Wall time at emission minus the bar's end (event time): how late bars come out.",
    ["interval"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 3600, float("inf")),
)
CONSUMER_LAG = Gauge(
    "candlewax_consumer_lag_messages",
    "Messages between a consumer's position and the end of its partition (flow: trades; "
    "notify: alerts).",
    ["consumer", "partition"],
)
ALERT_LATENCY = Histogram(
    "candlewax_alert_latency_seconds",
    "Wall time when the flow emitted an alert minus the event (exchange) time of the trade or "
    "bar end that raised it: trade → alert, end to end.",
    ["rule"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, float("inf")),
)
ALERTS = Counter(
    "candlewax_alerts_total", "Volatility alerts raised (after cooldown).", ["rule", "interval"]
)
PRODUCED = Counter(
    "candlewax_produced_messages_total",
    "Messages whose delivery Kafka reported, by topic and outcome (ok|error).",
    ["topic", "outcome"],
)
PARQUET_FILES = Counter(
    "candlewax_parquet_files_written_total", "Parquet files written (atomically).", ["dataset"]
)
PARQUET_REFUSED = Counter(
    "candlewax_parquet_refused_total",
    "Parquet files not written because their path would leave DATA_DIR (never expected).",
)
PARQUET_ROWS = Counter(
    "candlewax_parquet_rows_written_total", "Rows written to Parquet.", ["dataset"]
)
CONNECTOR_TRADES = Counter(
    "candlewax_connector_trades_total", "Trades a connector published to Kafka.", ["venue"]
)

CONNECTOR_MESSAGES = Counter(
    "candlewax_connector_messages_total", "Websocket data frames a connector received.", ["venue"]
)
CONNECTOR_RECONNECTS = Counter(
    "candlewax_connector_reconnects_total",
    "Connector reconnections by cause (connect_failed, dropped, stale, server_close, "
    "server_shutdown, rotation).",
    ["venue", "cause"],
)
CONNECTOR_GAPS = Counter(
    "candlewax_connector_gaps_total",
    "Trade-id gaps (and reconnects with missed trades) by outcome (backfilled, unrecovered).",
    ["venue", "outcome"],
)
CONNECTOR_BACKFILLED = Counter(
    "candlewax_connector_backfilled_trades_total", "Trades recovered over REST.", ["venue"]
)
CONNECTOR_FILLED = Counter(
    "candlewax_connector_filled_trades_total",
    "Trades published by the start-up fill of the current window (connectors.md).",
    ["venue"],
)
CONNECTOR_DUPLICATES = Counter(
    "candlewax_connector_duplicate_trades_total",
    "Trades received again (id already published) and dropped.",
    ["venue"],
)
CONNECTOR_LAST_TRADE_AGE = Gauge(
    "candlewax_connector_last_trade_age_seconds",
    "Seconds since the connector last published a trade (NaN before the first).",
    ["venue"],
)

NOTIFY_CONSUMED = Counter(
    "candlewax_notify_consumed_alerts_total", "Alert messages the notifier read from Kafka."
)
NOTIFY_ALERTS = Counter(
    "candlewax_notify_alerts_total",
    "Alerts by channel and outcome (delivered, digested, dead_lettered, duplicate, unrouted).",
    ["channel", "outcome"],
)
NOTIFY_DIGESTS = Counter(
    "candlewax_notify_digests_total", "Digest messages (several alerts in one) sent.", ["channel"]
)
NOTIFY_REQUESTS = Counter(
    "candlewax_notify_requests_total",
    "Requests to a channel by answer (ok, rate_limited, retry, rejected).",
    ["channel", "outcome"],
)
NOTIFY_REQUEST_SECONDS = Histogram(
    "candlewax_notify_request_seconds",
    "Duration of one request to a channel.",
    ["channel"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf")),
)
NOTIFY_LATENCY = Histogram(
    "candlewax_notify_delivery_latency_seconds",
    "From reading an alert off Kafka to the channel accepting it (queueing and retries included).",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, float("inf")),
)
NOTIFY_END_TO_END = Histogram(
    "candlewax_notify_end_to_end_seconds",
    "From the event time of the trade that raised an alert to a channel accepting it.",
    ["channel"],
    buckets=(0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, float("inf")),
)
NOTIFY_WORKER_ERRORS = Counter(
    "candlewax_notify_worker_errors_total",
    "Errors in a destination's worker (its alerts in hand are dead-lettered; it goes on), and "
    "worker threads restarted.",
    ["channel"],
)
NOTIFY_QUEUE_DEPTH = Gauge(
    "candlewax_notify_queue_depth", "Alerts waiting for a destination.", ["destination"]
)
NOTIFY_DEAD_LETTERED = Counter(
    "candlewax_notify_dead_lettered_total",
    "Alerts sent to deadletter instead of a channel, by reason (http_400, errcode_93000, "
    "unavailable, ...); channel '-' for unreadable alert messages.",
    ["channel", "reason"],
)
NOTIFY_USER_EVENTS = Counter(
    "candlewax_notify_user_events_total",
    "Records the notifier produced to user_events (a gateway user's stream), by type (alert, "
    "delivery) and outcome (ok: confirmed by Kafka; error: refused, timed out or not produced).",
    ["type", "outcome"],
)

# The gateway (candlewax serve).
GATEWAY_CONNECTIONS = Gauge(
    "candlewax_gateway_connections", "Open WebSocket connections of the gateway."
)
GATEWAY_SUBSCRIPTIONS = Gauge(
    "candlewax_gateway_subscriptions",
    "Streams subscribed, over every connection, by kind.",
    ["kind"],
)
GATEWAY_MESSAGES = Counter(
    "candlewax_gateway_messages_total",
    "Messages the gateway sent to clients, by stream kind (kline, trade, ticker, all_tickers, "
    "alert, all_alerts, user, reply).",
    ["kind"],
)
GATEWAY_REPLACED = Counter(
    "candlewax_gateway_replaced_total",
    "Unsent kline and ticker values a newer value of the same stream replaced (a slow client "
    "gets the newest, not every one).",
    ["kind"],
)
GATEWAY_DISCONNECTS = Counter(
    "candlewax_gateway_disconnects_total",
    "Connections the gateway closed or refused, by reason (slow_client, rate_limit, "
    "too_many_connections, origin, ping_timeout, bad_request).",
    ["reason"],
)
GATEWAY_PUSH_SECONDS = Histogram(
    "candlewax_gateway_push_seconds",
    "From a record's Kafka timestamp to its message being written to a client's socket.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, float("inf")),
)
GATEWAY_RECORDS = Counter(
    "candlewax_gateway_records_total",
    "Kafka records the gateway read, by topic and outcome (ok, rejected).",
    ["topic", "outcome"],
)
GATEWAY_REQUESTS = Counter(
    "candlewax_gateway_requests_total",
    "REST requests by route and status code.",
    ["route", "status"],
)
GATEWAY_LOGINS = Counter(
    "candlewax_gateway_logins_total",
    "Logins to the private user stream by outcome (ok, bad_signature, unknown_key, stale, "
    "bad_request, disabled).",
    ["outcome"],
)


# Market view: per-symbol gauges, for a bounded set of symbols only (``metric_symbols_max``).
BAR_CLOSE = Gauge(
    "candlewax_bar_close",
    "Close price of the latest closed bar (tracked symbols only).",
    ["venue", "symbol", "interval"],
)
BAR_RANGE = Gauge(
    "candlewax_bar_range_ratio",
    "(high - low) / high of the latest closed bar (tracked symbols only).",
    ["venue", "symbol", "interval"],
)
BAR_VOLUME = Gauge(
    "candlewax_bar_volume",
    "Base volume of the latest closed bar (tracked symbols only).",
    ["venue", "symbol", "interval"],
)
LAST_ALERT = Gauge(
    "candlewax_last_alert_timestamp_seconds",
    "Event time of the latest alert per rule (tracked symbols only).",
    ["venue", "symbol", "rule"],
)


class SymbolLimit:
    """The first ``limit`` (venue, symbol) pairs seen get per-symbol series; others none. Keeps
    label sets bounded whatever the feed brings."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.tracked: set[tuple[str, str]] = set()
        self.refused = 0

    def allows(self, venue: str, symbol: str) -> bool:
        key = (venue, symbol)
        if key in self.tracked:
            return True
        if len(self.tracked) < self.limit:
            self.tracked.add(key)
            return True
        self.refused += 1
        if self.refused == 1:
            log.info(
                "per-symbol metrics are kept for %d symbols (metric_symbols_max); %s:%s and "
                "later ones have none",
                self.limit,
                venue,
                symbol,
            )
        return False


def serve(host: str, port: int) -> int:
    """Serve /metrics on host:port (port 0 = any free port); return the port."""
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"metrics port {port} on {host} is already in use (another candlewax process?): "
                "choose another with --metrics-port or CANDLEWAX_METRICS_PORT"
            ) from None
        raise ConfigError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; check "
            "--metrics-host / CANDLEWAX_METRICS_HOST"
        ) from None
    bound = int(server.server_address[1])
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return bound


def reference_table() -> str:
    """The metrics reference of docs/operations.md (``python -m candlewax.metrics``)."""
    from prometheus_client.metrics import MetricWrapperBase

    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for obj in list(globals().values()):
        if not isinstance(obj, MetricWrapperBase):
            continue
        (desc,) = obj.describe()
        name = desc.name + ("_total" if desc.type == "counter" else "")
        labels = ", ".join(obj._labelnames)
        rows.append(f"| `{name}` | {desc.type} | {labels} | {desc.documentation} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(reference_table(), end="")
