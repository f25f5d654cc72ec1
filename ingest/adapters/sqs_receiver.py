"""QueueReceiver over Amazon SQS (or the embedded emulator) with aiobotocore."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ingest.ports import Received

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient


class SqsReceiver:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    async def receive(self, max_messages: int, wait_seconds: int) -> list[Received]:
        response = await self._client.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
        )
        out: list[Received] = []
        for m in response.get("Messages", []):
            attrs = m.get("Attributes", {})
            sent = attrs.get("SentTimestamp")
            out.append(
                Received(
                    message_id=m["MessageId"],
                    receipt=m["ReceiptHandle"],
                    body=m["Body"],
                    receive_count=int(attrs.get("ApproximateReceiveCount", "1")),
                    sent_at=datetime.fromtimestamp(int(sent) / 1000, UTC) if sent else None,
                )
            )
        return out

    async def delete(self, messages: Sequence[Received]) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            await self._client.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(chunk)],
            )

    async def extend(self, messages: Sequence[Received], seconds: int) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            await self._client.change_message_visibility_batch(
                QueueUrl=self._queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt, "VisibilityTimeout": seconds}
                    for i, m in enumerate(chunk)
                ],
            )
