"""aiobotocore clients for tests against the embedded AWS."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from aiobotocore.session import AioSession, get_session

from jwo.aws_resources import EmbeddedAws

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient


@functools.cache
def shared_session() -> AioSession:
    """One session for the test run: each new one re-parses the API models (~0.15 s)."""
    return get_session()


@asynccontextmanager
async def sqs_client(aws: EmbeddedAws) -> AsyncIterator[SQSClient]:
    async with shared_session().create_client("sqs", **aws.endpoint.client_kwargs()) as client:
        yield client
