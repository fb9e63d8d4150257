"""Operations artifacts, checked offline: alert rules (promtool), dashboards (Grafana's schema,
generated, datasource variable), runbooks, and the metrics reference in docs."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.tools import tool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "grafana" / "rules" / "candlewax-rules.yaml"
SCHEMA = ROOT.parent / "shared" / "schemas" / "grafana-dashboard.jsonschema.json"


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    check = subprocess.run(
        [tool("promtool", "prometheus"), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tests = ROOT / "tests" / "promtool" / "candlewax-rules.test.yaml"
    run = subprocess.run(
        [tool("promtool", "prometheus"), "test", "rules", str(tests)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_every_alert_has_summary_description_and_a_runbook_that_exists() -> None:
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    anchors = {h.strip().lower() for h in re.findall(r"^## (\S+)$", runbooks, re.M)}
    rules = alert_rules()
    assert len(rules) >= 8
    for rule in rules:
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        anchor = notes["runbook_url"].rsplit("#", 1)[1]
        assert anchor == rule["alert"].lower() and anchor in anchors, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")


def test_the_kubernetes_forms_are_generated() -> None:
    for name, text in generated_k8s().items():
        path = ROOT / "k8s" / "base" / "monitoring" / name
        assert path.read_text() == text, f"{name}: run python grafana/generate.py"
    configmap = (ROOT / "k8s" / "base" / "monitoring" / "dashboards-configmap.yaml").read_text()
    dashboards = yaml.safe_load(configmap)
    for name, text in generated().items():
        assert json.loads(dashboards["data"][name]) == json.loads(text)


def test_the_kubernetes_prometheusrule_carries_the_same_rules() -> None:
    k8s = yaml.safe_load((ROOT / "k8s" / "base" / "monitoring" / "prometheusrule.yaml").read_text())
    assert k8s["kind"] == "PrometheusRule"
    assert k8s["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def _generator():
    path = ROOT / "grafana" / "generate.py"
    spec = importlib.util.spec_from_file_location("grafana_generate", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generated() -> dict[str, str]:
    return _generator().render()


def generated_k8s() -> dict[str, str]:
    return _generator().render_k8s()


def test_dashboards_are_generated_valid_and_use_the_datasource_variable() -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    files = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    assert {f.name for f in files} == set(generated()) == {"pipeline-health.json", "market.json"}
    uids = set()
    for path in files:
        text = path.read_text()
        assert text == generated()[path.name], f"{path.name}: run python grafana/generate.py"
        board = json.loads(text)
        errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(board)]
        assert errors == [], path.name
        assert "id" not in board and board["uid"] not in uids
        uids.add(board["uid"])
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        panels = [p for p in board["panels"] if p["type"] != "row"]
        assert len(panels) >= 5
        for panel in panels:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
    market = json.loads((ROOT / "grafana" / "dashboards" / "market.json").read_text())
    assert any("expr" in a for a in market["annotations"]["list"])  # alerts as annotations


def test_the_metrics_reference_in_docs_is_the_generated_one() -> None:
    from candlewax.metrics import reference_table

    docs = (ROOT / "docs" / "operations.md").read_text()
    section = docs.split("<!-- metrics:begin -->\n", 1)[1].split("<!-- metrics:end -->", 1)[0]
    assert section == reference_table(), "regenerate: python -m candlewax.metrics"


def test_the_metrics_reference_in_docs_lists_every_metric_the_code_declares() -> None:
    from prometheus_client.metrics import MetricWrapperBase

    from candlewax import metrics

    declared = {
        m.name + ("_total" if m.type == "counter" else "")
        for obj in vars(metrics).values()
        if isinstance(obj, MetricWrapperBase)
        for m in obj.describe()
    }
    assert len(declared) > 30
    docs = (ROOT / "docs" / "operations.md").read_text() + (ROOT / "docs" / "alerts.md").read_text()
    documented = set(re.findall(r"^\| `(candlewax_[a-z_]+)` \|", docs, re.M))
    assert declared - documented == set(), "undocumented metrics"
    assert documented - declared == set(), "documented metrics the code does not declare"


@pytest.mark.parametrize("path", sorted((ROOT / "grafana" / "provisioning").rglob("*.yaml")))
def test_provisioning_files_parse(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == 1


def test_the_benchmark_still_runs() -> None:
    """`make bench` is part of the project: its kernel measurement runs on a few trades (the
    numbers themselves are measured by `make bench`, never asserted in tests)."""
    from bench.throughput import kernel

    full, aggregate = kernel(symbols=10, n=20_000)
    assert full > 0 and aggregate > 0


def test_the_parquet_sink_refuses_paths_outside_data_dir(tmp_path: Path) -> None:
    """The codec keeps such venues out; the sink checks again, on its own."""
    import polars as pl
    import pytest

    from sinks.parquet import UnsafePath, safe_path, write_trade_block

    data = tmp_path / "data"
    # ("venue=.." would be a plain directory name: the prefix makes it one; the codec refuses
    # such a venue anyway.)
    for venue in ("x/../../../../ESCAPED", "x/../venue=binance", "a\\b", "bin\x00ance", "v" * 300):
        rows = pl.DataFrame(
            {"hb": [False], "venue": [venue], "symbol": ["BTCUSDT"], "id": ["1"], "p": [1],
             "q": [1], "buy": [True], "ts_ms": [1723161240000], "recv_ms": [None], "off": [0]},
            schema_overrides={"p": pl.Int128, "q": pl.Int128, "recv_ms": pl.Int64},
        )  # fmt: skip
        with pytest.raises(UnsafePath):
            write_trade_block(data, 0, 0, 0, rows)
    assert not list(tmp_path.rglob("*.parquet"))
    (data / "trades").mkdir(parents=True)
    (data / "trades" / "link").symlink_to(tmp_path.parent)  # a link that leads out
    with pytest.raises(UnsafePath):
        safe_path(data, "trades", "link", "x.parquet")
    assert safe_path(data, "trades", "venue=binance", "p.parquet").parent.name == "venue=binance"
