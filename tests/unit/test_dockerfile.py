"""The Dockerfile, parsed (no Docker engine here): multi-stage, pinned base, non-root with the
uid the manifests expect, the candlewax entry point, nothing secret baked in."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_multi_stage_with_pinned_bases() -> None:
    froms = [rest for word, rest in instructions() if word == "FROM"]
    assert len(froms) >= 2
    for base in froms:
        image = base.split()[0]
        tag = image.partition(":")[2]
        assert tag and tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), image
    assert any(w == "COPY" and r.startswith("--from=") for w, r in instructions())
    runtime = [r for w, r in instructions() if w == "RUN"]
    assert not any("gcc" in r or "build-essential" in r for r in runtime[1:])


def test_runs_as_the_non_root_user_the_manifests_expect() -> None:
    users = [rest for word, rest in instructions() if word == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0
    flow = yaml.safe_load((ROOT / "k8s" / "base" / "flow-statefulset.yaml").read_text())
    assert flow["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)
    expose = [rest for word, rest in instructions() if word == "EXPOSE"]
    from candlewax.settings import GatewaySettings, Settings

    assert expose == [f"{Settings().metrics_port} {GatewaySettings().port}"]
    env = " ".join(rest for word, rest in instructions() if word == "ENV")
    # In a container both listen beyond loopback (their defaults outside one are 127.0.0.1).
    assert "CANDLEWAX_METRICS_HOST=0.0.0.0" in env and "CANDLEWAX_GATEWAY__HOST=0.0.0.0" in env


def test_entry_point_is_candlewax() -> None:
    (entry,) = [rest for word, rest in instructions() if word == "ENTRYPOINT"]
    assert json.loads(entry) == ["candlewax"]


def test_no_secrets_in_the_image() -> None:
    secret = re.compile(r"(token|secret|password|passwd|api_?key|webhook_key)", re.I)
    for word, rest in instructions():
        if word in ("ENV", "ARG", "LABEL"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_.]*)=", rest) or [rest.split()[0]]
            assert not any(secret.search(n) for n in names), rest
        if word in ("COPY", "ADD"):
            assert not re.search(r"\.env\b|id_rsa|\.pem|\.key\b|secret", rest, re.I), rest
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests", "data"} <= set(ignored)


def stages() -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions, by its name (FROM … AS name)."""
    out: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for word, rest in instructions():
        if word == "FROM":
            current = out.setdefault(rest.split()[-1], [])
        current.append((word, rest))
    return out


def test_a_node_stage_vendors_the_chart_library() -> None:
    by_name = stages()
    assert list(by_name) == ["web", "build", "runtime"]
    web = by_name["web"]
    image = web[0][1].split()[0]
    assert re.fullmatch(r"node:20\.\d+\.\d+-bookworm-slim", image), image
    assert ("COPY", "package.json package-lock.json ./") in web
    (run,) = [r for w, r in web if w == "RUN"]
    assert "npm ci " in run and "--omit=dev" in run  # the lock file's versions, no test tools
    # The file `make web` vendors, and its license beside it.
    dist = "node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js"
    assert dist in run and "node_modules/lightweight-charts/LICENSE" in run
    assert f"LWC_DIST := {dist}" in (ROOT / "Makefile").read_text()
    # The build stage puts it where the package data is, before installing the package.
    build = by_name["build"]
    vendor = ("COPY", "--from=web /web/vendor ./sinks/gateway/static/vendor")
    assert vendor in build
    install = next(i for i, (w, r) in enumerate(build) if w == "RUN" and "pip install ." in r)
    assert build.index(vendor) < install
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'sinks = ["gateway/static/**/*"]' in pyproject
    # Node stays out of the runtime image; a local node_modules or vendor/ stays out of the context.
    runtime = by_name["runtime"]
    assert not any("node" in r for w, r in runtime if w in ("FROM", "COPY", "RUN"))
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"node_modules", "sinks/gateway/static/vendor"} <= set(ignored)
