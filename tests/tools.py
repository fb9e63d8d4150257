"""System tools the tests drive (Debian packages that `make test` installs when missing)."""

from __future__ import annotations

import shutil
import subprocess


def tool(name: str, package: str) -> str:
    """The path of ``name``, or a failure that says how to get it (never a skip)."""
    binary = shutil.which(name)
    assert binary, f"{name} is not installed: `make test` installs it (apt-get install {package})"
    return binary


def promtool_check_metrics(text: str, where: str = "") -> None:
    """``text`` (a /metrics exposition) passes `promtool check metrics`."""
    check = subprocess.run(
        [tool("promtool", "prometheus"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, f"{where}: {check.stdout}{check.stderr}"
