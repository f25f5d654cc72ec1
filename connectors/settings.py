"""Connector settings (env `JWO_CONNECTORS__<FIELD>`), built once by the process and passed in."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


class ConnectorSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    rate_limit_per_store: float = Field(default=1000.0, gt=0, description="requests per second per store")
    rate_limit_burst: float | None = Field(default=None, description="bucket size; defaults to one second's rate")
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    api_key: SecretStr | None = Field(default=None, description="require this x-api-key header when set")
    directory_refresh_seconds: float = Field(default=1.0, gt=0)
    commit_timeout_seconds: float = Field(default=1.5, gt=0)
    idempotency_retention_hours: float = Field(default=48.0, ge=48.0)
    default_currency: str = "USD"
    relay_in_flight: int = Field(default=4, ge=1, description="SendMessageBatch calls in flight")
    request_log_every: int = Field(
        default=100, ge=1, description="write the JSON request log line for one in this many answers under 400"
    )
    request_log_slow_seconds: float = Field(
        default=1.0, gt=0, description="every answer this slow or slower is logged, whatever its status"
    )
    relay_max_backoff_seconds: float = Field(default=10.0, gt=0)
    background_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="niceness added to the relay process (and the embedded AWS): on a busy host the process "
        "that answers Amazon gets the CPU first; the relay only has to keep up on average",
    )
