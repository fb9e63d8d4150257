"""``candlewax flow``: check everything, then become ``python -m bytewax.run`` with the settings
handed down whole (one JSON environment variable, :data:`candlewax.settings.SETTINGS_ENV`).

One process or one process of a cluster: its id and the peers' addresses come from
``-i``/``-a``, the ``cluster`` settings, or the StatefulSet it runs in (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from candlewax.cli.common import require_broker, settings_from
from candlewax.errors import ConfigError
from candlewax.settings import SETTINGS_ENV, Settings
from candlewax.topics import ensure_topics

log = logging.getLogger("candlewax")

#: Where ``flows/`` and ``sinks/`` live: the flow imports them even without an install.
_ROOT = str(Path(__file__).resolve().parents[2])


def flow_command(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """``python -m bytewax.run`` for this process of the cluster ``settings`` describe."""
    cluster, recovery = settings.cluster, settings.recovery
    process_id, addresses = cluster.resolve(env)
    cmd = [sys.executable, "-m", "bytewax.run", "flows.bars:build()", "-w", str(cluster.workers)]
    if addresses:
        cmd += ["-i", str(process_id), "-a", ";".join(addresses)]
    if recovery.directory is not None:
        cmd += ["-r", str(recovery.directory), "-s", str(recovery.snapshot_s)]
        cmd += ["-b", str(recovery.backup_s)]
    return cmd


def flow_env(settings: Settings, env: Mapping[str, str]) -> dict[str, str]:
    """The child's environment: this one, the settings whole, Bytewax's own API on request."""
    out = {k: v for k, v in env.items() if not k.startswith("BYTEWAX_")}
    out[SETTINGS_ENV] = settings.to_json()
    out["CANDLEWAX_LOG_LEVEL"] = logging.getLevelName(logging.getLogger().level)
    if settings.cluster.bytewax_api_port is not None:  # binds 0.0.0.0: opt-in
        out["BYTEWAX_DATAFLOW_API_ENABLED"] = "1"
        out["BYTEWAX_DATAFLOW_API_PORT"] = str(settings.cluster.bytewax_api_port)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH", "")) if p)
    return out


def check_recovery(settings: Settings, env: Mapping[str, str]) -> None:
    """A store is there, and was last run by as many workers as this cluster has: each
    partition's state key depends on the worker count (flows/routing.py)."""
    from flows.recovery import parts, written_by

    directory = settings.recovery.directory
    if directory is None:
        return
    if not (directory.is_dir() and parts(directory)):
        raise ConfigError(
            f"no recovery store in {directory}: create it once with "
            f"`candlewax recovery init {directory}` (docs/recovery.md)"
        )
    workers = settings.cluster.total_workers(env)
    before = written_by(directory)
    if before is not None and before != workers:
        raise ConfigError(
            f"the recovery store in {directory} was last run by {before} workers in all, this "
            f"cluster has {workers} (processes × --workers): resume it with {before}, or start "
            "over with new, empty stores (the flow then reads trades from the beginning)"
        )


def cmd_flow(args: argparse.Namespace) -> int:
    from sinks.parquet import check_writable

    settings = settings_from(args)  # bad rules, properties, cluster settings fail here
    cmd = flow_command(settings, os.environ)
    check_recovery(settings, os.environ)
    check_writable(settings.data_dir)  # at start, not at the first Parquet write
    settings = require_broker(settings)
    ensure_topics(settings)
    log.info("running the bars flow: %s", " ".join(cmd[1:]))
    if settings.metrics_port:
        print(
            f"metrics: http://{settings.metrics_host}:{settings.metrics_port}/metrics", flush=True
        )
    os.execve(sys.executable, cmd, flow_env(settings, os.environ))
    return 0  # pragma: no cover - exec does not return
