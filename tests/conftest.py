"""Shared fixtures: the recorded fixtures' location, and one embedded broker per engine per
session (``CANDLEWAX_TEST_BROKERS``, default ``tansu,noida``), each test isolated by its own
topic prefix."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from candlewax.broker import EmbeddedBroker
from candlewax.settings import Settings
from candlewax.topics import ensure_topics

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
BTCUSDT_GZ = FIXTURES / "hftbacktest" / "spot_btcusdt_20240808.gz"
ENGINES = [
    e.strip()
    for e in os.environ.get("CANDLEWAX_TEST_BROKERS", "tansu,noida").split(",")
    if e.strip()
]


def pytest_configure(config: pytest.Config) -> None:
    if not FIXTURES.is_dir():
        raise pytest.UsageError(f"recorded fixtures not found at {FIXTURES} (../shared/fixtures)")


@pytest.fixture(scope="session", params=ENGINES)
def broker(request: pytest.FixtureRequest) -> Iterator[EmbeddedBroker]:
    """A fresh embedded broker on a free port, shared by the session, once per engine."""
    with EmbeddedBroker(request.param) as running:
        yield running


@pytest.fixture
def settings(broker: EmbeddedBroker, tmp_path: Path) -> Settings:
    """Settings with topics of this test only (unique prefix), created, kept forever."""
    s = Settings(
        bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        partitions=2,
        retention_ms=-1,
        data_dir=tmp_path / "data",
        exit_when_done=True,
    )
    ensure_topics(s)
    return s
