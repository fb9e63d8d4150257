"""Where a flow process stands in a Bytewax cluster, and where its recovery store is.

A cluster is N processes × W worker threads, all running the same dataflow; every process
knows every process's address (Bytewax's ``-a "h0:p;h1:p"``) and its own index (``-i``).
They come from flags or settings; on Kubernetes from the StatefulSet instead, the way Bytewax's
own Helm chart derives them: the pod's ordinal (``flow-2`` → 2) is the process id, and the peers
are ``<statefulset>-<i>.<headless service domain>:<port>`` for i < replicas. docs/deploy.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, NonNegativeInt, PositiveInt
from pydantic_settings import NoDecode

from candlewax.errors import ConfigError
from candlewax.settings.types import Port

_ADDRESS = re.compile(r"[A-Za-z0-9.-]{1,253}:\d{1,5}")
_POD = re.compile(r"(?P<set>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-(?P<ordinal>\d+)")


def _addresses(value: Any) -> Any:
    """``"h0:3030;h1:3030"`` (Bytewax's form; commas work too) or a list."""
    if isinstance(value, str):
        value = [a.strip() for a in re.split(r"[;,]", value) if a.strip()]
    if isinstance(value, list | tuple):
        bad = [a for a in value if not (isinstance(a, str) and _ADDRESS.fullmatch(a))]
        if bad:
            raise ValueError(f"{bad[:3]} are not host:port addresses")
    return value


class ClusterSettings(BaseModel):
    """``[candlewax.cluster]``; flags ``-w``, ``-i``, ``-a`` of ``candlewax flow``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Worker threads per process.
    workers: PositiveInt = 1
    #: This process's index; None: the StatefulSet pod ordinal when ``replicas`` is set, else 0.
    process_id: NonNegativeInt | None = None
    #: Every process's host:port, in process-id order; empty with one process.
    addresses: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_addresses)] = ()
    #: On Kubernetes: the StatefulSet's replicas, its headless Service's domain
    #: (``candlewax-flow.candlewax.svc.cluster.local``) and the port the processes talk on.
    replicas: PositiveInt | None = None
    peer_domain: str = ""
    port: Port = 3030
    #: This pod's name (``candlewax-flow-2``); default $HOSTNAME, which Kubernetes sets to it.
    pod_name: str = ""
    #: Also serve Bytewax's own API and bytewax_* metrics here (it binds all interfaces).
    bytewax_api_port: Port | None = None

    def resolve(self, env: Mapping[str, str]) -> tuple[int, tuple[str, ...]]:
        """(process id, addresses) of this process: as given, else derived from the pod."""
        if self.addresses:
            pid = self.process_id or 0
            if pid >= len(self.addresses):
                raise ConfigError(
                    f"invalid settings: cluster.process_id {pid} is not below the "
                    f"{len(self.addresses)} cluster.addresses"
                )
            return pid, self.addresses
        if self.replicas is None or (self.replicas == 1 and not self.peer_domain):
            if self.process_id:
                raise ConfigError(
                    "invalid settings: cluster.process_id without cluster.addresses (or "
                    "cluster.replicas on Kubernetes): where are the other processes?"
                )
            return 0, ()
        pod = self.pod_name or env.get("HOSTNAME", "")
        m = _POD.fullmatch(pod)
        if m is None:
            raise ConfigError(
                f"invalid settings: cluster.replicas is set but the pod name {pod!r} is not "
                "<statefulset>-<ordinal>: run the flow as a StatefulSet (or set cluster.addresses)"
            )
        if not self.peer_domain:
            raise ConfigError(
                "invalid settings: cluster.replicas needs cluster.peer_domain, the headless "
                "Service's domain, e.g. candlewax-flow.candlewax.svc.cluster.local"
            )
        pid = int(m["ordinal"]) if self.process_id is None else self.process_id
        if pid >= self.replicas:
            raise ConfigError(
                f"invalid settings: pod {pod} has ordinal {pid} but cluster.replicas is "
                f"{self.replicas}: scale the StatefulSet and cluster.replicas together"
            )
        peers = tuple(
            f"{m['set']}-{i}.{self.peer_domain}:{self.port}" for i in range(self.replicas)
        )
        return pid, peers

    def total_workers(self, env: Mapping[str, str]) -> int:
        """Worker threads of the whole cluster: processes × ``workers``."""
        return self.workers * max(1, len(self.resolve(env)[1]))


class RecoverySettings(BaseModel):
    """``[candlewax.recovery]``; flags ``-r``, ``-s``, ``-b`` of ``candlewax flow``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The recovery store (``candlewax recovery init DIR``); None: no recovery. Every process
    #: of a cluster must see every partition of it: a shared volume, docs/recovery.md.
    directory: Path | None = None
    snapshot_s: PositiveInt = 10
    backup_s: NonNegativeInt = 0
