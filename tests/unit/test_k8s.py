"""The Kubernetes manifests, offline: each overlay builds with `kubectl kustomize`, every core
object validates strictly against the Kubernetes schemas (kubernetes-validate), the custom
resources carry the fields we rely on, and every pod meets the restricted Pod Security profile
plus a read-only root filesystem, requests/limits and pinned images."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")
K8S_VERSIONS = ("1.28.0", "1.30.0", "1.33.0")
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


@cache
def build(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to build the overlays (kubectl kustomize)"
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def by_kind(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in build(overlay) if o["kind"] == kind]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_objects_validate_strictly(overlay: str, version: str) -> None:
    validated = 0
    for obj in build(overlay):
        if "." in obj["apiVersion"].split("/")[0] and not obj["apiVersion"].startswith(
            ("apps/", "policy/", "networking.k8s.io/")
        ):
            continue  # custom resources: checked below
        kubernetes_validate.validate(obj, version, strict=True)
        validated += 1
    assert validated >= 15


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_is_namespaced_and_labelled(overlay: str) -> None:
    objects = build(overlay)
    (namespace,) = by_kind(overlay, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "candlewax", obj["metadata"]["name"]
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace["metadata"]["name"]


def pod_templates(overlay: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"])
        for o in build(overlay)
        if o["kind"] in WORKLOADS
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_restricted_read_only_limited_and_pinned(overlay: str) -> None:
    templates = pod_templates(overlay)
    assert {name.split("/")[1] for name, _ in templates} >= {"flow", "notify", "connector-binance"}
    for name, template in templates:
        spec = template["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec.get("hostNetwork") is not True and spec.get("hostPID") is not True
        assert spec["automountServiceAccountToken"] is False
        assert "app.kubernetes.io/name" in template["metadata"]["labels"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name}/{container['name']}"
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0, where
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), where
            image = container["image"]
            assert ":" in image and not image.endswith(":latest"), where
            assert image.startswith("ghcr.io/candlewax/candlewax:"), where
            for volume in spec.get("volumes", []):  # restricted: no hostPath
                assert "hostPath" not in volume, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_open_only_what_is_needed(overlay: str) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(overlay, "NetworkPolicy")}
    deny = policies["default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    assert {
        "allow-dns",
        "candlewax-to-kafka",
        "kafka",
        "internet-https",
        "prometheus-scrape",
    } <= set(policies)
    https = policies["internet-https"]["egress"][0]
    assert https["ports"] == [{"protocol": "TCP", "port": 443}]
    assert "10.0.0.0/8" in https["to"][0]["ipBlock"]["except"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_strimzi_resources_have_the_fields_we_use(overlay: str) -> None:
    (kafka,) = by_kind(overlay, "Kafka")
    assert kafka["apiVersion"] == "kafka.strimzi.io/v1beta2"
    notes = kafka["metadata"]["annotations"]
    assert notes["strimzi.io/kraft"] == "enabled" and notes["strimzi.io/node-pools"] == "enabled"
    assert "zookeeper" not in kafka["spec"]
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert listener == {"name": "plain", "port": 9092, "type": "internal", "tls": False}
    pools = by_kind(overlay, "KafkaNodePool")
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    assert any("controller" in p["spec"]["roles"] for p in pools)
    for pool in pools:
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert set(pool["spec"]["roles"]) <= {"controller", "broker"}
        assert pool["spec"]["storage"]["type"] == "jbod"
        assert any(v.get("kraftMetadata") == "shared" for v in pool["spec"]["storage"]["volumes"])
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] <= brokers
    assert config["min.insync.replicas"] < brokers or brokers == 1
    topics = {t["spec"]["topicName"]: t for t in by_kind(overlay, "KafkaTopic")}
    assert set(topics) == {"trades", "bars", "alerts", "deadletter"}
    for topic in topics.values():
        spec = topic["spec"]
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert spec["partitions"] >= 1 and 1 <= spec["replicas"] <= brokers
        assert int(spec["config"]["min.insync.replicas"]) <= spec["replicas"]
        assert int(spec["config"]["retention.ms"]) > 0
    toml = by_kind(overlay, "ConfigMap")[0]["data"]["candlewax.toml"]
    assert f'bootstrap_servers = "{kafka["metadata"]["name"]}-kafka-bootstrap:9092"' in toml


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitoring_resources_point_at_real_ports_and_rules(overlay: str) -> None:
    (monitor,) = by_kind(overlay, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
    scraped = [
        name
        for name, template in pod_templates(overlay)
        if selector.items() <= template["metadata"]["labels"].items()
        and any(
            p["name"] == port for c in template["spec"]["containers"] for p in c.get("ports", [])
        )
    ]
    assert len(scraped) == len(pod_templates(overlay))  # every candlewax pod is scraped
    job_label = monitor["spec"]["jobLabel"]
    for _, template in pod_templates(overlay):
        assert template["metadata"]["labels"][job_label].startswith(
            "candlewax-"
        )  # rules: job=~"candlewax.*"
    (rule,) = by_kind(overlay, "PrometheusRule")
    rules = yaml.safe_load((ROOT / "grafana" / "rules" / "candlewax-rules.yaml").read_text())
    assert rule["spec"]["groups"] == rules["groups"]
    (boards,) = [
        c for c in by_kind(overlay, "ConfigMap") if c["metadata"]["name"] == "candlewax-dashboards"
    ]
    assert boards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(boards["data"]) == {"pipeline-health.json", "market.json"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_secret_is_a_template_and_the_processes_are_wired(overlay: str) -> None:
    (secret,) = by_kind(overlay, "Secret")
    assert set(secret["stringData"]) == {
        "TELEGRAM_BOT_TOKEN",
        "TELEGRAM_CHAT_ID",
        "WECOM_WEBHOOK_KEY",
    }
    assert all(v == "" for v in secret["stringData"].values())  # no real secrets in the repo
    sets = {s["metadata"]["name"]: s for s in by_kind(overlay, "StatefulSet")}
    flow = sets["flow"]["spec"]["template"]["spec"]
    assert flow["initContainers"][0]["args"][:2] == ["recovery", "init"]
    assert "-r" in flow["containers"][0]["args"]
    mounts = {m["mountPath"] for m in flow["containers"][0]["volumeMounts"]}
    assert {"/var/lib/candlewax/recovery", "/var/lib/candlewax/data", "/tmp"} <= mounts
    notify = sets["notify"]["spec"]["template"]["spec"]["containers"][0]
    assert notify["envFrom"][0]["secretRef"]["name"] == secret["metadata"]["name"]
    assert sets["notify"]["spec"]["replicas"] == 1
    for obj in by_kind(overlay, "Service"):
        assert obj["spec"]["clusterIP"] == "None"
        assert obj["metadata"]["name"] in sets  # headless service of a StatefulSet
    assert {p["metadata"]["name"] for p in by_kind(overlay, "PodDisruptionBudget")} == {
        "flow",
        "notify",
        "connectors",
    }
