"""The chart pages in headless Chromium: tests/e2e/chart_check.mjs (playwright-core driving
Debian's chromium, `make web` installs the one and `make test` the other) run from Python.

``chart_check(url)`` returns the driver's one result for a page that needs nothing else (the
backtest report); ``LiveChartCheck`` is for the live page: ``ready()`` returns once the
history is drawn and the socket is live — push the update and the alert then — and ``done()``
once the driver saw them (or gave up)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import IO, Any

import orjson

from tests.tools import tool

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("chart_check.mjs")


def driver_command(url: str, *options: str) -> list[str]:
    node = tool("node", "nodejs")
    assert (ROOT / "node_modules" / "playwright-core").is_dir(), (
        "playwright-core is not installed: run `make web` (npm ci)"
    )
    chromium = tool("chromium", "chromium")
    return [node, str(DRIVER), "--chromium", chromium, *options, url]


def _env() -> dict[str, str]:
    # Never a browser download, whatever the environment says.
    return {**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"}


def chart_check(url: str, *options: str, timeout: float = 240) -> dict[str, Any]:
    """The driver's result for ``url`` (its last JSON line), whatever its checks said."""
    run = subprocess.run(
        driver_command(url, *options), capture_output=True, text=True, timeout=timeout, env=_env()
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, f"chart_check.mjs printed nothing (exit {run.returncode}): {run.stderr[-3000:]}"
    result: dict[str, Any] = orjson.loads(lines[-1])
    assert result["event"] != "error", result["problems"]
    return result


class LiveChartCheck:
    """chart_check.mjs on the live page, as a process the test talks to line by line."""

    def __init__(self, url: str, *options: str) -> None:
        self.proc = subprocess.Popen(
            driver_command(url, *options),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )

    def _line(self) -> dict[str, Any]:
        out: IO[str] | None = self.proc.stdout
        assert out is not None
        line = out.readline()
        if not line:
            self.proc.wait(30)
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(
                f"chart_check.mjs ended (exit {self.proc.returncode}): {err[-3000:]}"
            )
        result: dict[str, Any] = orjson.loads(line)
        assert result["event"] != "error", result["problems"]
        return result

    def ready(self) -> dict[str, Any]:
        """The "ready" line (or the "done" line of a page that never got ready)."""
        return self._line()

    def done(self, timeout: float = 300) -> dict[str, Any]:
        result = self._line()
        self.proc.wait(timeout)
        return result

    def __enter__(self) -> LiveChartCheck:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def report_data(page: str) -> dict[str, Any]:
    """The JSON a report embeds for its chart (``<script type="application/json" id="cw-data">``)."""
    start = page.index('<script type="application/json" id="cw-data">')
    start = page.index(">", start) + 1
    data: dict[str, Any] = orjson.loads(page[start : page.index("</script>", start)])
    return data
