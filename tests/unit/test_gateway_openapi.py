"""schemathesis against the gateway's own OpenAPI document, over HTTP to the real app on
uvicorn, with the flow's Parquet bars of the BTCUSDT capture under its data directory: every
answer must match the document (status, content type, body schema) and none may be a 5xx."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from candlewax.codec import Bar
from candlewax.settings import Settings
from connectors.replay import iter_file
from sinks.parquet import write_bar_window
from tests.conftest import BTCUSDT_GZ
from tests.gateway_client import running_gateway
from tests.reference import reference_bars


def _write_capture_bars(data_dir: Path) -> None:
    trades = [t for item in iter_file(BTCUSDT_GZ) for t in item.trades]
    for interval in ("1m", "5m"):
        for bar in reference_bars(trades, interval):
            wire = Bar(**{k: (str(v) if k in Bar.__dataclass_fields__ and not isinstance(v, int | None) else v) for k, v in bar.items()})  # fmt: skip
            write_bar_window(data_dir, interval, 0, wire.start_ms, [wire.to_dict()])


def test_the_rest_api_keeps_its_document(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_capture_bars(data)
    with running_gateway(Settings(data_dir=data), feed=False) as base:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 4
        for operation in operations:
            # Negative requests need a parameter to break (markets and healthz have none).
            modes = [GenerationMode.POSITIVE] + [GenerationMode.NEGATIVE] * bool(operation.query)
            for mode in modes:

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
                def check(case: schemathesis.Case) -> None:
                    case.call_and_validate()

                check()
        # Random symbols find no bars: the capture's symbol answers with its own, validated.
        klines = next(op for op in operations if op.path == "/api/v3/klines")
        case = klines.Case(query={"symbol": "binance:BTCUSDT", "interval": "1m", "limit": 5})
        rows = case.call_and_validate().json()
        assert [r[0] for r in rows] == [1723161600000 - 60_000 * i for i in range(4, -1, -1)], rows
