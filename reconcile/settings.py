"""Reconciliation settings (env `JWO_RECONCILE__<FIELD>` once `jwo.settings.Settings` nests them)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from reconcile.alerts import Thresholds
from reconcile.rules import RuleSettings

SinkName = Literal["log", "webhook", "sns"]


class AlertSettings(BaseModel):
    """Env `JWO_RECONCILE__ALERTS__<FIELD>`; `SINKS` is a JSON list, e.g. `["log","webhook"]`."""

    sinks: list[SinkName] = Field(
        default_factory=lambda: list[SinkName](["log"]), description="where alerts go besides the table"
    )
    webhook_url: str | None = Field(default=None, description="JSON POST target (sink `webhook`)")
    webhook_timeout_seconds: float = Field(default=2.0, gt=0, description="per POST attempt")
    webhook_attempts: int = Field(default=3, ge=1, description="POST attempts per delivery, with backoff")
    sns_topic_arn: str | None = Field(default=None, description="topic to publish to (sink `sns`)")
    delivery_attempts: int = Field(default=8, ge=1, description="deliveries per alert and sink before giving up")
    delivery_max_backoff_seconds: float = Field(default=60.0, gt=0)
    check_interval_seconds: float = Field(default=15.0, gt=0, description="threshold checks period")
    decline_window_minutes: float = Field(default=15.0, gt=0, description="decline rate: the sliding window")
    decline_rate: Decimal = Field(default=Decimal("0.20"), ge=0, le=1, description="decline rate above this alerts")
    decline_min_events: int = Field(default=20, ge=1, description="decline rate: fewer outcomes give no verdict")
    dead_letters_max: int = Field(default=0, ge=0, description="dead letters on a queue above this alert")
    outbox_age_max_seconds: float = Field(default=300.0, gt=0, description="oldest unsent outbox message")
    backlog_max: int = Field(default=1000, ge=0, description="trips awaiting reconciliation above this alert")
    backlog_grace_minutes: float = Field(
        default=10.0, gt=0, description="a purchase not reconciled this long after it landed counts as backlog"
    )

    @model_validator(mode="after")
    def _targets(self) -> AlertSettings:
        if "webhook" in self.sinks and not self.webhook_url:
            raise ValueError("sink 'webhook' needs webhook_url")
        if "sns" in self.sinks and not self.sns_topic_arn:
            raise ValueError("sink 'sns' needs sns_topic_arn")
        return self

    def thresholds(self) -> Thresholds:
        return Thresholds(
            decline_window=timedelta(minutes=self.decline_window_minutes),
            decline_rate=self.decline_rate,
            decline_min_events=self.decline_min_events,
            dead_letters_max=self.dead_letters_max,
            outbox_age_max_seconds=self.outbox_age_max_seconds,
            backlog_max=self.backlog_max,
        )


class ReconcileSettings(BaseModel):
    amount_tolerance: Decimal = Field(
        default=Decimal("0.00"), ge=0, description="sold, captured and reported amounts within this still match"
    )
    preauth_window_hours: float = Field(default=24.0, gt=0, description="no capture this long after exit: missing")
    report_grace_hours: float = Field(default=2.0, gt=0, description="in no Intra-Day report this long after exit")
    check_reports: bool = Field(
        default=True, description="expect Intra-Day reports (checked only when the lake holds any report line)"
    )
    interval_seconds: float = Field(default=60.0, gt=0, description="incremental run period inside `jwo up`")
    memory_limit_mb: int = Field(
        default=1024, ge=64, description="DuckDB memory of a run; beyond it, it spills to a temp folder"
    )
    alerts: AlertSettings = Field(default_factory=AlertSettings)

    def rules(self) -> RuleSettings:
        return RuleSettings(
            amount_tolerance=self.amount_tolerance,
            preauth_window=timedelta(hours=self.preauth_window_hours),
            report_grace=timedelta(hours=self.report_grace_hours),
            check_reports=self.check_reports,
        )
