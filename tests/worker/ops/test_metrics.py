"""The metrics exposition and its HTTP server: real Redis (database 6), real loopback HTTP."""
from __future__ import annotations

import base64
import http.client
import logging
import threading
from collections.abc import Callable, Iterator

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from worker.ops.metrics import CONTENT_TYPE, PoolCollector, make_server
from worker.stores.metrics import MetricsStore

ACCOUNTS = ("default", "backup")
HOSTILE = "13800138000"
AUTH = "ops:s3cr:et"


@pytest.fixture
def client(redis_db: redis.Redis) -> redis.Redis:
    """The shared empty test database (tests/worker/conftest.py)."""
    return redis_db


@pytest.fixture
def store(client: redis.Redis) -> MetricsStore:
    return MetricsStore(client, accounts=ACCOUNTS)


def collector(store: MetricsStore) -> PoolCollector:
    return PoolCollector(store, dead_letters=lambda: 3,
                         paused=lambda: {"default": False, "backup": True, HOSTILE: True},
                         balances=lambda: {"default": 250, "backup": None, HOSTILE: 7},
                         paused_hosts=lambda: {"default": 2, "backup": 0, HOSTILE: 1},
                         budgets=lambda: {"backup": (40, 50), HOSTILE: (1, 2)},
                         blocked_ranges=lambda: {"1380013": 120.5})


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_exposition_has_every_metric(store: MetricsStore) -> None:
    for _ in range(3):
        store.add(store.outcome("default", "submitted", 2))
    store.add(store.outcome("backup", "dead_lettered", 4051))
    store.add(store.outcome("default", "expired", None))
    for seconds in (0.02, 0.3, 0.3, 12.0):
        store.add(store.submit("default", seconds))
    store.add(store.rate_limit_wait("backup", 0.5))
    store.add(store.rate_limit_wait("backup", 0.25))

    text = collector(store).render()
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families == {"voicecode_outcomes": "counter", "voicecode_submit_seconds": "histogram",
                        "voicecode_rate_limit_waits": "counter", "voicecode_rate_limit_wait_seconds": "counter",
                        "voicecode_dead_letters": "gauge", "voicecode_account_paused": "gauge",
                        "voicecode_account_paused_hosts": "gauge", "voicecode_balance": "gauge",
                        "voicecode_account_daily_budget": "gauge", "voicecode_account_budget_used": "gauge",
                        "voicecode_ranges_blocked": "gauge", "voicecode_range_block_seconds": "gauge"}
    got = samples(text)

    def value(name: str, **labels: str) -> float:
        return got[(name, frozenset(labels.items()))]

    assert value("voicecode_outcomes_total", account="default", status="submitted", ihuyi_code="2") == 3
    assert value("voicecode_outcomes_total", account="backup", status="dead_lettered", ihuyi_code="4051") == 1
    assert value("voicecode_outcomes_total", account="default", status="expired", ihuyi_code="none") == 1
    buckets = [value("voicecode_submit_seconds_bucket", account="default", le=le)
               for le in ("0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf")]
    assert buckets == [1, 1, 1, 3, 3, 3, 3, 3, 4]
    assert value("voicecode_submit_seconds_count", account="default") == 4
    assert value("voicecode_submit_seconds_sum", account="default") == pytest.approx(12.62)
    assert value("voicecode_rate_limit_waits_total", account="backup") == 2
    assert value("voicecode_rate_limit_wait_seconds_total", account="backup") == 0.75
    assert value("voicecode_dead_letters") == 3
    assert value("voicecode_account_paused", account="default") == 0
    assert value("voicecode_account_paused", account="backup") == 1
    assert value("voicecode_account_paused_hosts", account="default") == 2
    assert value("voicecode_account_paused_hosts", account="backup") == 0
    assert value("voicecode_balance", account="default") == 250
    assert not any(name == "voicecode_balance" and ("account", "backup") in labels for name, labels in got)
    assert value("voicecode_account_daily_budget", account="backup") == 50
    assert value("voicecode_account_budget_used", account="backup") == 40
    assert not any(name.startswith("voicecode_account_budget") and ("account", "default") in labels
                   for name, labels in got)  # no budget: no series
    assert value("voicecode_ranges_blocked") == 1
    assert value("voicecode_range_block_seconds", range="1380013****") == 120.5


def test_no_number_or_code_is_ever_a_label(client: redis.Redis, store: MetricsStore) -> None:
    store.add(store.outcome(HOSTILE, HOSTILE, int(HOSTILE)))
    store.add(store.outcome("default", "submitted", 4821))
    store.add(store.submit(HOSTILE, 0.1))
    store.add(store.rate_limit_wait(HOSTILE, 0.1))
    client.hincrby("voicecode:metrics:outcomes", f"{HOSTILE}|{HOSTILE}|4821", 1)  # written by anything else

    text = collector(store).render()
    assert HOSTILE not in text and "4821" not in text
    assert samples(text)[("voicecode_outcomes_total",
                          frozenset({("account", "other"), ("status", "other"), ("ihuyi_code", "other")}))] == 2


def basic(credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


Reply = tuple[int, http.client.HTTPMessage, bytes]
Get = Callable[..., Reply]


@pytest.fixture
def serving() -> Iterator[Callable[[Callable[[], str], str | None], Get]]:
    """Starts metrics servers on free loopback ports; each start gives a function making one GET to it."""
    servers = []

    def start(render: Callable[[], str], basic_auth: str | None) -> Get:
        server = make_server("127.0.0.1", 0, render, basic_auth)  # bound and listening: requests queue
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        servers.append((server, thread))

        def get(path: str = "/metrics", headers: dict[str, str] | None = None) -> Reply:
            connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
            try:
                connection.request("GET", path, headers=headers or {})
                response = connection.getresponse()
                return response.status, response.headers, response.read()
            finally:
                connection.close()

        return get

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_server_wants_basic_auth(store: MetricsStore, serving: Callable[..., Get], capfd: pytest.CaptureFixture[str]) -> None:
    store.add(store.outcome("default", "submitted", 2))
    get = serving(collector(store).render, AUTH)

    for headers in ({}, basic("ops:wrong"), basic("ops:s3cr:et "), basic("ops"),
                    {"Authorization": "Basic !!!"}, {"Authorization": "Bearer " + AUTH}):
        status, reply_headers, body = get(headers=headers)
        assert status == 401, headers
        assert reply_headers["WWW-Authenticate"] == 'Basic realm="voicecode metrics"'
        assert b"voicecode_" not in body
    assert get("/", headers={})[0] == 401  # nothing is said to a stranger, not even 404

    status, reply_headers, body = get(headers=basic(AUTH))
    assert status == 200
    assert reply_headers["Content-Type"] == CONTENT_TYPE
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")
    assert samples(body.decode())[("voicecode_outcomes_total", frozenset(
        {("account", "default"), ("status", "submitted"), ("ihuyi_code", "2")}))] == 1
    assert get("/metrics?x=1", headers=basic(AUTH))[0] == 200
    assert get("/", headers=basic(AUTH))[0] == 404
    assert get("/metricsx", headers=basic(AUTH))[0] == 404

    out, err = capfd.readouterr()
    assert "GET" not in out + err and "s3cr" not in out + err


def test_an_open_server_and_a_failing_render(serving: Callable[..., Get], caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def render() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise redis.ConnectionError("state Redis unreachable")
        return "voicecode_dead_letters 0\n"

    get = serving(render, None)
    with caplog.at_level(logging.ERROR, logger="worker.ops.metrics"):
        assert get()[0] == 500
    assert "rendering metrics failed" in caplog.text
    status, _, body = get()
    assert (status, body) == (200, b"voicecode_dead_letters 0\n")


def test_basic_auth_must_be_user_and_password() -> None:
    for bad in ("nocolon", "ops:pw,nocolon"):
        with pytest.raises(ValueError, match="user:password"):
            make_server("127.0.0.1", 0, str, bad)


def test_any_of_several_credentials_gets_in(serving: Callable[..., Get]) -> None:
    """Several pairs, as FLOWER_BASIC_AUTH may hold (``voicecode metrics`` falls back to it)."""
    get = serving(lambda: "voicecode_dead_letters 0\n", "ops:one,scraper:two")
    assert [get(headers=basic(pair))[0] for pair in ("ops:one", "scraper:two", "ops:two", "ops:one,scraper:two")] == [
        200, 200, 401, 401]
