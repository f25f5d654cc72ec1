"""The connectors' ports: what the request path needs from the outside world.

Each has a real adapter (`adapters/`) and an in-memory fake (`fakes.py`) behind the same Protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol

from connectors.pricing import CatalogItem

VisitorType = Literal["SHOPPER", "ASSOCIATE", "CASH_SHOPPER"]


@dataclass(frozen=True)
class Shopper:
    shopper_id: str
    identity_key: str
    visitor_type: VisitorType
    phone_number: str | None
    status: Literal["active", "blocked"]


@dataclass(frozen=True)
class BadDebt:
    debt_id: str
    shopper_id: str
    shopping_trip_id: str
    store_id: str
    amount: Decimal
    currency: str
    reason: str
    status: Literal["OPEN", "SETTLED", "WRITTEN_OFF"]
    opened_at: datetime
    settled_at: datetime | None = None


class RetailerDirectory(Protocol):
    """Read side on the request path: in memory, refreshed from the store of record."""

    def shopper_by_key(self, identity_key: str) -> Shopper | None: ...
    def shopper_by_phone(self, digits: str) -> Shopper | None: ...
    def has_open_debt(self, shopper_id: str) -> bool: ...
    def item_by_sku(self, store_id: str, sku: str) -> CatalogItem | None: ...
    def item_by_barcode(self, store_id: str, barcode: str) -> CatalogItem | None: ...


class RetailerAdmin(Protocol):
    """Write side: imports and CLI management, and the bad-debt API reconciliation writes through."""

    def upsert_shoppers(self, shoppers: Sequence[Shopper]) -> int: ...
    def upsert_catalog(self, items: Sequence[tuple[CatalogItem, Sequence[str]]]) -> int: ...
    def get_shopper(self, shopper_id: str) -> Shopper | None: ...
    def set_status(self, shopper_id: str, status: Literal["active", "blocked"]) -> bool: ...
    def open_debt(self, debt: BadDebt) -> bool: ...
    def close_debt(self, shopping_trip_id: str, status: Literal["SETTLED", "WRITTEN_OFF"], at: datetime) -> bool: ...
    def open_debts(self, debts: Sequence[BadDebt]) -> int:
        """`open_debt` for many debts at once (one write transaction): how many were new."""
        ...

    def close_debts(
        self, shopping_trip_ids: Sequence[str], status: Literal["SETTLED", "WRITTEN_OFF"], at: datetime
    ) -> int:
        """`close_debt` for many trips at once (one write transaction): how many open debts were closed."""
        ...

    def debts(self, shopper_id: str | None = None) -> list[BadDebt]: ...


@dataclass(frozen=True)
class StoredResponse:
    """What an idempotency key answered the first time, kept so retries get the same answer."""

    fingerprint: str
    status: int
    body: bytes


@dataclass(frozen=True)
class OutboxRecord:
    message_id: str
    body: bytes


class Outbox(Protocol):
    """Durable local outbox and idempotency ledger, written in one transaction per request."""

    def lookup(self, route: str, key: str) -> StoredResponse | None:
        """The recorded answer for the key, if any (authoritative; may read the disk)."""
        ...

    def recall(self, route: str, key: str) -> StoredResponse | None:
        """The recorded answer if it is at hand in memory: the request path's fast check. None does not
        mean the key is new (after a restart it usually is not in memory): `commit` is authoritative."""
        ...

    async def commit(
        self, route: str, key: str, response: StoredResponse, records: Sequence[OutboxRecord]
    ) -> StoredResponse:
        """Make the response and its messages durable; returns what the key holds afterwards
        (the earlier answer when another request won the race)."""
        ...


@dataclass(frozen=True)
class PendingMessage:
    seq: int
    message_id: str
    body: bytes


@dataclass(frozen=True)
class Sent:
    """What the queue made of a batch: the seqs it accepted, and those it refused for good (the message
    itself is at fault, e.g. SQS's `SenderFault`), each with the queue's reason. Any seq in neither list
    was not sent and stays pending."""

    accepted: list[int]
    refused: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ParkedMessage:
    seq: int
    message_id: str
    reason: str
    parked_at: datetime


class OutboxQueue(Protocol):
    """The relay's view of the outbox."""

    def pending(self, limit: int) -> list[PendingMessage]: ...
    def mark_sent(self, seqs: Sequence[int]) -> None: ...
    def park(self, refused: Sequence[tuple[int, str]]) -> None:
        """Set aside messages the queue refuses for good, with the reason: they leave `pending` (retrying
        them would block the messages behind them) and wait in the outbox for an operator."""
        ...

    def parked(self) -> int:
        """How many messages are set aside."""
        ...

    def stats(self, now: datetime) -> tuple[int, float]:
        """(unsent messages, age in seconds of the oldest unsent one)."""
        ...


class QueuePublisher(Protocol):
    async def send_batch(self, messages: Sequence[PendingMessage]) -> Sent:
        """Send up to 10 messages; raises when the queue could not be reached at all."""
        ...
