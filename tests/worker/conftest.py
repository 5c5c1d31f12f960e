"""Fixtures for the worker's shared-state modules: a flushed real Redis database."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.conftest import require_servers

TEST_DB = 13


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    """Database 13 of the local Redis, empty at the start of the test; skipped when unreachable (failed under CI)."""
    require_servers("redis")
    client = redis.Redis(host="127.0.0.1", port=6379, db=TEST_DB)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()
