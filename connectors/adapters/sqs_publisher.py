"""QueuePublisher over Amazon SQS (or the embedded emulator) with aiobotocore.

Two SQS rules that our messages must be fitted to here, or SQS refuses them on every retry and they
block the head of the outbox for good:
- one SendMessageBatch carries at most 256 KiB of bodies in all (1 MiB on queues created with the
  newer maximum), while one message may be up to 256 KiB: the batch is split to fit;
- a body may not contain U+FFFE or U+FFFF (they are valid in our JSON strings): they are sent as the
  JSON escapes `\\ufffe` / `\\uffff`, which decode to the same text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from connectors.ports import PendingMessage, Sent

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

log = logging.getLogger("jwo.connectors.sqs")

BATCH_BYTES = 256 * 1024
"""The most body bytes one SendMessageBatch may carry, on any SQS queue."""
_NOT_FOR_SQS = str.maketrans({"\ufffe": "\\ufffe", "\uffff": "\\uffff"})


def sqs_body(body: bytes) -> str:
    """The message body as SQS accepts it: our JSON, with the two characters SQS refuses escaped."""
    return body.decode("utf-8").translate(_NOT_FOR_SQS)


def fitting_batches(
    messages: Sequence[PendingMessage], limit: int = BATCH_BYTES
) -> Iterator[list[tuple[PendingMessage, str]]]:
    """(message, SQS body) in order, grouped so that no group's bodies together exceed `limit` bytes."""
    batch: list[tuple[PendingMessage, str]] = []
    size = 0
    for message in messages:
        body = sqs_body(message.body)
        length = len(body.encode("utf-8"))
        if batch and size + length > limit:
            yield batch
            batch, size = [], 0
        batch.append((message, body))
        size += length
    if batch:
        yield batch


class SqsPublisher:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    async def send_batch(self, messages: Sequence[PendingMessage]) -> Sent:
        accepted: list[int] = []
        refused: list[tuple[int, str]] = []
        for batch in fitting_batches(messages):
            try:
                response = await self._client.send_message_batch(
                    QueueUrl=self._queue_url,
                    Entries=[{"Id": str(m.seq), "MessageBody": body} for m, body in batch],
                )
            except Exception as exc:
                if not accepted:
                    raise
                # What was accepted stays accepted; the rest is still pending and is sent again later.
                log.warning("SendMessageBatch failed after part of the batch was sent: %s: %s", type(exc).__name__, exc)
                break
            accepted += [int(entry["Id"]) for entry in response.get("Successful", [])]
            for failed in response.get("Failed", []):
                if failed.get("SenderFault"):  # the message itself: sent again, it fails again
                    refused.append((int(failed["Id"]), f"{failed.get('Code', '')}: {failed.get('Message', '')}"))
                else:
                    log.warning("SQS failed a message (retried): %s %s", failed.get("Code"), failed.get("Message"))
        return Sent(accepted, refused)
