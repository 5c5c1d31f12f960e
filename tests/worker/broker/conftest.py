"""The broker's unit tests run on database 0, apart from the stores' (13), which may run alongside."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.conftest import require_servers

DB = 0


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    """Database 0 of the local Redis, empty at the start and at the end of the test."""
    require_servers("redis")
    with redis.Redis(host="127.0.0.1", port=6379, db=DB) as client:
        client.flushdb()
        yield client
        client.flushdb()
