"""The one read-write DuckDB file, `<home>/warehouse.duckdb`.

Only one process opens it; everyone else reads the Parquet lake (`warehouse.query.open_reader`) or opens the
file read-only when the writer is not running. It holds a view per table over the lake, so an analyst who
opens the file sees the same tables. The views name the lake by absolute path.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import duckdb

from contracts.tables import Table
from warehouse.errors import LakeWriteError, WarehouseLockedError
from warehouse.query import VANISHED_FILE_RETRIES, file_vanished
from warehouse.views import view_sql

DB_FILE_NAME = "warehouse.duckdb"


class WarehouseDb:
    """The writer's connection to `<home>/warehouse.duckdb`. Use as a context manager or call `close()`."""

    def __init__(self, home: Path, lake_root: Path) -> None:
        self._path = home / DB_FILE_NAME
        self._lake_root = lake_root.resolve()
        try:
            home.mkdir(parents=True, exist_ok=True)
            self._con = duckdb.connect(str(self._path), read_only=False)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise WarehouseLockedError(f"{self._path} is held by another process: {exc}") from exc
            raise LakeWriteError(f"could not open {self._path}: {exc}") from exc
        except OSError as exc:
            raise LakeWriteError(f"could not open {self._path}: {exc}") from exc
        self._con.execute("SET TimeZone = 'UTC'")

    @property
    def path(self) -> Path:
        return self._path

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        return self._con

    def refresh_views(self, tables: Iterable[Table]) -> None:
        """Create or replace each table's view in one transaction.

        Call it after publishing: a table that had no files gets an empty view, which stays empty until this
        runs again. Views over files see new files without a refresh.
        """
        tables = list(tables)
        for attempt in range(VANISHED_FILE_RETRIES + 1):
            statements = [view_sql(table, self._lake_root) for table in tables]
            self._con.execute("BEGIN TRANSACTION")
            try:
                for statement in statements:
                    self._con.execute(statement)
            except duckdb.Error as exc:
                self._con.execute("ROLLBACK")
                if attempt < VANISHED_FILE_RETRIES and file_vanished(exc):
                    time.sleep(0.02 * (attempt + 1))  # compaction replaced a file while it was listed
                    continue
                raise
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")
            return

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> WarehouseDb:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
