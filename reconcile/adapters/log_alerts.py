"""`AlertSink` that logs each alert (the default sink): one WARNING (ERROR when critical) per alert, with its fields."""

from __future__ import annotations

import logging

from reconcile.alerts import alert_payload
from reconcile.rules import Alert


class LogAlertSink:
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("jwo.alerts")

    async def send(self, alert: Alert) -> None:
        level = logging.ERROR if alert.severity == "critical" else logging.WARNING
        self._log.log(level, "ALERT %s: %s", alert.kind, alert.message, extra={"alert": alert_payload(alert)})
