"""In-memory fakes behind the connectors' ports, for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Literal

from connectors.directory import Snapshot
from connectors.ports import BadDebt, OutboxRecord, PendingMessage, Sent, Shopper, StoredResponse
from connectors.pricing import CatalogItem


class MemorySource:
    """Implements `SnapshotSource` and `RetailerAdmin` in memory, like `SqliteRetailerStore`.

    Tests may also set `shoppers`, `indebted` and `items` directly and call `changed()`.
    """

    def __init__(self) -> None:
        self.shoppers: dict[str, Shopper] = {}
        """By identity key."""
        self.indebted: set[str] = set()
        """Shopper ids refused for a debt, besides those with an open debt in `bad_debts`."""
        self.items: list[tuple[CatalogItem, list[str]]] = []
        self.bad_debts: dict[str, BadDebt] = {}
        """By shopping trip (a trip has at most one debt)."""
        self._generation = 0

    def changed(self) -> None:
        self._generation += 1

    def generation(self) -> int:
        return self._generation

    def snapshot(self) -> Snapshot:
        indebted = self.indebted | {d.shopper_id for d in self.bad_debts.values() if d.status == "OPEN"}
        return Snapshot.build(self._generation, self.shoppers.values(), indebted, self.items)

    # -- RetailerAdmin ----------------------------------------------------------------------------

    def upsert_shoppers(self, shoppers: Sequence[Shopper]) -> int:
        for shopper in shoppers:
            for key, existing in list(self.shoppers.items()):
                if existing.shopper_id == shopper.shopper_id or key == shopper.identity_key:
                    del self.shoppers[key]
            self.shoppers[shopper.identity_key] = shopper
        self.changed()
        return len(shoppers)

    def upsert_catalog(self, items: Sequence[tuple[CatalogItem, Sequence[str]]]) -> int:
        for item, barcodes in items:
            self.items = [(i, b) for i, b in self.items if (i.store_id, i.sku) != (item.store_id, item.sku)]
            self.items.append((item, list(barcodes)))
        self.changed()
        return len(items)

    def get_shopper(self, shopper_id: str) -> Shopper | None:
        return next((s for s in self.shoppers.values() if s.shopper_id == shopper_id), None)

    def set_status(self, shopper_id: str, status: Literal["active", "blocked"]) -> bool:
        shopper = self.get_shopper(shopper_id)
        if shopper is None:
            return False
        self.shoppers[shopper.identity_key] = replace(shopper, status=status)
        self.changed()
        return True

    def open_debt(self, debt: BadDebt) -> bool:
        return self.open_debts([debt]) == 1

    def close_debt(self, shopping_trip_id: str, status: Literal["SETTLED", "WRITTEN_OFF"], at: datetime) -> bool:
        return self.close_debts([shopping_trip_id], status, at) == 1

    def open_debts(self, debts: Sequence[BadDebt]) -> int:
        new = 0
        for debt in debts:
            if debt.shopping_trip_id not in self.bad_debts:
                self.bad_debts[debt.shopping_trip_id] = replace(debt, status="OPEN", settled_at=None)
                new += 1
        if new:
            self.changed()
        return new

    def close_debts(
        self, shopping_trip_ids: Sequence[str], status: Literal["SETTLED", "WRITTEN_OFF"], at: datetime
    ) -> int:
        closed = 0
        for trip in shopping_trip_ids:
            debt = self.bad_debts.get(trip)
            if debt is not None and debt.status == "OPEN":
                self.bad_debts[trip] = replace(debt, status=status, settled_at=at)
                closed += 1
        if closed:
            self.changed()
        return closed

    def debts(self, shopper_id: str | None = None) -> list[BadDebt]:
        found = [d for d in self.bad_debts.values() if shopper_id is None or d.shopper_id == shopper_id]
        return sorted(found, key=lambda d: d.opened_at)


class MemoryOutbox:
    """Implements `Outbox` and `OutboxQueue` in memory; `fail` makes commits raise like a broken disk."""

    def __init__(self) -> None:
        self.responses: dict[tuple[str, str], StoredResponse] = {}
        self.messages: list[PendingMessage] = []
        self.sent: set[int] = set()
        self.set_aside: dict[int, str] = {}
        """Parked messages: seq → the queue's reason."""
        self.fail: Exception | None = None

    def lookup(self, route: str, key: str) -> StoredResponse | None:
        return self.responses.get((route, key))

    def recall(self, route: str, key: str) -> StoredResponse | None:
        return self.lookup(route, key)

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
        return [m for m in self.messages if m.seq not in self.sent and m.seq not in self.set_aside][:limit]

    def mark_sent(self, seqs: Sequence[int]) -> None:
        self.sent.update(seqs)

    def park(self, refused: Sequence[tuple[int, str]]) -> None:
        self.set_aside.update(refused)

    def parked(self) -> int:
        return len(self.set_aside)

    def stats(self, now: datetime) -> tuple[int, float]:
        return len(self.messages) - len(self.sent) - len(self.set_aside), 0.0


class MemoryPublisher:
    """Implements `QueuePublisher`; `down` makes every send raise; a message whose body contains `refuse`
    is refused for good, as SQS refuses a sender fault."""

    def __init__(self, refuse: bytes | None = None) -> None:
        self.bodies: list[bytes] = []
        self.down: Exception | None = None
        self.refuse = refuse

    async def send_batch(self, messages: Sequence[PendingMessage]) -> Sent:
        if self.down is not None:
            raise self.down
        refuse = self.refuse
        refused = [(m.seq, "InvalidMessageContents: refused") for m in messages if refuse and refuse in m.body]
        taken = [m for m in messages if not (refuse and refuse in m.body)]
        self.bodies.extend(m.body for m in taken)
        return Sent([m.seq for m in taken], refused)
