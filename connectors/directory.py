"""The in-memory view of shoppers, open debts and the catalog that the request path reads.

The store of record (SQLite locally) is polled for a change counter; when it moved, a fresh
snapshot replaces the old one in a single assignment, so readers never see a half-loaded state.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from connectors.ports import Shopper
from connectors.pricing import CatalogItem

_NON_DIGITS = re.compile(r"\D")


def phone_digits(number: str) -> str:
    """E.123 numbers compare by digits only: `+1 617 555 1234` → `16175551234`."""
    return _NON_DIGITS.sub("", number)


@dataclass(frozen=True)
class Snapshot:
    generation: int
    by_key: dict[str, Shopper] = field(default_factory=dict)
    by_phone: dict[str, Shopper] = field(default_factory=dict)
    indebted: frozenset[str] = frozenset()
    by_sku: dict[tuple[str, str], CatalogItem] = field(default_factory=dict)
    by_barcode: dict[tuple[str, str], CatalogItem] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        generation: int,
        shoppers: Iterable[Shopper],
        indebted: Iterable[str],
        items: Iterable[tuple[CatalogItem, Iterable[str]]],
    ) -> Snapshot:
        snap = cls(generation=generation, indebted=frozenset(indebted))
        for shopper in shoppers:
            snap.by_key[shopper.identity_key] = shopper
            if shopper.phone_number:
                snap.by_phone[phone_digits(shopper.phone_number)] = shopper
        for item, barcodes in items:
            snap.by_sku[(item.store_id, item.sku)] = item
            for barcode in barcodes:
                snap.by_barcode[(item.store_id, barcode)] = item
        return snap


class SnapshotSource(Protocol):
    def generation(self) -> int: ...
    def snapshot(self) -> Snapshot: ...


class CachedDirectory:
    """Implements `RetailerDirectory` over the latest snapshot of a `SnapshotSource`."""

    def __init__(self, source: SnapshotSource) -> None:
        self._source = source
        self._snap = source.snapshot()

    @property
    def generation(self) -> int:
        return self._snap.generation

    def refresh(self) -> bool:
        """Reload when the source changed; returns whether it did."""
        if self._source.generation() == self._snap.generation:
            return False
        self._snap = self._source.snapshot()
        return True

    def shopper_by_key(self, identity_key: str) -> Shopper | None:
        return self._snap.by_key.get(identity_key)

    def shopper_by_phone(self, digits: str) -> Shopper | None:
        return self._snap.by_phone.get(digits)

    def has_open_debt(self, shopper_id: str) -> bool:
        return shopper_id in self._snap.indebted

    def item_by_sku(self, store_id: str, sku: str) -> CatalogItem | None:
        return self._snap.by_sku.get((store_id, sku))

    def item_by_barcode(self, store_id: str, barcode: str) -> CatalogItem | None:
        return self._snap.by_barcode.get((store_id, barcode))
