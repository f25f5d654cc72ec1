"""Reconciliation settings (env `JWO_RECONCILE__<FIELD>` once `jwo.settings.Settings` nests them)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from pydantic import BaseModel, Field

from reconcile.rules import RuleSettings


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

    def rules(self) -> RuleSettings:
        return RuleSettings(
            amount_tolerance=self.amount_tolerance,
            preauth_window=timedelta(hours=self.preauth_window_hours),
            report_grace=timedelta(hours=self.report_grace_hours),
            check_reports=self.check_reports,
        )
