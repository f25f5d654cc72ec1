"""The retailer's identity store, catalog and bad-debt list in SQLite (the embedded default).

A DynamoDB adapter can follow behind the same ports. Triggers bump a change counter on every
write, which is how running connectors notice imports and CLI changes within a second or two.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal, cast

from connectors.directory import Snapshot, phone_digits
from connectors.ports import BadDebt, Shopper, VisitorType
from connectors.pricing import CatalogItem

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 1), generation INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (id, generation) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS shoppers (
    shopper_id TEXT PRIMARY KEY,
    identity_key TEXT NOT NULL UNIQUE,
    visitor_type TEXT NOT NULL,
    phone_number TEXT,
    phone_digits TEXT,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS shoppers_phone ON shoppers (phone_digits);
CREATE TABLE IF NOT EXISTS catalog (
    store_id TEXT NOT NULL,
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    unit_price TEXT NOT NULL,
    currency TEXT NOT NULL,
    tax_rate TEXT NOT NULL,
    promotion_percent TEXT,
    barcodes TEXT NOT NULL,
    PRIMARY KEY (store_id, sku)
);
CREATE TABLE IF NOT EXISTS bad_debts (
    debt_id TEXT PRIMARY KEY,
    shopper_id TEXT NOT NULL,
    shopping_trip_id TEXT NOT NULL UNIQUE,
    store_id TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    settled_at TEXT
);
CREATE INDEX IF NOT EXISTS bad_debts_open ON bad_debts (shopper_id) WHERE status = 'OPEN';
"""

_TRIGGERS = "".join(
    f"CREATE TRIGGER IF NOT EXISTS bump_{table}_{op} AFTER {op} ON {table} "
    "BEGIN UPDATE meta SET generation = generation + 1 WHERE id = 1; END;\n"
    for table in ("shoppers", "catalog", "bad_debts")
    for op in ("INSERT", "UPDATE", "DELETE")
)


class SqliteRetailerStore:
    """Implements `RetailerAdmin` and `SnapshotSource`."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.executescript(_SCHEMA + _TRIGGERS)

    def close(self) -> None:
        self._conn.close()

    # -- SnapshotSource -------------------------------------------------------------------------

    def generation(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT generation FROM meta WHERE id = 1").fetchone()[0])

    def snapshot(self) -> Snapshot:
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                generation = int(self._conn.execute("SELECT generation FROM meta WHERE id = 1").fetchone()[0])
                shoppers = [_shopper(r) for r in self._conn.execute(_SHOPPER_SELECT)]
                indebted = [r[0] for r in self._conn.execute("SELECT shopper_id FROM bad_debts WHERE status='OPEN'")]
                items = [(_item(r), [b for b in r[7].split("|") if b]) for r in self._conn.execute(_CATALOG_SELECT)]
            finally:
                self._conn.execute("COMMIT")
        return Snapshot.build(generation, shoppers, indebted, items)

    # -- RetailerAdmin --------------------------------------------------------------------------

    def upsert_shoppers(self, shoppers: Sequence[Shopper]) -> int:
        rows = [
            (
                s.shopper_id,
                s.identity_key,
                s.visitor_type,
                s.phone_number,
                phone_digits(s.phone_number) if s.phone_number else None,
                s.status,
            )
            for s in shoppers
        ]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                # An identity key moves with its shopper: free it from any other shopper first.
                self._conn.executemany(
                    "DELETE FROM shoppers WHERE identity_key = ? AND shopper_id <> ?",
                    [(r[1], r[0]) for r in rows],
                )
                self._conn.executemany(
                    "INSERT INTO shoppers (shopper_id, identity_key, visitor_type, phone_number, phone_digits, status) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (shopper_id) DO UPDATE SET "
                    "identity_key = excluded.identity_key, visitor_type = excluded.visitor_type, "
                    "phone_number = excluded.phone_number, phone_digits = excluded.phone_digits, "
                    "status = excluded.status",
                    rows,
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return len(rows)

    def upsert_catalog(self, items: Sequence[tuple[CatalogItem, Sequence[str]]]) -> int:
        rows = [
            (
                i.store_id,
                i.sku,
                i.name,
                str(i.unit_price),
                i.currency,
                str(i.tax_rate),
                None if i.promotion_percent is None else str(i.promotion_percent),
                "|".join(barcodes),
            )
            for i, barcodes in items
        ]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO catalog (store_id, sku, name, unit_price, currency, tax_rate, promotion_percent, "
                    "barcodes) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (store_id, sku) DO UPDATE SET "
                    "name = excluded.name, unit_price = excluded.unit_price, currency = excluded.currency, "
                    "tax_rate = excluded.tax_rate, promotion_percent = excluded.promotion_percent, "
                    "barcodes = excluded.barcodes",
                    rows,
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return len(rows)

    def get_shopper(self, shopper_id: str) -> Shopper | None:
        with self._lock:
            row = self._conn.execute(_SHOPPER_SELECT + " WHERE shopper_id = ?", (shopper_id,)).fetchone()
        return None if row is None else _shopper(row)

    def set_status(self, shopper_id: str, status: Literal["active", "blocked"]) -> bool:
        with self._lock:
            changed = self._conn.execute(
                "UPDATE shoppers SET status = ? WHERE shopper_id = ?", (status, shopper_id)
            ).rowcount
        return changed == 1

    def open_debt(self, debt: BadDebt) -> bool:
        """Record an open debt for a trip; a trip has at most one debt. Returns whether it is new."""
        return self.open_debts([debt]) == 1

    def close_debt(self, shopping_trip_id: str, status: Literal["SETTLED", "WRITTEN_OFF"], at: datetime) -> bool:
        return self.close_debts([shopping_trip_id], status, at) == 1

    def open_debts(self, debts: Sequence[BadDebt]) -> int:
        """Record open debts in one transaction (one commit, however many); a trip's existing debt is kept.
        Returns how many were new."""
        rows = [
            (
                d.debt_id,
                d.shopper_id,
                d.shopping_trip_id,
                d.store_id,
                str(d.amount),
                d.currency,
                d.reason,
                d.opened_at.isoformat(),
            )
            for d in debts
        ]
        return self._write_many(
            "INSERT OR IGNORE INTO bad_debts (debt_id, shopper_id, shopping_trip_id, store_id, amount, "
            "currency, reason, status, opened_at, settled_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'OPEN', ?, NULL)",
            rows,
        )

    def close_debts(
        self, shopping_trip_ids: Sequence[str], status: Literal["SETTLED", "WRITTEN_OFF"], at: datetime
    ) -> int:
        """Close the open debts of these trips in one transaction. Returns how many were open."""
        when = at.isoformat()
        return self._write_many(
            "UPDATE bad_debts SET status = ?, settled_at = ? WHERE shopping_trip_id = ? AND status = 'OPEN'",
            [(status, when, trip) for trip in shopping_trip_ids],
        )

    def _write_many(self, sql: str, rows: Sequence[tuple[object, ...]]) -> int:
        """`sql` once per row, all in one write transaction; the rows it changed (triggers not counted)."""
        if not rows:
            return 0
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                changed = self._conn.executemany(sql, rows).rowcount
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return int(changed)

    def debts(self, shopper_id: str | None = None) -> list[BadDebt]:
        sql = (
            "SELECT debt_id, shopper_id, shopping_trip_id, store_id, amount, currency, reason, status, "
            "opened_at, settled_at FROM bad_debts"
        )
        args: tuple[str, ...] = ()
        if shopper_id is not None:
            sql += " WHERE shopper_id = ?"
            args = (shopper_id,)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY opened_at", args).fetchall()
        return [
            BadDebt(
                debt_id=r[0],
                shopper_id=r[1],
                shopping_trip_id=r[2],
                store_id=r[3],
                amount=Decimal(r[4]),
                currency=r[5],
                reason=r[6],
                status=r[7],
                opened_at=datetime.fromisoformat(r[8]),
                settled_at=None if r[9] is None else datetime.fromisoformat(r[9]),
            )
            for r in rows
        ]


_SHOPPER_SELECT = "SELECT shopper_id, identity_key, visitor_type, phone_number, status FROM shoppers"
_CATALOG_SELECT = "SELECT store_id, sku, name, unit_price, currency, tax_rate, promotion_percent, barcodes FROM catalog"


def _shopper(row: tuple[str, str, str, str | None, str]) -> Shopper:
    return Shopper(
        shopper_id=row[0],
        identity_key=row[1],
        visitor_type=cast(VisitorType, row[2]),
        phone_number=row[3],
        status=cast(Literal["active", "blocked"], row[4]),
    )


def _item(row: tuple[str, str, str, str, str, str, str | None, str]) -> CatalogItem:
    return CatalogItem(
        store_id=row[0],
        sku=row[1],
        name=row[2],
        unit_price=Decimal(row[3]),
        currency=row[4],
        tax_rate=Decimal(row[5]),
        promotion_percent=None if row[6] is None else Decimal(row[6]),
    )
