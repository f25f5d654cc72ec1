"""The ingest stage's ports: a queue to receive from and a sink for table rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

Rows = dict[str, list[dict[str, object]]]

TableRows = dict[str, Sequence[Mapping[str, object]]]
"""Rows by table name, as a `TableSink` takes them (a table's rows may be `contracts.arrow_rows.ArrowRows`)."""


class PoisonMessageError(ValueError):
    """A message of a known type whose payload does not fit its schema: it is retried, then dead-lettered."""


Decode = Callable[[str, str, str, datetime], tuple[str, Rows]]
"""(source, queue message id, body, received at) -> (dedup id, rows by table) for one queue message.

Pure. A body it cannot type becomes an `unknown_events` row; a known type with an invalid payload raises
PoisonMessageError (the message stays on the queue and is dead-lettered after its receives).
"""


@dataclass(frozen=True)
class Received:
    message_id: str
    receipt: str
    body: str
    receive_count: int
    sent_at: datetime | None


@dataclass(frozen=True)
class Decoded:
    """What a batch of queue messages lands as."""

    rows: TableRows
    """Rows by table, in message order, of the first message of each dedup id (a redelivery in the same batch
    adds nothing)."""
    outcomes: list[str | PoisonMessageError]
    """Per message, in order: its dedup id, or why it is poison."""


DecodeBatch = Callable[[str, Sequence[Received], datetime], Decoded]
"""(source, messages, received at) -> what they land as. Pure; message by message the same outcome as a
`Decode` (`ingest.decode.one_at_a_time` makes one of a `Decode`)."""


class QueueReceiver(Protocol):
    async def receive(self, max_messages: int, wait_seconds: int) -> list[Received]: ...
    async def delete(self, messages: Sequence[Received]) -> None: ...
    async def extend(self, messages: Sequence[Received], seconds: int) -> None: ...


class RowsRejectedError(Exception):
    """The sink refuses these rows for good (a value does not fit its table): writing them again fails the same way.

    Any other exception from `write` is taken as transient (retry later).
    """


class TableSink(Protocol):
    """Durable when `write` returns: rows are published (e.g. Parquet files renamed into place).

    Raises RowsRejectedError when rows can never be written, having published none of them.
    """

    def write(self, rows: Mapping[str, Sequence[Mapping[str, object]]], batch_id: str) -> None: ...


@runtime_checkable
class StagingSink(TableSink, Protocol):
    """A TableSink that can start writing a table's rows before the batch that publishes them is written: `stage`
    gives a context whose value stands for the rows in a later `write` (which only then publishes them); leaving
    the context discards what was not published. Raises RowsRejectedError at once when a row does not fit."""

    def stage(
        self, table: str, rows: Sequence[Mapping[str, object]]
    ) -> AbstractContextManager[Sequence[Mapping[str, object]]]: ...


@dataclass(frozen=True)
class StoredObject:
    """A report file as read from its store: its bytes, its ETag (no quotes) and when it was last modified."""

    content: bytes
    etag: str
    last_modified: datetime | None


class ObjectSupersededError(Exception):
    """The object under this key no longer has the ETag asked for: a newer version replaced it (and has its
    own notification), so this version cannot be read any more."""


class ReportStore(Protocol):
    """Where Amazon's report files are (S3). `get` raises ObjectSupersededError when `etag` is given and the
    object has another one now; any other exception is transient (the message is retried)."""

    async def get(self, bucket: str, key: str, etag: str | None = None) -> StoredObject: ...

    async def list(self, bucket: str, prefix: str) -> list[str]: ...


class RawLanding(Protocol):
    """Keeps a file's raw bytes, content-addressed, so a day can be replayed. Durable when `keep` returns."""

    def keep(self, content: bytes, sha256: str) -> None: ...
