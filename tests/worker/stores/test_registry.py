"""WorkerRegistry against the real Redis (the shared test database): announce, expiry, withdraw, union,
accounts known while no worker is live, the workers' limits."""
from __future__ import annotations

import pytest
import redis

from tests.support import wait_for
from config.settings import Window
from worker.stores.registry import KNOWN_SECONDS, Limits, WorkerRegistry


@pytest.fixture
def client(redis_db: redis.Redis) -> redis.Redis:
    """The shared empty test database (tests/worker/conftest.py)."""
    return redis_db


@pytest.fixture
def registry(client: redis.Redis) -> WorkerRegistry:
    return WorkerRegistry(client)


def test_nothing_announced_serves_nothing(registry: WorkerRegistry) -> None:
    assert registry.accounts() == set()


def test_accounts_are_the_union_over_live_workers(registry: WorkerRegistry) -> None:
    registry.announce("w1@host-a", ["default", "backup"])
    registry.announce("w2@host-b", ["default", "marketing"])
    assert registry.accounts() == {"default", "backup", "marketing"}


def test_announcing_again_replaces_a_workers_accounts(registry: WorkerRegistry) -> None:
    registry.announce("w1", ["default", "backup"])
    registry.announce("w1", ["default"])
    assert registry.accounts() == {"default"}


def test_an_entry_expires_unless_announced_again(registry: WorkerRegistry) -> None:
    registry.announce("short", ["backup"], ttl=0.3)
    registry.announce("long", ["default"], ttl=60)
    assert registry.accounts() == {"default", "backup"}
    wait_for(lambda: registry.accounts() == {"default"}, 5, what="the other announcement to expire")


def test_announcing_refreshes_the_entry(client: redis.Redis, registry: WorkerRegistry) -> None:
    registry.announce("w1", ["default"], ttl=0.3)
    registry.announce("w1", ["default"], ttl=60)
    [(_, expires_at)] = client.zrange("voicecode:workers:expiries", 0, -1, withscores=True)
    assert expires_at > client.time()[0] + 50


def test_expired_entries_are_dropped_and_the_keys_expire_with_the_last(
    client: redis.Redis, registry: WorkerRegistry
) -> None:
    registry.announce("gone", ["backup"], ttl=0.2)
    wait_for(lambda: registry.accounts() == set(), 5, what="the announcement to expire")
    registry.announce("w1", ["default"], ttl=30)
    assert client.zrange("voicecode:workers:expiries", 0, -1) == [b"w1"]
    assert list(client.hkeys("voicecode:workers:accounts")) == [b"w1"]
    for key in ("voicecode:workers:expiries", "voicecode:workers:accounts"):
        assert 29_000 < client.pttl(key) <= 31_000


def test_withdraw_removes_a_worker_at_once(registry: WorkerRegistry) -> None:
    registry.announce("w1", ["default", "backup"])
    registry.announce("w2", ["default"])
    registry.withdraw("w1")
    assert registry.accounts() == {"default"}
    registry.withdraw("w2")
    registry.withdraw("never-announced")
    assert registry.accounts() == set()


def test_a_worker_with_no_accounts_adds_none(registry: WorkerRegistry) -> None:
    registry.announce("idle", [])
    assert registry.accounts() == set()


@pytest.mark.parametrize("ttl", [0, -1])
def test_a_ttl_must_be_positive(registry: WorkerRegistry, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        registry.announce("w1", ["default"], ttl=ttl)


def test_an_account_stays_known_when_no_worker_is_live(registry: WorkerRegistry) -> None:
    registry.announce("w1", ["default", "backup"], ttl=0.2)
    registry.withdraw("w1")
    view = registry.view()
    assert view.live == set() and view.known == {"default", "backup"}


def test_an_account_no_worker_announced_for_a_week_is_forgotten(client: redis.Redis, registry: WorkerRegistry) -> None:
    registry.announce("w1", ["default", "old"])
    seconds, _ = client.time()
    client.zadd("voicecode:workers:known", {"old": seconds - KNOWN_SECONDS - 1})
    assert registry.view().known == {"default"}


def test_the_workers_limits_are_the_last_announced(registry: WorkerRegistry) -> None:
    assert registry.view().limits is None
    registry.announce("w1", ["default"], limits=Limits((Window(1, 60), Window(5, 3600)), 300))
    registry.announce("w2", ["default"], limits=Limits((Window(2, 60),), 120))
    assert registry.view().limits == Limits((Window(2, 60),), 120)
    registry.announce("w3", ["default"])  # says nothing of limits: they stay
    assert registry.view().limits == Limits((Window(2, 60),), 120)
