"""QueuePublisher over Amazon SQS (or the embedded emulator) with aiobotocore."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from connectors.ports import PendingMessage

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient


class SqsPublisher:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    async def send_batch(self, messages: Sequence[PendingMessage]) -> list[int]:
        if not messages:
            return []
        response = await self._client.send_message_batch(
            QueueUrl=self._queue_url,
            Entries=[{"Id": str(m.seq), "MessageBody": m.body.decode("utf-8")} for m in messages],
        )
        return [int(entry["Id"]) for entry in response.get("Successful", [])]
