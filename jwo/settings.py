"""The one settings object of a `jwo` process: env vars `JWO_*`, nested sections with `__`
(`JWO_CONNECTORS__PORT=9000`, `JWO_RESOURCES__EVENTS_QUEUE=...`). Built once at start-up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.settings import ConnectorSettings
from contracts.aws import AwsEndpoint
from ingest.settings import IngestSettings
from jwo.aws_resources import ResourceNames
from reconcile.settings import ReconcileSettings


class PaymentSettings(BaseModel):
    """Amazon's Payment Service, as we call it (SPEC §4): env `JWO_PAYMENTS__<FIELD>`."""

    endpoint_url: str | None = Field(
        default=None,
        description="base URL of the Payment Service (Amazon's regional or test host); unset: requests stay queued",
    )
    region: str | None = Field(default=None, description="SigV4 signing region (default: JWO_AWS_REGION)")
    service_name: str = Field(default="execute-api", description="SigV4 signing service name")
    fraud_abuse_stores: list[str] = Field(
        default_factory=lambda: ["*"],
        description="stores whose fraud and abuse Amazon manages: a debt payoff there is reported to Amazon "
        '(JSON list of store ids; ["*"] = every store, [] = none)',
    )
    refund_window_days: int = Field(
        default=7, ge=1, description="refunds accepted this many days after the charge (the payment API's 7 days)"
    )
    call_attempts: int = Field(default=4, ge=1, description="tries per call (429, 5xx and transport errors retried)")
    call_timeout_seconds: float = Field(default=5.0, gt=0, description="per HTTP attempt")
    call_max_backoff_seconds: float = Field(default=5.0, gt=0, description="cap of the backoff between tries")
    sender_interval_seconds: float = Field(default=5.0, gt=0, description="how often `jwo up` sends what is queued")
    retry_base_backoff_seconds: float = Field(default=5.0, gt=0, description="wait after a first failed delivery")
    retry_max_backoff_seconds: float = Field(default=600.0, gt=0, description="cap of the wait between deliveries")
    max_deliveries: int = Field(default=200, ge=1, description="deliveries of one request before it is given up")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JWO_", env_nested_delimiter="__", extra="ignore")

    home: Path = Field(default=Path(".jwo"), description="all local state lives here")
    aws_mode: Literal["auto", "embedded", "aws"] = Field(
        default="auto",
        description="auto: embedded moto server unless an endpoint URL, or AWS credentials with resource "
        "names, are configured",
    )
    aws_endpoint_url: str | None = None
    aws_region: str = Field(default="us-east-1", validation_alias=AliasChoices("JWO_AWS_REGION", "AWS_REGION"))
    aws_access_key_id: str | None = Field(
        default=None, validation_alias=AliasChoices("JWO_AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
    )
    aws_secret_access_key: str | None = Field(
        default=None, validation_alias=AliasChoices("JWO_AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
    )
    resources: ResourceNames = Field(default_factory=ResourceNames)
    connectors: ConnectorSettings = Field(default_factory=ConnectorSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    payments: PaymentSettings = Field(default_factory=PaymentSettings)
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    @property
    def embedded(self) -> bool:
        if self.aws_mode != "auto":
            return self.aws_mode == "embedded"
        if self.aws_endpoint_url:
            return False
        has_credentials = bool(self.aws_access_key_id or os.environ.get("AWS_PROFILE"))
        return not (has_credentials and self.resources.model_fields_set)

    def endpoint(self) -> AwsEndpoint:
        return AwsEndpoint(
            endpoint_url=self.aws_endpoint_url,
            region=self.aws_region,
            access_key_id=self.aws_access_key_id,
            secret_access_key=self.aws_secret_access_key,
        )

    # Local state, all under `home`.
    @property
    def lake_dir(self) -> Path:
        return self.home / "lake"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def retailer_db(self) -> Path:
        return self.home / "retailer.db"

    @property
    def outbox_db(self) -> Path:
        return self.home / "outbox.db"

    @property
    def payments_db(self) -> Path:
        """Payment-Service requests we owe Amazon (payment-status reports, refunds) and their delivery state."""
        return self.home / "payments.db"
