"""Running the gateway app: uvicorn, one process, its WebSocket limits taken from the settings.

Why uvicorn: docs/gateway.md ("Server") has the fan-out measured on this project's machines
(``python -m bench.servers``) for uvicorn, granian and the ``websockets`` library's own server.
Scale is by replicas (stateless), not by workers in one pod.
"""

from __future__ import annotations

import logging

import uvicorn

from candlewax.errors import ConfigError
from candlewax.settings import Settings
from sinks.gateway.app import create_app

log = logging.getLogger(__name__)
#: uvicorn's WebSocket protocol: the ``websockets`` library's sans-I/O core.
WS_PROTOCOL = "websockets-sansio"


def config(settings: Settings, feed: bool = True) -> uvicorn.Config:
    """uvicorn's configuration of the gateway (``feed=False``: no Kafka reader)."""
    g = settings.gateway
    return uvicorn.Config(
        create_app(settings, feed),
        host=g.host,
        port=g.port,
        ws=WS_PROTOCOL,
        ws_max_size=g.max_message_bytes,
        ws_ping_interval=g.ping_interval_s,
        ws_ping_timeout=g.ping_timeout_s,
        ws_per_message_deflate=False,
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
    )


def run(settings: Settings) -> None:
    g = settings.gateway
    server = uvicorn.Server(config(settings))
    print(f"gateway: chart http://{g.host}:{g.port}/  streams ws://{g.host}:{g.port}/stream?streams=…", flush=True)  # fmt: skip
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits 1 when it cannot bind
        raise ConfigError(
            f"the gateway cannot listen on {g.host}:{g.port} (in use?): choose another with --port "
            "or CANDLEWAX_GATEWAY__PORT"
        ) from exc
