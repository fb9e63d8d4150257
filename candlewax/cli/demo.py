"""``candlewax demo``: the whole pipeline in one command, supervised.

:func:`cmd_demo` turns the command line into a :class:`DemoPlan`; :class:`Demo` runs it —
embedded broker (unless one is given), a publisher thread (synthetic market or a replay), the
bars flow as a child process with the settings handed down whole, a notifier thread when
channels are configured, and the live console — and stops every part, in order, however it
ends. Nothing here parses arguments; nothing in :func:`cmd_demo` starts a process.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from candlewax import __version__, metrics
from candlewax.broker import EmbeddedBroker, die_with_parent, free_port, wait_for_broker
from candlewax.cli.common import (
    Items,
    notify_config,
    publish,
    replay_items,
    settings_from,
    stop_on_signals,
    synthetic_items,
)
from candlewax.cli.flow import flow_command, flow_env
from candlewax.cli.parser import flag
from candlewax.errors import CandlewaxError
from candlewax.kafka import end_offsets
from candlewax.settings import Settings
from candlewax.topics import ALERTS, BARS, DEADLETTER, TRADES, ensure_topics

#: The demo's own defaults, under the file, the environment and the flags: two partitions (so
#: the flow's per-partition paths run) and topics that keep everything (a replay re-reads).
DEMO_DEFAULTS = {"partitions": 2, "retention_ms": -1}


@dataclass
class DemoPlan:
    """What the demo will run: settings, the market, and how to show it."""

    settings: Settings
    engine: str
    items: Items
    speed: float
    source: str
    metrics_port: int | None = None


@dataclass
class Demo:
    """Supervises the demo's parts; :meth:`run` returns the exit code."""

    plan: DemoPlan
    stop: threading.Event = field(default_factory=threading.Event)
    broker: EmbeddedBroker | None = None
    flow: subprocess.Popen[bytes] | None = None
    board: Any = None
    notifier: Any = None
    gateway: Any = None
    gateway_thread: threading.Thread | None = None
    published: list[Any] = field(default_factory=list)
    failed: list[BaseException] = field(default_factory=list)

    def run(self) -> int:
        try:
            return self._run()
        finally:
            self.close()

    def _run(self) -> int:
        from sinks.console import redraw, start_board

        plan = self.plan
        settings = self._start_broker(plan.settings)
        ensure_topics(settings)
        port = plan.metrics_port or free_port()
        connector_port = metrics.serve(settings.metrics_host, 0)
        self.notifier = self._start_notifier(settings)
        gateway_url = self._start_gateway(settings)
        header = self._header(settings, port, connector_port, gateway_url)
        publisher = threading.Thread(
            target=self._publish, args=(settings,), name="publisher", daemon=True
        )
        publisher.start()
        if settings.exit_when_done:
            # Finite input: publish everything first, so end-of-partition means end of input.
            while publisher.is_alive() and not self.stop.is_set():
                publisher.join(0.2)
            self._raise_first()
            if self.stop.is_set():
                return 130
        self.board = start_board(
            settings.connection,
            settings.topic(BARS),
            settings.topic(DEADLETTER),
            self.stop,
            trades_topic=settings.topic(TRADES),
            alerts_topic=settings.topic(ALERTS),
        )
        flow_settings = settings.replace(metrics_port=port)
        # Its own session: a terminal Ctrl-C reaches the demo, which then stops the flow itself.
        self.flow = subprocess.Popen(
            flow_command(flow_settings, os.environ),
            env=flow_env(flow_settings, os.environ),
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        while not self.stop.is_set() and self.flow.poll() is None:
            redraw(self.board.render(header))
            if self.stop.wait(1.0 if sys.stdout.isatty() else 5.0):
                break
        code = self.flow.poll()
        if code is None:  # we are stopping it: a live flow has no natural end
            self._stop_flow()
        elif code != 0:
            raise CandlewaxError(f"the bars flow exited with code {code} (see its log above)")
        if settings.exit_when_done:
            self._wait_for_bars(settings.data_dir, timeout_s=10)
            self._wait_for_notifier(settings, timeout_s=120)
        self._raise_first()
        redraw(self.board.render(header))
        if self.published:
            stats = self.published[0]
            print(
                f"published {stats.trades} trades ({stats.rejected} rejected); "
                f"bars in {settings.data_dir}"
            )
        return 0

    # ------------------------------------------------------------------ parts

    def _start_broker(self, settings: Settings) -> Settings:
        if settings.bootstrap_servers:
            wait_for_broker(settings.connection)
            return settings
        self.broker = EmbeddedBroker(self.plan.engine)
        return settings.replace(bootstrap_servers=self.broker.start())

    def _start_notifier(self, settings: Settings) -> Any:
        """With credentials in the environment (or a [candlewax.notify] table), the demo sends
        its alerts for real: a notifier thread from the first alert on."""
        from sinks.notify.notifier import Notifier

        group = f"candlewax-demo-{time.time_ns()}"
        notify = settings.notify.model_copy(update={"start": "earliest", "group_id": group})
        config = notify_config(settings.replace(notify=notify))
        if not config.destinations:
            return None
        notifier = Notifier(settings, config)
        notifier.start(self.stop)
        return notifier

    def _start_gateway(self, settings: Settings) -> str:
        """The market-data gateway and its chart page, in this process (uvicorn in a thread), on
        ``gateway.port`` or, when that is taken, a free port."""
        import uvicorn

        from sinks.gateway.server import config

        g = settings.gateway
        port = g.port if _port_free(g.host, g.port) else free_port()
        self.gateway = uvicorn.Server(config(settings.replace(gateway={**g.model_dump(), "port": port})))  # fmt: skip
        self.gateway_thread = threading.Thread(target=self.gateway.run, name="gateway", daemon=True)
        self.gateway_thread.start()
        return f"http://{g.host}:{port}/"

    def _publish(self, settings: Settings) -> None:
        try:
            self.published.append(publish(settings, self.plan.items, self.plan.speed, 0, 1, self.stop))  # fmt: skip
        except BaseException as exc:  # said in the main thread, never a thread traceback
            self.failed.append(exc)
            self.stop.set()

    def _header(self, settings: Settings, port: int, connector_port: int, chart: str) -> list[str]:
        embedded = f" (embedded {self.plan.engine})" if self.broker else ""
        notify = (
            "; ".join(self.notifier.config.describe())
            if self.notifier
            else "console only (set TELEGRAM_BOT_TOKEN + TELEGRAM_CHAT_ID or WECOM_WEBHOOK_KEY to send)"
        )
        return [
            f"candlewax {__version__} demo — {self.plan.source}",
            f"kafka: {settings.bootstrap_servers}{embedded}   parquet: {_shown(settings.data_dir)}",
            f"metrics: http://127.0.0.1:{port}/metrics (flow)  "
            f"http://{settings.metrics_host}:{connector_port}/metrics (market)   Ctrl-C to stop",
            f"notify: {notify}",
            f"chart: {chart}   streams: {chart.replace('http', 'ws', 1)}stream?streams=!ticker@arr",
        ]

    def _wait_for_bars(self, data_dir: Any, timeout_s: float) -> None:
        """After the flow exited, let the console catch up with the bars topic (bounded)."""
        from sinks.parquet import count_files

        files = count_files(data_dir / "bars")
        deadline = time.monotonic() + timeout_s
        while self.board.total() < files and time.monotonic() < deadline:
            time.sleep(0.1)

    def _wait_for_notifier(self, settings: Settings, timeout_s: float) -> None:
        """Every alert sent before the demo ends (bounded)."""
        if self.notifier is None:
            return
        ends = end_offsets(settings.connection, settings.topic(ALERTS))
        deadline = time.monotonic() + timeout_s
        while not self.notifier.caught_up(ends) and time.monotonic() < deadline:
            time.sleep(0.1)

    def _raise_first(self) -> None:
        if self.failed:
            exc = self.failed[0]
            if isinstance(exc, CandlewaxError):
                raise exc
            raise CandlewaxError(
                f"publishing the market failed: {type(exc).__name__}: {exc}"
            ) from exc

    def _stop_flow(self) -> None:
        if self.flow is not None and self.flow.poll() is None:
            self.flow.terminate()
            self.flow.wait(timeout=30)

    def close(self) -> None:
        """Stop every part: flow, console, notifier (it commits what it sent), then broker."""
        self.stop.set()
        self._stop_flow()
        if self.board is not None and self.board.thread is not None:
            self.board.thread.join(timeout=5)  # its consumer closes before the broker goes
        if self.notifier is not None and self.notifier.thread is not None:
            self.notifier.thread.join(timeout=30)
        if self.gateway is not None and self.gateway_thread is not None:
            self.gateway.should_exit = True
            self.gateway_thread.join(timeout=15)
        if self.broker is not None:
            self.broker.stop()


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _shown(data_dir: Any) -> str:
    return str(data_dir.resolve()) if isinstance(data_dir, Path) else str(data_dir)


def plan_from(args: argparse.Namespace) -> DemoPlan:
    """The command line → a plan (checks that fail before anything starts)."""
    from sinks.parquet import check_writable

    settings = settings_from(args, defaults=DEMO_DEFAULTS)
    check_writable(settings.data_dir)
    if args.replay:
        items = replay_items(args.replay, args.venue, None)
        speed = args.speed if args.speed is not None else 0.0
        source = f"replay of {args.replay}"
    else:
        paced = not settings.exit_when_done
        start_ms = int(time.time() * 1000)
        items = synthetic_items(args.symbols, args.seed, args.rate, start_ms, args.duration, paced)
        speed = 1.0 if paced else 0.0
        source = f"synthetic market, {args.symbols} symbols"
    return DemoPlan(settings, args.engine, items, speed, source, flag(args, "metrics_port"))


def cmd_demo(args: argparse.Namespace) -> int:
    if flag(args, "exit_when_done") and not args.replay and args.duration is None:
        print("candlewax: error: --exit-when-done needs --replay or --duration", file=sys.stderr)
        return 2
    plan = plan_from(args)
    stop = stop_on_signals()
    return Demo(plan, stop).run()
