"""The gateway's settings (``candlewax serve``, docs/gateway.md), as the ``[candlewax.gateway]``
TOML table or ``CANDLEWAX_GATEWAY__*`` variables.

The limits default to Binance's public streams: 1024 streams per connection, 5 incoming
messages per second, a ping every 20 s answered within 60 s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from candlewax.settings.types import CommaList, Port

_VENUE = r"^[a-z0-9][a-z0-9._-]{0,31}$"


class GatewaySettings(BaseModel):
    """``[candlewax.gateway]``: where ``candlewax serve`` listens and the limits it keeps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Address and port of the WebSocket, REST and page server (and its /metrics).
    host: str = "127.0.0.1"
    port: Port = 8080
    #: Channels may leave out this venue: ``btcusdt@kline_1m`` is ``binance:btcusdt@kline_1m``.
    default_venue: Annotated[str, Field(pattern=_VENUE)] | None = "binance"
    #: Streams one connection may hold (Binance: 1024).
    max_streams: PositiveInt = 1024
    #: Incoming messages per second a connection may send; over it, it is closed (Binance: 5).
    max_incoming_per_s: PositiveInt = 5
    #: Open connections at most; more are refused at the handshake.
    max_connections: PositiveInt = 10_000
    #: Largest incoming WebSocket message, in bytes.
    max_message_bytes: PositiveInt = 65_536
    #: Server pings every this many seconds; no pong within ping_timeout_s closes (Binance 20/60).
    ping_interval_s: PositiveFloat = 20.0
    ping_timeout_s: PositiveFloat = 60.0
    #: A forming bar and a ticker go out at most this often per channel.
    push_interval_ms: Annotated[int, Field(ge=50, le=60_000)] = 1000
    #: Messages a client may have waiting; a trade, alert or user stream client further behind is
    #: disconnected (klines and tickers replace their own unsent values and never pile up).
    queue_size: PositiveInt = 2_000
    #: Most rows /api/v3/klines answers (Binance: default 500, at most 1000).
    klines_limit_default: PositiveInt = 500
    klines_limit_max: PositiveInt = 1000
    #: Alerts kept in memory for /api/v1/alerts and for new subscribers.
    alerts_kept: PositiveInt = 10_000
    #: At start, how many of the newest messages of each ``bars`` / ``alerts`` partition to read
    #: again (the bars the Parquet files may not hold yet, the alerts of /api/v1/alerts).
    backfill_messages: Annotated[int, Field(ge=0)] = 20_000
    #: Browser origins allowed to open a WebSocket (``https://app.example.com``); a request with
    #: an ``Origin`` not listed is refused. ``"*"`` allows any. Empty: same-origin pages only.
    allowed_origins: CommaList = ()
    #: API keys of the private ``user`` stream: a file of ``key_id = "sha256:<hex of secret>"``
    #: lines (docs/gateway.md, "Private streams"); none: private streams are off.
    keys_file: Path | None = None
    #: A login's timestamp may differ from the server's clock by at most this much.
    login_window_ms: Annotated[int, Field(ge=1000, le=600_000)] = 10_000
