"""Ingest settings (env `JWO_INGEST__<FIELD>`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from contracts.intraday_report import REPORT_COLUMNS


class IntradaySettings(BaseModel):
    """How an Intra-Day report file maps to `intraday_order_lines` (env `JWO_INGEST__INTRADAY__<FIELD>`)."""

    columns: dict[str, str] = Field(
        default_factory=lambda: {name: name for name in REPORT_COLUMNS},
        description="report column name -> warehouse column (names compared case-insensitively, trimmed)",
    )
    keep_raw_files: bool = Field(default=True, description="keep every file's bytes in lake/_landing/<sha256>")


class IngestSettings(BaseModel):
    receivers: int = Field(default=4, ge=1, description="receive calls in flight per queue")
    batch_max: int = Field(default=1000, ge=1, description="messages per micro-batch at most")
    linger_seconds: float = Field(default=0.5, gt=0, description="how long a partial batch waits for more")
    wait_seconds: int = Field(default=2, ge=0, le=20, description="long-poll wait per receive")
    visibility_extension_seconds: int = Field(
        default=60, ge=10, description="how long each heartbeat extension hides a held message (at least the timeout)"
    )
    writes_in_flight: int = Field(
        default=2, ge=1, description="batches written at once: the next is decoded while the last is written"
    )
    compact_interval_seconds: float = Field(
        default=60.0, gt=0, description="how often the writer merges a day's small Parquet files"
    )
    metrics_host: str = Field(default="127.0.0.1", description="`jwo consume` serves /metrics here")
    metrics_port: int = Field(default=9101, ge=0, le=65535, description="0 picks a free port")
    depth_poll_seconds: float = Field(default=10.0, gt=0, description="how often queue and dead-letter depths are read")
    intraday: IntradaySettings = Field(default_factory=IntradaySettings)
