"""The flow's crash-recovery store: Bytewax's SQLite partitions, created once per deployment.

Bytewax keeps each stateful step's snapshots in ``part-<i>.sqlite3`` files; on resume the
**cluster** must see every partition exactly once, spread over its processes' recovery
directories in any way (each process opens the partitions in its own directory). candlewax
supports two arrangements (docs/recovery.md):

- one directory every process sees (a single machine, or a ReadWriteMany volume): create all
  partitions there;
- one directory per process (a StatefulSet's own volume per pod): process ``i`` keeps only
  partition ``i`` of ``N`` — ``candlewax recovery init DIR --partitions N --only i``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import tempfile
from pathlib import Path

from candlewax.errors import ConfigError

_PART = re.compile(r"part-(\d+)\.sqlite3")


def parts(directory: Path) -> dict[int, Path]:
    """The partitions in ``directory``, by index."""
    found = {}
    for path in directory.glob("part-*.sqlite3"):
        m = _PART.fullmatch(path.name)
        if m:
            found[int(m.group(1))] = path
    return dict(sorted(found.items()))


def _read_only(path: Path) -> contextlib.closing[sqlite3.Connection]:
    """A partition opened to read, immutable: no -wal/-shm files created beside a WAL database."""
    return contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True))


def partition_count(path: Path) -> int:
    """How many partitions the store this file belongs to has (Bytewax writes it in each)."""
    with _read_only(path) as db:
        row = db.execute("SELECT part_count FROM parts").fetchone()
    return int(row[0])


def written_by(directory: Path) -> int | None:
    """How many workers the last run on this store had (None: no run yet). Bytewax records it
    per execution in every partition; candlewax's state keys depend on it (flows/routing.py)."""
    newest: tuple[int, int] | None = None
    for path in parts(directory).values():
        with _read_only(path) as db:
            try:
                row = db.execute(
                    "SELECT ex_num, worker_count FROM exs ORDER BY ex_num DESC LIMIT 1"
                ).fetchone()
            except sqlite3.DatabaseError:  # not Bytewax's schema: Bytewax will say so
                continue
        if row is not None and (newest is None or row[0] > newest[0]):
            newest = (int(row[0]), int(row[1]))
    return None if newest is None else newest[1]


def init_store(directory: Path, count: int, only: int | None = None) -> str:
    """Create the store (idempotent: an existing matching one is left as it is); returns what
    happened, in one line. ``only``: keep just that partition here (one directory per process).
    """
    from bytewax.recovery import init_db_dir

    if count < 1 or (only is not None and not 0 <= only < count):
        raise ConfigError(f"--partitions must be >= 1 and --only in [0, {count}) (got {only})")
    wanted = {only} if only is not None else set(range(count))
    existing = parts(directory) if directory.is_dir() else {}
    if existing:
        counts = {partition_count(p) for p in existing.values()}
        if set(existing) != wanted or counts != {count}:
            raise ConfigError(
                f"{directory} already holds recovery partitions {sorted(existing)} of a store of "
                f"{sorted(counts)}, not {sorted(wanted)} of {count}; use another directory, or "
                "delete it to start over (the flow then reads its input from the beginning)"
            )
        return f"{directory}: recovery partitions {sorted(existing)} of {count} already there"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=directory, prefix=".init-") as tmp:
            init_db_dir(Path(tmp), count)
            for index in sorted(wanted):
                shutil.move(
                    Path(tmp) / f"part-{index}.sqlite3", directory / f"part-{index}.sqlite3"
                )
    except OSError as exc:
        raise ConfigError(
            f"cannot create the recovery store in {directory}: {exc.strerror or exc}; "
            "choose another directory"
        ) from None
    return f"{directory}: recovery partitions {sorted(wanted)} of {count} created"
