"""Where Parquet goes: a local directory, or an object store — ``s3://bucket/prefix``,
``gs://bucket/prefix``, ``az://container/prefix`` — through pyarrow's filesystems (already a
dependency; the same C++ clients Arrow, Polars and DuckDB users know).

:class:`ObjectPath` is the part of :class:`pathlib.Path` the sinks use (``/``, ``write_bytes``,
``rglob``...), so a sink writes the same layout, under the same deterministic names, to either.
An object is visible only when complete: each file is one PUT (or a multipart upload, which the
store shows only once completed), never appended to. Credentials come the usual way of each
store — for S3 ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (or ``AWS_SHARED_CREDENTIALS_FILE``,
an instance or pod role), ``AWS_REGION``, and ``AWS_ENDPOINT_URL`` for MinIO and other S3 APIs —
and never pass through the settings or the logs. docs/deploy.md.
"""

from __future__ import annotations

import fnmatch
import functools
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from candlewax.errors import ConfigError

#: The object stores pyarrow reaches (``az://`` and ``abfs://`` are Azure Blob / ADLS Gen2).
SCHEMES = ("s3", "gs", "az", "abfs")
_URI = re.compile(r"(?P<scheme>[a-z0-9]+)://(?P<bucket>[^/?#]+)(?P<key>/[^?#]*)?")


@functools.cache
def _filesystem(scheme: str, bucket: str) -> pafs.FileSystem:
    """One client per bucket per process (pyarrow reads credentials when it is made)."""
    uri = f"{scheme}://{bucket}"
    if scheme in ("az", "abfs"):
        account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") or os.environ.get(
            "AZURE_STORAGE_ACCOUNT"
        )
        if not account:
            raise ConfigError(f"{uri}: set AZURE_STORAGE_ACCOUNT_NAME (and a key or identity)")
        return pafs.AzureFileSystem(account_name=account)
    try:
        fs, _ = pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot open {uri}: {exc}") from None
    return fs


class ObjectPath:
    """A file or "directory" (key prefix) in an object store, with Path's methods the sinks use."""

    __slots__ = ("bucket", "key", "scheme")

    def __init__(self, scheme: str, bucket: str, key: str = "") -> None:
        self.scheme, self.bucket, self.key = scheme, bucket, key.strip("/")

    @classmethod
    def parse(cls, text: str) -> ObjectPath:
        m = _URI.fullmatch(text.strip())
        if m is None or m["scheme"] not in SCHEMES:
            raise ValueError(
                f"{text[:80]!r} is not an object store URI: use {', '.join(s + '://bucket/prefix' for s in SCHEMES)}"
            )
        key = m["key"] or ""
        if any(part in (".", "..") for part in key.split("/")):
            raise ValueError(f"{text[:80]!r}: '.' and '..' are not object keys")
        return cls(m["scheme"], m["bucket"], key)

    # ------------------------------------------------------------------ path algebra

    def __truediv__(self, part: str) -> ObjectPath:
        return ObjectPath(self.scheme, self.bucket, f"{self.key}/{part}".strip("/"))

    def joinpath(self, *parts: str) -> ObjectPath:
        out = self
        for part in parts:
            out = out / part
        return out

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(self.scheme, self.bucket, self.key.rsplit("/", 1)[0] if "/" in self.key else "")  # fmt: skip

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}".rstrip("/")

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and str(self) == str(other)

    def __lt__(self, other: ObjectPath) -> bool:
        return str(self) < str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def resolve(self) -> ObjectPath:
        return self

    # ------------------------------------------------------------------ I/O

    @property
    def _fs(self) -> pafs.FileSystem:
        return _filesystem(self.scheme, self.bucket)

    @property
    def _path(self) -> str:
        return f"{self.bucket}/{self.key}".rstrip("/")

    def write_bytes(self, data: bytes) -> int:
        """One object, whole: nothing is visible under its name until the upload completes."""
        with self._fs.open_output_stream(self._path) as out:
            out.write(data)
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def read_bytes(self) -> bytes:
        with self._fs.open_input_stream(self._path) as stream:
            return bytes(stream.read())

    def _info(self) -> pafs.FileInfo:
        return self._fs.get_file_info(self._path)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory or not self.key

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        """Nothing to do: a key prefix exists once an object is written under it."""

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self._fs.delete_file(self._path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def _files(self) -> Iterator[ObjectPath]:
        selector = pafs.FileSelector(self._path, recursive=True, allow_not_found=True)
        for info in self._fs.get_file_info(selector):
            if info.type == pafs.FileType.File:
                _, key = info.path.split("/", 1)
                yield ObjectPath(self.scheme, self.bucket, key)

    def rglob(self, pattern: str) -> Iterator[ObjectPath]:
        """Files under this prefix whose name matches ``pattern`` (``*.parquet``)."""
        return (p for p in self._files() if fnmatch.fnmatchcase(p.name, pattern))

    def glob(self, pattern: str) -> Iterator[ObjectPath]:
        """Files matching ``pattern`` relative to this prefix, ``*`` within one component."""
        depth = pattern.count("/") + 1
        for p in self._files():
            rel = p.key[len(self.key) :].lstrip("/") if self.key else p.key
            if rel.count("/") + 1 == depth and fnmatch.fnmatchcase(rel, pattern):
                yield p


#: A data directory: a local folder or an object store prefix.
DataPath = Path | ObjectPath


def data_path(value: Any) -> DataPath:
    """``s3://bucket/prefix`` (and gs://, az://) → ObjectPath; anything else → a local Path.
    A URI of another scheme is refused, not taken as a folder named ``scheme:``."""
    if isinstance(value, Path | ObjectPath):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a path or an object store URI")
    if "://" in value:
        return ObjectPath.parse(value)
    return Path(value)


def scan_parquet(files: list[Any]) -> Any:
    """A Polars LazyFrame over Parquet files, local or in an object store (read through the
    same pyarrow client that wrote them, so the same credentials apply)."""
    import polars as pl

    local = [str(f) for f in files if isinstance(f, Path)]
    remote = [f for f in files if isinstance(f, ObjectPath)]
    frames = [pl.scan_parquet(local, hive_partitioning=False)] if local else []
    frames += [pl.read_parquet(io.BytesIO(f.read_bytes()), hive_partitioning=False).lazy() for f in remote]  # fmt: skip
    return pl.concat(frames, how="vertical") if frames else pl.LazyFrame()
