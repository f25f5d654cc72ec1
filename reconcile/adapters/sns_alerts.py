"""`AlertSink` over an SNS topic: each alert is one Publish of its JSON (`reconcile.alerts.alert_payload`), with the
kind and severity as message attributes (for subscription filter policies). The client (aiobotocore) is passed in;
its own retry configuration applies. A botocore error becomes AlertDeliveryError."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from reconcile.alerts import alert_payload
from reconcile.errors import AlertDeliveryError
from reconcile.rules import Alert

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient


class SnsAlertSink:
    def __init__(self, client: SNSClient, topic_arn: str) -> None:
        self._client, self._topic = client, topic_arn

    async def send(self, alert: Alert) -> None:
        try:
            await self._client.publish(
                TopicArn=self._topic,
                Subject=f"JWO alert: {alert.kind}"[:100],
                Message=json.dumps(alert_payload(alert)),
                MessageAttributes={
                    "kind": {"DataType": "String", "StringValue": alert.kind},
                    "severity": {"DataType": "String", "StringValue": alert.severity},
                },
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            transient = code in {"Throttling", "ThrottlingException", "InternalError", "ServiceUnavailable"}
            raise AlertDeliveryError(f"SNS refused alert {alert.alert_id}: {code}", transient=transient) from exc
        except BotoCoreError as exc:
            raise AlertDeliveryError(f"SNS publish of alert {alert.alert_id} failed: {exc}") from exc
