"""The broker's unit tests run on database 0, apart from the stores' (13), which may run alongside."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.servers import redis_client

DB = 0


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    """Database 0 of the session's Redis, empty at the start and at the end of the test."""
    with redis_client(DB) as client:
        client.flushdb()
        yield client
        client.flushdb()
