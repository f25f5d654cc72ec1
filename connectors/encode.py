"""The queue messages the connectors produce, encoded straight from plain values.

`contracts.messages` defines the envelope and its payloads as pydantic models; building those models
and dumping them again costs more than deciding the request. Here a payload is a dict with the model's
fields in the model's order, and the envelope is encoded with orjson in one pass: the same bytes
`encode_parts(envelope_for(...))` makes (tests/unit/test_connectors_encode.py holds the two paths
equal, so a field added to a contract fails that test until it is added here too). A message over the
queue's size limit goes through `encode_parts` itself, which splits it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import orjson

from connectors.ports import OutboxRecord
from contracts.messages import MAX_MESSAGE_BYTES, SCHEMA_VERSION, Envelope, MessageType, encode_parts

_MESSAGE_NAMESPACE = b"\x6f\x1c\x1f\x0e\x2b\x1a\x4f\x5e\x9a\x43\x0c\x7d\x2b\x7e\x9a\x10"
"""`contracts.messages`' namespace for message ids, as bytes."""
_OPTIONS = orjson.OPT_UTC_Z
"""UTC date-times end in `Z`, as pydantic writes them."""


def uuid5(namespace: bytes, name: str) -> str:
    """`str(uuid.uuid5(UUID(bytes=namespace), name))`, without building UUID objects: the first 16 bytes of
    the SHA-1 in hex, with the version nibble (hex digit 12) set to 5 and the top two bits of the variant
    nibble (hex digit 16) to 10."""
    return _uuid5_of(namespace + name.encode("utf-8"))


def _uuid5_of(hashed: bytes) -> str:
    """The UUIDv5 text of a namespace's bytes followed by a name's."""
    h = hashlib.sha1(hashed, usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_VARIANT = {f"{n:x}": f"{0x8 | (n & 0x3):x}" for n in range(16)}
_MESSAGE_PREFIX = {t: _MESSAGE_NAMESPACE + f"{t.value}:".encode() for t in MessageType}
"""Per message type, what its message ids hash before the idempotency key."""


def message_id(message_type: MessageType, idempotency_key: str) -> str:
    """`contracts.messages.message_id_for`."""
    return _uuid5_of(_MESSAGE_PREFIX[message_type] + idempotency_key.encode("utf-8"))


def records(
    message_type: MessageType, idempotency_key: str, payload: dict[str, Any], *, occurred_at: datetime, producer: str
) -> list[OutboxRecord]:
    """The outbox records of one message: one, or its parts when it is over the queue's limit."""
    mid = message_id(message_type, idempotency_key)
    envelope = {
        "message_id": mid,
        "type": message_type.value,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": occurred_at,
        "producer": producer,
        "payload": payload,
        "part": 1,
        "parts": 1,
    }
    body = orjson.dumps(envelope, option=_OPTIONS)
    if len(body) <= MAX_MESSAGE_BYTES:
        return [OutboxRecord(mid, body)]
    whole = Envelope.model_validate({**envelope, "payload": orjson.loads(orjson.dumps(payload, option=_OPTIONS))})
    return [OutboxRecord(part.message_id, part_body) for part, part_body in encode_parts(whole)]
