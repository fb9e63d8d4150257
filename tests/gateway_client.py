"""The gateway in tests: the real app on uvicorn in a thread on 127.0.0.1, and a small WebSocket
reader that waits for conditions with a deadline (never a fixed sleep)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import uvicorn
from websockets.sync.client import ClientConnection, connect

from candlewax.settings import Settings
from sinks.gateway.server import config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_gateway(
    settings: Settings, feed: bool = True, port: int | None = None, **gateway: Any
) -> Iterator[str]:
    """The gateway of ``settings`` (``gateway``: settings of [gateway] to change; ``feed=False``:
    no Kafka; ``port``: default a free one) until the block ends; yields its base URL once
    /healthz answers 200."""
    port = port or free_port()
    values = {**settings.gateway.model_dump(), "port": port, **gateway}
    settings = settings.replace(gateway=values)
    server = uvicorn.Server(config(settings, feed))
    thread = threading.Thread(target=server.run, name="test-gateway", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise TimeoutError("the gateway did not become healthy")
            time.sleep(0.05)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=15)


class Reader:
    """A WebSocket client that keeps every message it has read."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.ws: ClientConnection = connect(url, open_timeout=10, **kwargs).__enter__()
        self.messages: list[Any] = []

    def send(self, obj: Any) -> None:
        self.ws.send(orjson.dumps(obj).decode())

    def wait(self, done: Callable[[list[Any]], Any], timeout_s: float = 30.0) -> Any:
        """Read until ``done(messages)`` is truthy; return it (TimeoutError after the deadline)."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = done(self.messages)
            if got:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"condition not met; {len(self.messages)} messages, the last: {repr(self.messages[-1:])[:300]}"
                )
            try:
                self.messages.append(orjson.loads(self.ws.recv(timeout=min(left, 1.0))))
            except TimeoutError:
                continue

    @staticmethod
    def poll(done: Callable[[None], Any], timeout_s: float = 30.0) -> Any:
        """Call ``done(None)`` until it is truthy (an HTTP answer, say); return it."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = done(None)
            if got:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met")
            time.sleep(0.05)

    def reply(self, rid: Any, timeout_s: float = 10.0) -> Any:
        return self.wait(lambda ms: next((m for m in ms if isinstance(m, dict) and m.get("id") == rid and ("result" in m or "error" in m)), None), timeout_s)  # fmt: skip

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
