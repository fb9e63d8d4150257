"""Writes grafana/dashboards/*.json: ``python grafana/generate.py``. The JSON files are committed;
tests/unit/test_ops.py checks they equal this script's output, validate against Grafana's
dashboard schema, and that every query names a metric the processes export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}


class Layout:
    """Places panels left to right, rows of 24 columns."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1

    def place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def row(self, title: str) -> dict[str, Any]:
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel = {
            "type": "row",
            "id": self._id(),
            "title": title,
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
            "panels": [],
        }
        self.y += 1
        return panel

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def panel(
        self,
        title: str,
        targets: list[tuple[str, str]],
        unit: str = "short",
        kind: str = "timeseries",
        w: int = 8,
        h: int = 8,
        description: str = "",
    ) -> dict[str, Any]:
        return {
            "type": kind,
            "id": self._id(),
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": self.place(w, h),
            "targets": [
                {"refId": chr(65 + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                for i, (expr, legend) in enumerate(targets)
            ],
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {},
        }


def datasource_var() -> dict[str, Any]:
    return {
        "type": "datasource",
        "name": "datasource",
        "label": "Data source",
        "query": "prometheus",
        "hide": 0,
    }


def query_var(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DS,
        "query": query,
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "hide": 0,
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[dict[str, Any]],
    variables: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["candlewax"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "panels": panels,
        "templating": {"list": [datasource_var(), *variables]},
        "annotations": {
            "list": [
                {
                    "name": "Annotations & Alerts",
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "type": "dashboard",
                },
                *annotations,
            ]
        },
        "links": [],
    }


def pipeline() -> dict[str, Any]:
    g = Layout()
    rate = "[$__rate_interval]"
    panels = [
        g.row("Feeds"),
        g.panel(
            "Trades per second by venue",
            [
                (
                    f'sum by (venue) (rate(candlewax_connector_trades_total{{venue=~"$venue"}}{rate}))',
                    "{{venue}}",
                )
            ],
            "ops",
        ),
        g.panel(
            "Last trade age",
            [
                (
                    'max by (venue) (candlewax_connector_last_trade_age_seconds{venue=~"$venue"})',
                    "{{venue}}",
                )
            ],
            "s",
            description="Seconds since each connector published its newest trade.",
        ),
        g.panel(
            "Reconnects by cause",
            [
                (
                    f'sum by (venue, cause) (increase(candlewax_connector_reconnects_total{{venue=~"$venue"}}{rate}))',
                    "{{venue}} {{cause}}",
                )
            ],
        ),
        g.panel(
            "Gaps by outcome",
            [
                (
                    f'sum by (venue, outcome) (increase(candlewax_connector_gaps_total{{venue=~"$venue"}}{rate}))',
                    "{{venue}} {{outcome}}",
                )
            ],
        ),
        g.panel(
            "Backfilled and duplicate trades",
            [
                (
                    f'sum by (venue) (rate(candlewax_connector_backfilled_trades_total{{venue=~"$venue"}}{rate}))',
                    "backfilled {{venue}}",
                ),
                (
                    f'sum by (venue) (rate(candlewax_connector_duplicate_trades_total{{venue=~"$venue"}}{rate}))',
                    "duplicate {{venue}}",
                ),
            ],
            "ops",
        ),
        g.panel(
            "Kafka delivery reports",
            [
                (
                    f"sum by (topic, outcome) (rate(candlewax_produced_messages_total{rate}))",
                    "{{topic}} {{outcome}}",
                )
            ],
            "ops",
        ),
        g.row("Flow"),
        g.panel(
            "Flow throughput",
            [
                (f"sum(rate(candlewax_flow_messages_total{rate}))", "messages/s"),
                (f"sum(rate(candlewax_flow_trades_total{rate}))", "trades/s"),
            ],
            "ops",
        ),
        g.panel(
            "Consumer lag",
            [
                (
                    "sum by (consumer, partition) (candlewax_consumer_lag_messages)",
                    "{{consumer}} p{{partition}}",
                )
            ],
            description="Messages between each consumer's position and the end of its partition.",
        ),
        g.panel(
            "Bars emitted by interval",
            [(f"sum by (interval) (rate(candlewax_bars_emitted_total{rate}))", "{{interval}}")],
            "ops",
        ),
        g.panel(
            "Bar close latency p50 / p99",
            [
                (
                    f"histogram_quantile(0.5, sum by (le, interval) (rate(candlewax_bar_close_lag_seconds_bucket{rate})))",
                    "p50 {{interval}}",
                ),
                ("candlewax:bar_close_lag_seconds:p99", "p99 {{interval}}"),
            ],
            "s",
            description="Wall time at emission minus the bar's end (event time).",
        ),
        g.panel(
            "Trade → alert latency p99",
            [
                (
                    f"histogram_quantile(0.99, sum by (le, rule) (rate(candlewax_alert_latency_seconds_bucket{rate})))",
                    "{{rule}}",
                )
            ],
            "s",
            description="Exchange time of the trade that raised an alert to the alert leaving the flow.",
        ),
        g.panel(
            "Watermark delay",
            [("time() - max by (partition) (candlewax_watermark_seconds)", "p{{partition}}")],
            "s",
        ),
        g.panel("Open windows", [("sum by (interval) (candlewax_open_windows)", "{{interval}}")]),
        g.panel(
            "Dead letters by reason",
            [
                (
                    f"sum by (stage, reason) (rate(candlewax_parse_errors_total{rate}))",
                    "{{stage}} {{reason}}",
                )
            ],
            "ops",
        ),
        g.panel(
            "Late and duplicate trades",
            [
                (f"sum by (venue) (rate(candlewax_late_trades_total{rate}))", "late {{venue}}"),
                (
                    f"sum by (venue) (rate(candlewax_flow_duplicate_trades_total{rate}))",
                    "duplicate {{venue}}",
                ),
            ],
            "ops",
            description="Late trades are dead-lettered; duplicates (already counted) are dropped.",
        ),
        g.panel(
            "Parquet files and rows written",
            [
                (
                    f"sum by (dataset) (rate(candlewax_parquet_files_written_total{rate}))",
                    "files {{dataset}}",
                ),
                (
                    f"sum by (dataset) (rate(candlewax_parquet_rows_written_total{rate}))",
                    "rows {{dataset}}",
                ),
            ],
            "ops",
        ),
        g.row("Alerts and notifications"),
        g.panel(
            "Alerts by rule",
            [
                (
                    f"sum by (rule, interval) (increase(candlewax_alerts_total{rate}))",
                    "{{rule}} {{interval}}",
                )
            ],
        ),
        g.panel(
            "Notifications by channel and outcome",
            [
                (
                    f"sum by (channel, outcome) (increase(candlewax_notify_alerts_total{rate}))",
                    "{{channel}} {{outcome}}",
                )
            ],
        ),
        g.panel(
            "Requests by answer",
            [
                (
                    f"sum by (channel, outcome) (rate(candlewax_notify_requests_total{rate}))",
                    "{{channel}} {{outcome}}",
                )
            ],
            "ops",
        ),
        g.panel(
            "Delivery latency p99",
            [
                ("candlewax:notify_delivery_latency_seconds:p99", "{{channel}}"),
                (
                    f"histogram_quantile(0.99, sum by (le, channel) (rate(candlewax_notify_end_to_end_seconds_bucket{rate})))",
                    "trade → delivered {{channel}}",
                ),
            ],
            "s",
        ),
        g.panel(
            "Queue depth",
            [("max by (destination) (candlewax_notify_queue_depth)", "{{destination}}")],
        ),
        g.panel(
            "Dead-lettered alerts",
            [
                (
                    f"sum by (channel, reason) (increase(candlewax_notify_dead_lettered_total{rate}))",
                    "{{channel}} {{reason}}",
                )
            ],
        ),
    ]
    return dashboard(
        "candlewax-pipeline",
        "candlewax / Pipeline health",
        "Feeds, flow, dead letters, consumer lag and notifier outcomes of a candlewax deployment.",
        panels,
        [query_var("venue", "Venue", "label_values(candlewax_connector_trades_total, venue)")],
        [],
    )


def market() -> dict[str, Any]:
    g = Layout()
    sel = 'venue=~"$venue",symbol=~"$symbol",interval="$interval"'
    panels = [
        g.panel(
            "Close",
            [(f"candlewax_bar_close{{{sel}}}", "{{venue}}:{{symbol}}")],
            "none",
            w=24,
            h=10,
            description="Close of each closed bar (per-symbol series for up to metric_symbols_max symbols).",
        ),
        g.panel(
            "Bar range (high − low) / high",
            [(f"candlewax_bar_range_ratio{{{sel}}}", "{{venue}}:{{symbol}}")],
            "percentunit",
            w=12,
        ),
        g.panel(
            "Volume per bar",
            [(f"candlewax_bar_volume{{{sel}}}", "{{venue}}:{{symbol}}")],
            "short",
            w=12,
        ),
        g.panel(
            "Alerts by rule",
            [
                (
                    "sum by (rule, interval) (increase(candlewax_alerts_total[$__rate_interval]))",
                    "{{rule}} {{interval}}",
                )
            ],
            w=12,
        ),
        g.panel(
            "Latest alert per symbol",
            [
                (
                    'time() - max by (venue, symbol, rule) (candlewax_last_alert_timestamp_seconds{venue=~"$venue",symbol=~"$symbol"})',
                    "{{symbol}} {{rule}}",
                )
            ],
            "s",
            kind="stat",
            w=12,
        ),
    ]
    return dashboard(
        "candlewax-market",
        "candlewax / Market",
        "Closed bars per symbol (close, range, volume) with alerts as annotations.",
        panels,
        [
            query_var("venue", "Venue", "label_values(candlewax_bar_close, venue)"),
            query_var(
                "symbol", "Symbol", 'label_values(candlewax_bar_close{venue=~"$venue"}, symbol)'
            ),
            {
                "type": "custom",
                "name": "interval",
                "label": "Interval",
                "query": "1m,5m,15m,30m,1h",
                "hide": 0,
            },
        ],
        [
            {
                "name": "Alerts",
                "datasource": DS,
                "enable": True,
                "hide": False,
                "iconColor": "red",
                "expr": 'changes(candlewax_last_alert_timestamp_seconds{venue=~"$venue",symbol=~"$symbol"}[2m]) > 0',
                "titleFormat": "{{rule}} alert",
                "textFormat": "{{venue}}:{{symbol}}",
                "step": "60s",
            }
        ],
    )


def render() -> dict[str, str]:
    return {
        "pipeline-health.json": json.dumps(pipeline(), indent=2, ensure_ascii=False) + "\n",
        "market.json": json.dumps(market(), indent=2, ensure_ascii=False) + "\n",
    }


K8S = HERE.parent / "k8s" / "base" / "monitoring"


def render_k8s() -> dict[str, str]:
    """The Kubernetes forms of the same files: dashboards as ConfigMaps for the Grafana sidecar
    (label grafana_dashboard), the rules as a PrometheusRule."""
    import yaml

    boards = render()
    configmap = [
        "# Generated by grafana/generate.py from grafana/dashboards: do not edit.",
        "apiVersion: v1",
        "kind: ConfigMap",
        "metadata:",
        "  name: candlewax-dashboards",
        "  labels:",
        '    grafana_dashboard: "1"',
        "    app.kubernetes.io/name: candlewax",
        "    app.kubernetes.io/component: monitoring",
        "  annotations:",
        "    grafana_folder: candlewax",
        "data:",
    ]
    for name, text in boards.items():
        configmap.append(f"  {name}: |")
        configmap += [f"    {line}" if line else "" for line in text.splitlines()]
    rules = yaml.safe_load((HERE / "rules" / "candlewax-rules.yaml").read_text())
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "candlewax",
            "labels": {
                "app.kubernetes.io/name": "candlewax",
                "app.kubernetes.io/component": "monitoring",
            },
        },
        "spec": {"groups": rules["groups"]},
    }
    header = (
        "# Generated by grafana/generate.py from grafana/rules/candlewax-rules.yaml: do not edit.\n"
    )
    return {
        "dashboards-configmap.yaml": "\n".join(configmap) + "\n",
        "prometheusrule.yaml": header
        + yaml.safe_dump(rule, sort_keys=False, width=1000, allow_unicode=True),
    }


if __name__ == "__main__":
    for name, text in render().items():
        (HERE / "dashboards" / name).write_text(text)
        print(f"wrote grafana/dashboards/{name}")
    for name, text in render_k8s().items():
        (K8S / name).write_text(text)
        print(f"wrote k8s/base/monitoring/{name}")
