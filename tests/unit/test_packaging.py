"""The installed package (a wheel, the image) holds every module the code imports."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_with_an_init_is_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    include = config["packages"]["find"]["include"]
    found = set(find_packages(ROOT, include=include))
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("candlewax", "connectors", "flows", "sinks")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert {"candlewax.cli", "candlewax.codec", "sinks.gateway", "sinks.notify"} <= on_disk
    assert found == on_disk
