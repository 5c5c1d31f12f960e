"""Fixtures for the worker's shared-state modules: a flushed database of the session's own Redis."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.servers import redis_client

TEST_DB = 13


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    """Database 13 of the session's Redis (tests/servers.py), empty at the start of the test."""
    client = redis_client(TEST_DB)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()
