"""Reconciliation's errors: one base, split into transient (retry later) and terminal."""

from __future__ import annotations


class ReconcileError(Exception):
    """Base of reconciliation's errors."""


class AlertDeliveryError(ReconcileError):
    """An alert sink did not accept the alert. `transient`: trying again later may succeed."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class PaymentServiceError(ReconcileError):
    """A call to Amazon's Payment Service did not get an answer we can record as delivered."""


class PaymentRejectedError(PaymentServiceError):
    """Terminal: Amazon refused the request (400 `{"errorMsg"}`, or another 4xx). Sending it again cannot help."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class PaymentUnavailableError(PaymentServiceError):
    """Transient: throttled (429), a 5xx, a timeout or no connection, still so after the client's retries."""


class RefundRefusedError(ReconcileError):
    """A refund we will not send: unknown trip, more than is left to refund, outside the refund window, bad input."""
