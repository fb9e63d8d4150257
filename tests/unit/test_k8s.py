"""The Kubernetes manifests, offline: each overlay builds with `kubectl kustomize`, every core
object validates strictly against the Kubernetes schemas (kubernetes-validate), the custom
resources carry the fields we rely on, and every pod meets the restricted Pod Security profile
plus a read-only root filesystem, requests/limits and pinned images. The gateway's Deployment,
Service, Ingress, policy and budget are checked to agree with each other and with the app itself
(its settings as the pod resolves them, its probe and metrics paths answered by the real app)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from candlewax.settings import Settings
from sinks.gateway.app import create_app
from sinks.gateway.auth import Keys

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


def settings_toml(overlay: str) -> dict[str, Any]:
    (config,) = [
        c for c in by_kind(overlay, "ConfigMap") if c["metadata"]["name"] == "candlewax-config"
    ]
    return tomllib.loads(config["data"]["candlewax.toml"])["candlewax"]


@cache
def overlay_settings(overlay: str, env: tuple[tuple[str, str], ...] = ()) -> Settings:
    """The ConfigMap's candlewax.toml as candlewax itself loads it, with stand-ins for the files
    the pods mount (a password, a CA certificate that librdkafka loads), under a container's
    ``env`` (its literal values)."""
    values = settings_toml(overlay)
    with tempfile.TemporaryDirectory() as tmp:
        secret, ca = Path(tmp) / "secret", Path(tmp) / "ca.crt"
        secret.write_text("from the secret file\n")
        key = Path(tmp) / "ca.key"
        openssl = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                   "-nodes", "-keyout", str(key), "-out", str(ca), "-days", "1", "-subj", "/CN=ca"]  # fmt: skip
        subprocess.run(openssl, check=True, capture_output=True)
        files = values.get("kafka_secret_files", {})
        values["kafka_secret_files"] = dict.fromkeys(files, secret)
        kafka = values.get("kafka", {})
        values["kafka"] = {k: str(ca) if k.endswith(".location") else v for k, v in kafka.items()}
        return Settings.load(None, env=dict(env), defaults=values)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_objects_validate_strictly(overlay: str, version: str) -> None:
    validated = set()
    for obj in build(overlay):
        if "." in obj["apiVersion"].split("/")[0] and not obj["apiVersion"].startswith(
            ("apps/", "policy/", "networking.k8s.io/")
        ):
            continue  # custom resources: checked below
        kubernetes_validate.validate(obj, version, strict=True)
        validated.add((obj["kind"], obj["metadata"]["name"]))
    assert len(validated) >= 20
    gateway = {("Deployment", "gateway"), ("Service", "gateway"), ("NetworkPolicy", "gateway-http"),
               ("PodDisruptionBudget", "gateway"), ("Secret", "candlewax-gateway-keys")}  # fmt: skip
    assert gateway <= validated
    assert (("Ingress", "gateway") in validated) == (overlay == "prod")


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
    names = {name.split("/")[1] for name, _ in templates}
    assert names >= {"flow", "notify", "connector-binance", "gateway"}
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
            ports = container.get("ports", [])
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in container:  # a probe's port is one the container declares
                    action = container[probe].get("httpGet") or container[probe]["tcpSocket"]
                    assert probe_port(container, action["port"]) in {
                        p["containerPort"] for p in ports
                    }, (where, probe)
            for volume in spec.get("volumes", []):  # restricted: no hostPath
                assert "hostPath" not in volume, where


def probe_port(container: dict[str, Any], port: int | str) -> int | None:
    """A probe's or Service's target port (a number or a container port's name) as a number."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in container.get("ports", []) if p["name"] == port]
    return named[0] if named else None


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
        "gateway-http",
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
    if overlay == "prod":  # only TLS with SCRAM; plaintext nowhere
        assert listener == {"name": "tls", "port": 9093, "type": "internal", "tls": True,
                            "authentication": {"type": "scram-sha-512"}}  # fmt: skip
        assert "userOperator" in kafka["spec"]["entityOperator"]
    else:
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
    settings = overlay_settings(overlay)
    bootstrap = f"{kafka['metadata']['name']}-kafka-bootstrap:{listener['port']}"
    assert settings.bootstrap_servers == bootstrap
    kafka_config = settings.kafka_config()
    if listener["tls"]:  # the Strimzi cluster CA, mounted (see the mounts test)
        assert settings_toml(overlay)["kafka"]["ssl.ca.location"] == "/etc/kafka-ca/ca.crt"
    if listener.get("authentication", {}).get("type") == "scram-sha-512":
        assert kafka_config["security.protocol"] == "SASL_SSL"
        assert kafka_config["sasl.mechanism"] == "SCRAM-SHA-512"
        users = {u["metadata"]["name"]: u for u in by_kind(overlay, "KafkaUser")}
        user = users[kafka_config["sasl.username"]]
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"
        assert kafka_config["sasl.password"] == "from the secret file"
    else:
        assert kafka_config.get("security.protocol", "PLAINTEXT") == "PLAINTEXT"
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(overlay, "NetworkPolicy")}
    to_kafka = {port["port"] for port in policies["candlewax-to-kafka"]["egress"][0]["ports"]}
    into_kafka = {port["port"] for port in policies["kafka"]["ingress"][1]["ports"]}
    assert to_kafka == into_kafka == {listener["port"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitoring_resources_point_at_real_ports_and_rules(overlay: str) -> None:
    (monitor,) = by_kind(overlay, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    endpoints = {e["port"]: e for e in monitor["spec"]["podMetricsEndpoints"]}
    assert len(endpoints) == len(monitor["spec"]["podMetricsEndpoints"])
    for name, template in pod_templates(overlay):  # every candlewax pod is scraped, once
        assert selector.items() <= template["metadata"]["labels"].items(), name
        ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert len(ports & set(endpoints)) == 1, (name, ports)
        if template["metadata"]["labels"]["app.kubernetes.io/name"] == "candlewax-gateway":
            assert ports & set(endpoints) == {"http"}  # its /metrics is on its one port
            assert endpoints["http"]["path"] == "/metrics"  # served: see the gateway's test
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
def test_the_secrets_are_templates_and_the_processes_are_wired(overlay: str) -> None:
    secrets = {s["metadata"]["name"]: s for s in by_kind(overlay, "Secret")}
    assert set(secrets["candlewax-notify"]["stringData"]) == {
        "TELEGRAM_BOT_TOKEN",
        "TELEGRAM_CHAT_ID",
        "WECOM_WEBHOOK_KEY",
    }
    assert set(secrets["candlewax-gateway-keys"]["stringData"]) == {"keys.toml"}
    for secret in secrets.values():  # no real secrets in the repo
        assert all(v == "" for k, v in secret["stringData"].items() if k != "AWS_REGION")
    sets = {s["metadata"]["name"]: s for s in by_kind(overlay, "StatefulSet")}
    flow = sets["flow"]["spec"]["template"]["spec"]
    assert flow["initContainers"][0]["args"][:2] == ["recovery", "init"]
    assert "-r" in flow["containers"][0]["args"]
    mounts = {m["mountPath"] for m in flow["containers"][0]["volumeMounts"]}
    assert {"/var/lib/candlewax/recovery", "/tmp"} <= mounts
    data_dir = str(overlay_settings(overlay).data_dir)
    claims = {c["metadata"]["name"] for c in sets["flow"]["spec"]["volumeClaimTemplates"]}
    if overlay == "prod":  # Parquet on object storage, credentials from their Secret
        assert data_dir.startswith("s3://") and "/var/lib/candlewax/data" not in mounts
        assert claims == {"recovery"}
        assert set(secrets) == {
            "candlewax-notify",
            "candlewax-gateway-keys",
            "candlewax-object-storage",
        }
        storage = secrets["candlewax-object-storage"]["stringData"]
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} == set(storage)
        (source,) = flow["containers"][0]["envFrom"]
        assert source["secretRef"]["name"] == "candlewax-object-storage"
    else:  # dev keeps a volume
        assert data_dir == "/var/lib/candlewax/data" and data_dir in mounts
        assert claims == {"recovery", "data"}
        assert set(secrets) == {"candlewax-notify", "candlewax-gateway-keys"}
    notify = sets["notify"]["spec"]["template"]["spec"]["containers"][0]
    assert notify["envFrom"][0]["secretRef"]["name"] == "candlewax-notify"
    assert sets["notify"]["spec"]["replicas"] == 1
    deployments = {d["metadata"]["name"] for d in by_kind(overlay, "Deployment")}
    for obj in by_kind(overlay, "Service"):
        if obj["spec"].get("clusterIP") == "None":
            assert obj["metadata"]["name"] in sets  # headless service of a StatefulSet
        else:  # the gateway's replicas behind one address
            assert obj["metadata"]["name"] == "gateway" and "gateway" in deployments
            assert obj["spec"]["type"] == "ClusterIP"
    assert {p["metadata"]["name"] for p in by_kind(overlay, "PodDisruptionBudget")} == {
        "flow",
        "notify",
        "connectors",
        "gateway",
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_file_the_settings_read_is_mounted_in_every_container_that_reads_them(
    overlay: str,
) -> None:
    files = [p for k, p in settings_toml(overlay).get("kafka_secret_files", {}).items()]
    files += [
        v for k, v in settings_toml(overlay).get("kafka", {}).items() if k.endswith(".location")
    ]
    assert bool(files) == (overlay == "prod")
    for name, template in pod_templates(overlay):
        for container in (
            template["spec"].get("initContainers", []) + template["spec"]["containers"]
        ):
            env = {e["name"] for e in container.get("env", [])}
            assert "CANDLEWAX_CONFIG" in env, f"{name}/{container['name']}"
            mounted = [m["mountPath"] for m in container["volumeMounts"]]
            for path in files:
                assert any(path.startswith(f"{m}/") for m in mounted), (
                    name,
                    container["name"],
                    path,
                )


def container_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_flow_statefulset_is_one_bytewax_cluster(overlay: str) -> None:
    """Replicas, the processes' addresses, the Service, the ports, the recovery stores and the
    trades partitions agree, as candlewax's own settings resolve them in each pod."""
    (flow,) = [s for s in by_kind(overlay, "StatefulSet") if s["metadata"]["name"] == "flow"]
    spec, pod = flow["spec"], flow["spec"]["template"]["spec"]
    replicas = spec["replicas"]
    assert replicas >= 2 and spec["podManagementPolicy"] == "Parallel"  # they wait for each other
    (init,), (main,) = pod["initContainers"], pod["containers"]
    assert container_env(init) == container_env(main)  # recovery init sees the same cluster
    (service,) = [
        s for s in by_kind(overlay, "Service") if s["metadata"]["name"] == spec["serviceName"]
    ]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"]
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    service_ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    seen = []
    for ordinal in range(replicas):
        env = {**container_env(main), "HOSTNAME": f"{flow['metadata']['name']}-{ordinal}"}
        cluster = Settings.load(None, env=env).cluster
        process_id, addresses = cluster.resolve(env)
        assert process_id == ordinal and len(addresses) == replicas
        assert addresses == tuple(
            f"{flow['metadata']['name']}-{i}.{spec['serviceName']}:{ports['cluster']}"
            for i in range(replicas)
        )
        seen.append(addresses)
    assert all(a == seen[0] for a in seen)  # every process names the same cluster
    assert cluster.port == ports["cluster"] == service_ports["cluster"]
    # Partitions: at least one per worker of the cluster, evenly spread.
    (trades,) = [t for t in by_kind(overlay, "KafkaTopic") if t["spec"]["topicName"] == "trades"]
    workers = replicas * cluster.workers
    assert trades["spec"]["partitions"] >= workers and trades["spec"]["partitions"] % workers == 0
    # Recovery: one store per pod, on its own volume, pod i keeping partition i of replicas.
    directory = main["args"][main["args"].index("-r") + 1]
    assert init["args"] == ["recovery", "init", directory, "--per-process"]
    (claim,) = [m for m in main["volumeMounts"] if m["mountPath"] == directory]
    assert claim["name"] in {c["metadata"]["name"] for c in spec["volumeClaimTemplates"]}
    # The processes reach each other; a drain never waits on a cluster that is already down.
    policy = {p["metadata"]["name"]: p["spec"] for p in by_kind(overlay, "NetworkPolicy")}
    peers = policy["flow-cluster"]
    flow_labels = pod_labels = flow["spec"]["template"]["metadata"]["labels"]
    assert peers["podSelector"]["matchLabels"].items() <= flow_labels.items()
    for rule in peers["ingress"] + peers["egress"]:
        assert rule["ports"] == [{"protocol": "TCP", "port": ports["cluster"]}]
        (peer,) = rule.get("from", rule.get("to"))
        assert peer["podSelector"]["matchLabels"].items() <= pod_labels.items()
    (budget,) = [
        b for b in by_kind(overlay, "PodDisruptionBudget") if b["metadata"]["name"] == "flow"
    ]
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert budget["spec"]["selector"]["matchLabels"].items() <= flow_labels.items()


def one(overlay: str, kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in by_kind(overlay, kind) if o["metadata"]["name"] == name]
    return obj


def get(app: Any, path: str) -> httpx.Response:
    """A GET through the ASGI app itself (no lifespan: no Kafka reader is started)."""

    async def request() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.get(path)

    return asyncio.run(request())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_deployment_service_ingress_and_policies_agree(
    overlay: str, tmp_path: Path
) -> None:
    """The gateway: its settings as the pod resolves them, the port they listen on = the
    container's = the Service's target = the Ingress backend's = the policy's; readiness on the
    path the real app answers 503 without a Kafka reader and 200 with one; liveness on it only
    with minutes of patience; the keys Secret mounted read-only where keys_file points; spread,
    budget, draining."""
    deployment = one(overlay, "Deployment", "gateway")
    spec, template = deployment["spec"], deployment["spec"]["template"]
    pod, labels = template["spec"], template["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "candlewax-gateway"
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert spec["replicas"] >= 2 and spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0  # full count through a rollout
    (main,) = pod["containers"]
    assert main["args"] == ["serve"]
    # The settings the pod runs with: its ConfigMap, then its environment.
    env = container_env(main)
    assert env["CANDLEWAX_CONFIG"] == "/etc/candlewax/candlewax.toml"
    settings = overlay_settings(overlay, tuple(sorted(env.items())))
    gateway = settings.gateway
    assert gateway.host == "0.0.0.0"  # reachable from outside the pod
    (http,) = main["ports"]
    assert http["name"] == "http" and http["containerPort"] == gateway.port
    # The keys file: in a read-only mount of the keys Secret, the Secret template a valid file.
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    keys_file = Path(gateway.keys_file)
    (mount,) = [m for p, m in mounts.items() if keys_file.parent == Path(p)]
    assert mount["readOnly"] is True
    secret_volume = volumes[mount["name"]]["secret"]
    assert secret_volume.get("optional") is not True  # a missing Secret must not pass silently
    (item,) = [i for i in secret_volume["items"] if i["path"] == keys_file.name]
    secret = one(overlay, "Secret", secret_volume["secretName"])
    template_file = tmp_path / "keys.toml"
    template_file.write_text(secret["stringData"][item["key"]])
    assert not Keys.load(template_file)  # the template: no keys, private streams off
    # data_dir: the flow's Parquet, read-only (dev: a stand-in volume; prod: the bucket).
    data_dir = str(settings.data_dir)
    if overlay == "prod":
        assert data_dir.startswith("s3://") and data_dir not in mounts
        (source,) = main["envFrom"]
        assert source["secretRef"]["name"] == "candlewax-object-storage"
        https = by_kind(overlay, "NetworkPolicy")
        (internet,) = [p["spec"] for p in https if p["metadata"]["name"] == "internet-https"]
        assert (
            labels["app.kubernetes.io/component"]
            in internet["podSelector"]["matchExpressions"][0]["values"]
        )
    else:
        assert mounts[data_dir]["readOnly"] is True
    # Probes: readiness is the app's /healthz. Liveness on it only with minutes of patience (a
    # Kafka outage turns every replica's /healthz 503 together); startup covers the warm-up
    # before uvicorn listens.
    readiness = main["readinessProbe"]
    ready = readiness["httpGet"]
    assert probe_port(main, ready["port"]) == gateway.port
    live = main["livenessProbe"]
    check = live.get("httpGet") or live["tcpSocket"]
    assert probe_port(main, check["port"]) == gateway.port
    if check.get("path") == ready["path"]:
        assert live["periodSeconds"] * live["failureThreshold"] >= 300
        assert live["failureThreshold"] > readiness["failureThreshold"]
    assert probe_port(main, main["startupProbe"]["tcpSocket"]["port"]) == gateway.port
    (monitor,) = by_kind(overlay, "PodMonitor")
    (scrape,) = [e for e in monitor["spec"]["podMetricsEndpoints"] if e["port"] == http["name"]]
    app_settings = overlay_settings(
        overlay, tuple(sorted({**env, "CANDLEWAX_GATEWAY__KEYS_FILE": str(template_file)}.items()))
    )
    not_reading = get(create_app(app_settings, feed=True), ready["path"])
    assert not_reading.status_code == 503  # reader not started: not ready
    reading = create_app(app_settings, feed=False)  # no reader to wait for: ready
    assert get(reading, ready["path"]).status_code == 200
    metrics_page = get(reading, scrape["path"])
    assert metrics_page.status_code == 200 and metrics_page.headers["content-type"].startswith(
        "text/plain; version="
    )
    # Draining: the preStop sleep ends well within the grace period; spread over nodes.
    sleep = main["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and 0 < int(sleep[1]) < pod["terminationGracePeriodSeconds"] - 10
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["maxSkew"] == 1
    assert spread["labelSelector"]["matchLabels"].items() <= labels.items()
    # The Service: ClusterIP over these pods, port "http" onto the container's port.
    service = one(overlay, "Service", "gateway")
    assert service["spec"]["type"] == "ClusterIP" and "clusterIP" not in service["spec"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["name"] == http["name"] and port["port"] == gateway.port
    assert probe_port(main, port["targetPort"]) == http["containerPort"]
    # Who may connect: the ingress controller and Prometheus, on the container's port; egress
    # to Kafka as every candlewax pod.
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(overlay, "NetworkPolicy")}
    policy = policies["gateway-http"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": http["containerPort"]}]
    namespaces = {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                  for p in rule["from"]}  # fmt: skip
    assert namespaces == {"ingress-nginx", "monitoring"}
    assert policies["candlewax-to-kafka"]["podSelector"]["matchLabels"].items() <= labels.items()
    # One replica at a time in a drain, never all.
    budget = one(overlay, "PodDisruptionBudget", "gateway")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= budget["spec"]["maxUnavailable"] < spec["replicas"]
    # The Ingress (prod): onto the Service's port by name, WebSocket-friendly timeouts, no
    # sticky sessions (the replicas are interchangeable).
    ingresses = by_kind(overlay, "Ingress")
    assert len(ingresses) == (overlay == "prod")
    for ingress in ingresses:
        notes = ingress["metadata"]["annotations"]
        assert notes["nginx.ingress.kubernetes.io/proxy-http-version"] == "1.1"
        assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
        assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
        assert "nginx.ingress.kubernetes.io/affinity" not in notes
        assert ingress["spec"]["ingressClassName"] == "nginx"
        (path,) = [p for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
        assert path["path"] == "/" and path["pathType"] == "Prefix"
        backend = path["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"] == {"name": port["name"]}
