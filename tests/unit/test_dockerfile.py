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
    assert expose == ["9464"]


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
