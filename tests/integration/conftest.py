"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jwo.aws_resources import EmbeddedAws


@pytest.fixture
def aws() -> Iterator[EmbeddedAws]:
    """The embedded moto server on a free loopback port; stop() resets moto's (process-global) state."""
    with EmbeddedAws() as server:
        yield server
