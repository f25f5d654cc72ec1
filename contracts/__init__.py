"""Schemas that cross the queue and the warehouse. Pure: no I/O, imports no stage."""

from contracts import tables as _tables  # noqa: F401  (loads TABLES before contracts.reconcile_tables, which it registers)
