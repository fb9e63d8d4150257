"""The chart pages' front-end dependencies: exact pins that package-lock.json agrees with, and
`make web` wired so that a fresh clone's `make demo` / `make test` install them first."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pins_are_exact_and_the_lock_agrees() -> None:
    package = json.loads((ROOT / "package.json").read_text())
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert package["private"] is True
    wanted = {**package["dependencies"], **package["devDependencies"]}
    assert set(package["dependencies"]) == {"lightweight-charts"}
    assert set(package["devDependencies"]) == {"playwright-core"}  # drives Debian's chromium
    for name, version in wanted.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} {version} is not an exact pin"
        locked = lock["packages"][f"node_modules/{name}"]
        assert locked["version"] == version and locked["integrity"].startswith("sha512-")
    assert wanted["lightweight-charts"].startswith("5.")
    assert lock["packages"][""]["dependencies"] == package["dependencies"]
    assert lock["packages"][""]["devDependencies"] == package["devDependencies"]
    for path, locked in lock["packages"].items():
        assert not path or locked.get("integrity"), path  # every package checked by npm ci


def test_make_web_runs_before_demo_and_test() -> None:
    make = (ROOT / "Makefile").read_text()
    targets = {
        m.group(1): m.group(2).split() for m in re.finditer(r"^([\w$().-]+):(?!=)(.*)$", make, re.M)
    }
    assert "web" in targets["demo"] and "web" in targets["test"]
    assert targets["$(NPM_STAMP)"] == ["package.json", "package-lock.json"]
    assert "npm ci --no-audit --no-fund" in make
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {"/node_modules/", "/sinks/gateway/static/vendor/"} <= set(ignored)
