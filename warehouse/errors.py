"""Errors of the warehouse stage: one base, split into transient (retry) and terminal (do not retry)."""

from __future__ import annotations


class WarehouseError(Exception):
    """Base of every error the warehouse stage raises."""


class TransientWarehouseError(WarehouseError):
    """Retrying the same call later may succeed (disk full, file locked by another process)."""


class TerminalWarehouseError(WarehouseError):
    """Retrying the same call will fail the same way; reject or dead-letter the input."""


class LakeWriteError(TransientWarehouseError):
    """A Parquet file could not be written or published."""


class WarehouseLockedError(TransientWarehouseError):
    """Another process holds the DuckDB warehouse file open for writing."""


class RowSchemaError(TerminalWarehouseError):
    """Rows do not fit the table schema (unknown column, wrong type, naive timestamp, missing partition time)."""


class InvalidBatchIdError(TerminalWarehouseError):
    """A batch id cannot name a file."""


class ReadOnlyQueryError(TerminalWarehouseError):
    """An analyst query tried to do something other than read."""


class QueryError(TerminalWarehouseError):
    """An analyst query is not valid SQL or failed to run."""
