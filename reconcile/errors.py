"""Reconciliation's errors: one base, split into transient (retry later) and terminal."""

from __future__ import annotations


class ReconcileError(Exception):
    """Base of reconciliation's errors."""


class AlertDeliveryError(ReconcileError):
    """An alert sink did not accept the alert. `transient`: trying again later may succeed."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient
