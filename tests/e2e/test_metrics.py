"""Every long-running process serves Prometheus metrics that `promtool check metrics` accepts;
the dashboards and alert rules only name metrics those processes really export."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from candlewax.broker import EmbeddedBroker, free_port
from tests.tools import promtool_check_metrics

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "candlewax.cli"]
ROOT = Path(__file__).resolve().parents[2]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def value(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}(\{{[^}}]*{re.escape(labels)}[^}}]*\}})? (\S+)$"
    return sum(float(m.group(2)) for m in re.finditer(pattern, text, re.M))


def wait_for(port: int, proc: subprocess.Popen, ok, what: str, timeout_s: float = 90) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}")
        try:
            text = scrape(port)
            if ok(text):
                return text
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


PORTS: dict[str, int] = {}


@pytest.fixture(scope="module")
def scrapes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """/metrics of a running synthetic market, flow and notifier (one broker)."""
    tmp = tmp_path_factory.mktemp("metrics")
    with EmbeddedBroker("tansu") as broker:
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("CANDLEWAX_", "TELEGRAM_", "WECOM_"))
            },
            "CANDLEWAX_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "CANDLEWAX_DATA_DIR": str(tmp / "data"),
            "CANDLEWAX_PARTITIONS": "2",
            "CANDLEWAX_ALERTS": '{"range": {"1m": 0.0005}, "cooldown_ms": 0}',
        }
        ports = {name: free_port() for name in ("market", "flow", "notify")}
        # Real-time market whose event time reaches a minute boundary 5 s after start.
        start_ms = int(time.time() * 1000) // 60_000 * 60_000 + 55_000
        procs = {
            "market": [
                *CLI,
                "synthetic",
                "--symbols",
                "5",
                "--rate",
                "400",
                "--start-ms",
                str(start_ms),
                "--metrics-port",
                str(ports["market"]),
            ],
            "flow": [*CLI, "flow", "--metrics-port", str(ports["flow"])],
            "notify": [
                *CLI,
                "notify",
                "--console",
                "--from-beginning",
                "--metrics-port",
                str(ports["notify"]),
            ],
        }
        running = {
            name: subprocess.Popen(
                cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            for name, cmd in procs.items()
        }
        try:
            out = {
                "market": wait_for(
                    ports["market"],
                    running["market"],
                    lambda t: value(t, "candlewax_connector_trades_total") > 0,
                    "market trades",
                ),
                "flow": wait_for(
                    ports["flow"],
                    running["flow"],
                    lambda t: (
                        value(t, "candlewax_bars_emitted_total") > 0
                        and "candlewax_consumer_lag_messages{" in t
                        and value(t, "candlewax_alert_latency_seconds_count") > 0
                    ),
                    "flow bars, lag and alerts",
                ),
                "notify": wait_for(
                    ports["notify"],
                    running["notify"],
                    lambda t: (
                        value(t, "candlewax_notify_alerts_total", 'outcome="delivered"') > 0
                        and "candlewax_consumer_lag_messages{" in t
                    ),
                    "notifier deliveries",
                ),
            }
            PORTS.update(ports)
            yield out
        finally:
            for proc in running.values():
                proc.send_signal(signal.SIGTERM)
            for proc in running.values():
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def exported_names(scrapes: dict[str, str]) -> set[str]:
    """Every series name the processes export (histograms as _bucket/_sum/_count)."""
    names: set[str] = set()
    for text in scrapes.values():
        for kind_line in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
            name, kind = kind_line.groups()
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind == "counter":
                names |= {name if name.endswith("_total") else f"{name}_total", f"{name}_created"}
            else:
                names.add(name)
        names |= set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M))
    return names


def test_every_process_serves_metrics_promtool_accepts(scrapes: dict[str, str]) -> None:
    for name, text in scrapes.items():
        promtool_check_metrics(text, name)
    flow = scrapes["flow"]
    assert value(flow, "candlewax_bar_close_lag_seconds_count") > 0
    assert value(flow, "candlewax_alert_latency_seconds_count") > 0
    closes = re.findall(r'^candlewax_bar_close\{[^}]*symbol="([^"]+)"', flow, re.M)
    assert 0 < len(set(closes)) <= 5  # the market's symbols, and only those (bounded)
    assert "candlewax_last_alert_timestamp_seconds{" in flow
    assert value(scrapes["notify"], "candlewax_notify_end_to_end_seconds_count") > 0


PROMQL_WORDS = {
    "sum",
    "rate",
    "irate",
    "increase",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "histogram_quantile",
    "max",
    "min",
    "avg",
    "count",
    "topk",
    "bottomk",
    "and",
    "or",
    "unless",
    "offset",
    "time",
    "vector",
    "delta",
    "deriv",
    "abs",
    "clamp_min",
    "clamp_max",
    "label_replace",
    "absent",
    "max_over_time",
    "min_over_time",
    "avg_over_time",
    "changes",
    "resets",
    "le",
    "bool",
    "sort_desc",
    "quantile",
    "stddev",
    "last_over_time",
    "timestamp",
    "scalar",
    "up",
    "predict_linear",
    "present_over_time",
    "absent_over_time",
}


def metric_names(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that are metric names (not functions, labels, or
    variables): candlewax_*, bytewax_*, and recording rules (candlewax:*)."""
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "{}", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {w for w in words if w not in PROMQL_WORDS and (w.startswith(("candlewax", "bytewax")))}


def test_dashboards_and_rules_name_only_exported_metrics(scrapes: dict[str, str]) -> None:
    import yaml

    exported = exported_names(scrapes)
    rules = yaml.safe_load((ROOT / "grafana" / "rules" / "candlewax-rules.yaml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    exprs: list[tuple[str, str]] = [
        (f"rule {r.get('alert') or r.get('record')}", r["expr"])
        for g in rules["groups"]
        for r in g["rules"]
    ]
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                exprs.append((f"{path.name}: {panel['title']}", target["expr"]))
        for annotation in dashboard.get("annotations", {}).get("list", []):
            if "expr" in annotation:
                exprs.append((f"{path.name}: annotation {annotation['name']}", annotation["expr"]))
    assert len(exprs) > 20
    missing = [
        (where, name)
        for where, expr in exprs
        for name in metric_names(expr)
        if name not in exported and name not in recorded
    ]
    assert missing == []


def test_a_real_prometheus_scrapes_them_and_evaluates_the_rules(
    scrapes: dict[str, str], tmp_path: Path
) -> None:
    """Debian's Prometheus on 127.0.0.1 with our rules: every target up, recording rules
    evaluated from the live processes' series."""
    import yaml

    binary = shutil.which("prometheus")
    assert binary, (
        "prometheus is not installed: `make test` installs it (apt-get install prometheus)"
    )
    rules = yaml.safe_load((ROOT / "grafana" / "rules" / "candlewax-rules.yaml").read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"  # evaluate now, not in 30 s
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    jobs = {"market": "candlewax-connect", "flow": "candlewax-flow", "notify": "candlewax-notify"}
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yaml")],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{PORTS[name]}"]}]}
            for name, job in jobs.items()
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    server = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def api(path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}", timeout=5) as r:
            return json.loads(r.read())["data"]

    def until(check, what: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise AssertionError(f"prometheus exited: {server.stderr.read().decode()[-2000:]}")
            try:
                if check():
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}")

    try:
        until(
            lambda: (
                {t["labels"]["job"]: t["health"] for t in api("targets")["activeTargets"]}
                == dict.fromkeys(jobs.values(), "up")
            ),
            "every target up",
        )
        until(
            lambda: len(api("query?query=candlewax:consumer_lag_messages:sum")["result"]) == 2,
            "the lag recording rule for flow and notify",
        )
        until(
            lambda: any(
                float(r["value"][1]) > 0
                for r in api("query?query=candlewax:connector_trades:rate1m")["result"]
            ),
            "the trade rate recording rule",
        )
        groups = api("rules")["groups"]
        assert {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"} >= {
            "CandlewaxFeedDown",
            "CandlewaxConsumerLagGrowing",
            "CandlewaxWebhookFailing",
        }
        assert all(r["health"] == "ok" for g in groups for r in g["rules"])
    finally:
        server.terminate()
        server.wait(timeout=30)
