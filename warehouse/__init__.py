"""Warehouse stage: the Parquet lake, DuckDB views over it, the one DuckDB writer and read-only analyst SQL."""
