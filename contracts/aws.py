"""How to reach AWS (or the embedded emulator) and what our resources are called. Pure data."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class AwsEndpoint(BaseModel):
    """Connection parameters every aiobotocore client of ours is built from."""

    model_config = ConfigDict(frozen=True)

    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        if self.access_key_id and self.secret_access_key:
            kwargs["aws_access_key_id"] = self.access_key_id
            kwargs["aws_secret_access_key"] = self.secret_access_key
        return kwargs


class QueueRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    url: str
    dlq_url: str | None = None
