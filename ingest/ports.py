"""The ingest stage's ports: a queue to receive from and a sink for table rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

Rows = dict[str, list[dict[str, object]]]

Decode = Callable[[str, str, str, datetime], tuple[str, Rows]]
"""(source, queue message id, body, received at) -> (dedup id, rows by table) for one queue message.

Pure. A body it cannot type becomes an `unknown_events` row; a known type with an invalid payload raises
`ingest.decode.PoisonMessageError` (the message stays on the queue and is dead-lettered after its receives).
"""


@dataclass(frozen=True)
class Received:
    message_id: str
    receipt: str
    body: str
    receive_count: int
    sent_at: datetime | None


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
