"""ReportStore over Amazon S3 (or the embedded emulator) with aiobotocore."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from ingest.intraday import clean_etag
from ingest.ports import ObjectSupersededError, StoredObject

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

CHUNK_BYTES = 1 << 20


class S3Reports:
    def __init__(self, client: S3Client) -> None:
        self._client = client

    async def get(self, bucket: str, key: str, etag: str | None = None) -> StoredObject:
        """The object's bytes, streamed in chunks; with `etag`, only that version (else ObjectSupersededError)."""
        try:
            if etag:
                response = await self._client.get_object(Bucket=bucket, Key=key, IfMatch=f'"{etag}"')
            else:
                response = await self._client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if etag and code in {"PreconditionFailed", "412"}:
                raise ObjectSupersededError(f"s3://{bucket}/{key} no longer has ETag {etag}") from exc
            raise
        parts: list[bytes] = []
        async with response["Body"] as stream:
            while chunk := await stream.read(CHUNK_BYTES):
                parts.append(chunk)
        return StoredObject(b"".join(parts), clean_etag(response.get("ETag", "")), response.get("LastModified"))

    async def list(self, bucket: str, prefix: str) -> list[str]:
        keys: list[str] = []
        async for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []) if not obj["Key"].endswith("/"))
        return sorted(keys)
