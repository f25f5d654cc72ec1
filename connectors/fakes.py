"""In-memory fakes behind the connectors' ports, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from connectors.directory import Snapshot
from connectors.ports import OutboxRecord, PendingMessage, Shopper, StoredResponse
from connectors.pricing import CatalogItem


class MemorySource:
    """A SnapshotSource whose contents a test sets directly."""

    def __init__(self) -> None:
        self.shoppers: dict[str, Shopper] = {}
        self.indebted: set[str] = set()
        self.items: list[tuple[CatalogItem, list[str]]] = []
        self._generation = 0

    def changed(self) -> None:
        self._generation += 1

    def generation(self) -> int:
        return self._generation

    def snapshot(self) -> Snapshot:
        return Snapshot.build(self._generation, self.shoppers.values(), self.indebted, self.items)


class MemoryOutbox:
    """Implements `Outbox` and `OutboxQueue` in memory; `fail` makes commits raise like a broken disk."""

    def __init__(self) -> None:
        self.responses: dict[tuple[str, str], StoredResponse] = {}
        self.messages: list[PendingMessage] = []
        self.sent: set[int] = set()
        self.fail: Exception | None = None

    def lookup(self, route: str, key: str) -> StoredResponse | None:
        return self.responses.get((route, key))

    async def commit(
        self, route: str, key: str, response: StoredResponse, records: Sequence[OutboxRecord]
    ) -> StoredResponse:
        if self.fail is not None:
            raise self.fail
        existing = self.responses.get((route, key))
        if existing is not None:
            return existing
        self.responses[(route, key)] = response
        for record in records:
            self.messages.append(PendingMessage(len(self.messages) + 1, record.message_id, record.body))
        return response

    def pending(self, limit: int) -> list[PendingMessage]:
        return [m for m in self.messages if m.seq not in self.sent][:limit]

    def mark_sent(self, seqs: Sequence[int]) -> None:
        self.sent.update(seqs)

    def stats(self, now: datetime) -> tuple[int, float]:
        return len(self.messages) - len(self.sent), 0.0


class MemoryPublisher:
    """Implements `QueuePublisher`; `down` makes every send raise, `accept` limits what is accepted."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.down: Exception | None = None

    async def send_batch(self, messages: Sequence[PendingMessage]) -> list[int]:
        if self.down is not None:
            raise self.down
        self.bodies.extend(m.body for m in messages)
        return [m.seq for m in messages]
