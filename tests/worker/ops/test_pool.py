"""The pool as ihuyi really answers and as an operator scrapes it, end to end.

Two worker processes stand for two hosts (``VOICECODE_HOST`` host-a and host-b), each
reaching ihuyi through a sandbox of its own, so ihuyi can refuse one host (its IP, its
clock) and not the other. On Redis database 1 (broker and state). In order: ihuyi refusing
a number called too often, the warning about a plain http:// ihuyi, one host's IP refused,
one host's clock skewed, an account at 10/s over both workers, and last the metrics
endpoint, scraped and checked against every result the module collected.
"""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from celery.result import AsyncResult
from prometheus_client.parser import text_string_to_metric_families

from ihuyi.sandbox import Sandbox
from tests.conftest import require_servers
from tests.stacks import start, stop
from tests.support import ROOT, Stack, base_env, make_backend, submits, unique_mobile, wait_for
from worker.sending.flow import outcome_of
from worker.stores.accounts import AccountStates
from worker.stores.deadletters import DeadLetterStore

pytestmark = pytest.mark.e2e

ACCOUNTS = {
    "default": {"apiid": "pool-apiid", "apikey": "p00l-S3CR3T-4e5f60", "rate_limit": "1000/s"},
    "ten": {"apiid": "ten-apiid", "apikey": "t3n-S3CR3T-718293"},  # IHUYI_RATE_LIMIT 10/s, the default burst
}
APIKEYS = {spec["apiid"]: spec["apikey"] for spec in ACCOUNTS.values()}
DEFAULT_APIID = ACCOUNTS["default"]["apiid"]
HOST_A, HOST_B = "host-a", "host-b"
METRICS_AUTH = ("prometheus", "scr4pe-S3CR3T")
RESULT_TIMEOUT = 30
#: Every final result of the module, and every full number sent, for the metrics test at the end.
RESULTS: list[dict] = []
SENT: list[str] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sandboxes() -> Iterator[tuple[Sandbox, Sandbox]]:
    """ihuyi as host A reaches it, and as host B does."""
    with Sandbox(APIKEYS, initial_balance=10**6) as a, Sandbox(APIKEYS, initial_balance=10**6) as b:
        yield a, b


@pytest.fixture(scope="module")
def pool(sandboxes) -> Iterator[Stack]:
    require_servers("redis")
    a, b = sandboxes
    with tempfile.TemporaryDirectory(prefix="vc-", dir="/tmp") as tmp:
        backend = make_backend("redis", Path(tmp), redis_db=1)
        backend.flush()
        env = base_env(b.url, **backend.env, IHUYI_ACCOUNTS=json.dumps(ACCOUNTS), IHUYI_RATE_LIMIT="10/s",
                       ACCOUNT_PROBE_SECONDS="1", METRICS_BASIC_AUTH=":".join(METRICS_AUTH))
        stack = Stack(backend, env, Path(tmp))
        stack.start_worker(name=HOST_A, env={"VOICECODE_HOST": HOST_A, "IHUYI_API_URL": a.url})
        stack.start_worker(name=HOST_B, env={"VOICECODE_HOST": HOST_B})
        try:
            yield stack
        finally:
            stack.stop_workers()


@pytest.fixture
def states(pool) -> AccountStates:
    return AccountStates(pool.state)


def send(pool: Stack, mobile: str | None = None, account: str = "default") -> AsyncResult:
    mobile = mobile or unique_mobile("138")
    SENT.append(mobile)
    return pool.send(mobile, "4821", account=account)


def result_of(async_result: AsyncResult) -> dict:
    result = async_result.get(timeout=RESULT_TIMEOUT)
    RESULTS.append(result)
    return result


def sent_until(pool: Stack, condition, what: str, timeout: float = 30) -> None:
    """Send one code after another (each to its end) until ``condition()``: a host only acts on what it is given."""
    wait_for(lambda: result_of(send(pool)) and condition(), timeout, 0.05, what)


def log_of(pool: Stack, host: str) -> str:
    return (pool.tmp / f"{host}.log").read_text(errors="replace")


@pytest.mark.parametrize(("code", "window"), [(4081, 60), (4085, 86400)])
def test_a_number_ihuyi_refuses_as_called_too_often_is_throttled_and_refused_at_the_next_enqueue(
        pool, states, code, window):
    mobile = f"1990000{code}"
    result = result_of(send(pool, mobile))
    assert (result["status"], result["reason"], result["code"]) == ("dead_lettered", "throttled", code)
    refused = pool.cli("send", mobile, "4822")
    match = re.fullmatch(r"voicecode: mobile: too many calls to this number; retry after (\d+) s\n", refused.stderr)
    assert refused.returncode == 1 and match and window - 5 <= int(match[1]) <= window, refused.stderr
    assert [states.paused("default", host) for host in (HOST_A, HOST_B)] == [None, None]
    assert "ALERT" not in log_of(pool, HOST_A) + log_of(pool, HOST_B)  # no unknown_code, nor any other


def test_a_plain_http_ihuyi_url_is_warned_about_once_at_start(pool):
    for host in (HOST_A, HOST_B):
        log = log_of(pool, host)
        assert log.count("IHUYI_API_URL is plain http://") == 1
        assert log.index("IHUYI_API_URL is plain http://") < log.index(" ready.")  # at start, before any task


def test_a_host_whose_ip_is_refused_stops_alone_and_the_other_sends_until_a_probe_resumes_it(
        pool, sandboxes, states):
    a, b = sandboxes
    a.set_account(DEFAULT_APIID, forced_code=4052)
    sent_until(pool, lambda: states.paused("default", HOST_A) is not None, "host A paused")
    assert states.paused("default", HOST_A).code == 4052
    assert states.paused("default") is None and states.paused("default", HOST_B) is None

    batch = [unique_mobile("138") for _ in range(20)]
    results = [result_of(r) for r in [send(pool, m) for m in batch]]
    assert {r["status"] for r in results} == {"submitted"}
    assert [len(submits(b, m)) for m in batch] == [1] * 20  # host B sent every one
    assert not any(submits(a, m) for m in batch)  # host A handed its share back, calling nobody
    assert re.search(rf"ALERT ip_refused \[error\] account default host {HOST_A}: .*code 4052 on host {HOST_A}",
                     log_of(pool, HOST_A))

    a.set_account(DEFAULT_APIID, forced_code=None)  # host A's IP registered with ihuyi
    sent_until(pool, lambda: states.paused("default", HOST_A) is None, "host A's probe to resume it")
    sent_until(pool, lambda: any(c["reply"] == 2 for c in a.calls()), "host A to send again")


def test_a_host_whose_clock_is_off_stops_alone_and_says_by_how_much(pool, sandboxes, states):
    a, b = sandboxes
    a.clock_offset = -3600.0  # ihuyi, as host A sees it, an hour behind host A's clock
    try:
        sent_until(pool, lambda: states.paused("default", HOST_A) is not None, "host A paused")
        pause = states.paused("default", HOST_A)
        assert pause.code == 405 and pause.msg.startswith(f"clock skew on host {HOST_A} by 3600 s")
        assert states.paused("default") is None  # not the account's APIKEY: the pool goes on
        assert f"ALERT clock_skew [error] account default host {HOST_A}: clock skew on host {HOST_A} by 3600 s" in log_of(
            pool, HOST_A)
        assert result_of(send(pool))["status"] == "submitted"
    finally:
        a.clock_offset = 0.0
    sent_until(pool, lambda: states.paused("default", HOST_A) is None, "host A's probe to resume it")


LATE = 0.2


def test_ten_per_second_over_two_workers(pool, sandboxes):
    """``10/s`` and no burst: slots 0.1 s apart pool-wide, so at most 11 in any second and 10/s sustained.

    A Submit arrives after its slot, never before it, and on a loaded machine up to ``LATE`` after it:
    then two slots' Submits can arrive together. Arrivals in any window of ``1 - LATE`` seconds
    therefore had their slots in one second, and there are at most 11 of those.
    """
    tasks = 150
    mobiles = [unique_mobile("138") for _ in range(tasks)]
    SENT.extend(mobiles)
    # Published from another process: this one, where the sandboxes take their timestamps, stays idle.
    script = ("import json, sys, time; from celery import Celery\n"
              "app = Celery(broker=sys.argv[1]); app.conf.task_default_queue = 'voicecode'\n"
              "for m in json.loads(sys.stdin.read()):\n"
              "    print(app.send_task('send_voice_code', (m, '4821'), {'account': 'ten'},"
              " headers={'enqueued_at': time.time()}).id)\n")
    done = subprocess.run([sys.executable, "-c", script, pool.backend.broker], input=json.dumps(mobiles), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    pending = [pool.client.AsyncResult(task_id) for task_id in done.stdout.split()]
    assert len(pending) == tasks, done.stderr
    assert {result_of(r)["status"] for r in pending} == {"submitted"}
    arrivals = sorted(c["at"] for box in sandboxes for c in box.calls() if c["account"] == ACCOUNTS["ten"]["apiid"])
    assert len(arrivals) == tasks

    def busiest(window: float) -> int:
        return max(sum(1 for t in arrivals if start <= t < start + window) for start in arrivals)

    sustained = (tasks - 1) / (arrivals[-1] - arrivals[0])
    print(f"\n10/s over two workers, {tasks} Submits: busiest second {busiest(1.0)},"
          f" busiest {1 - LATE:.1f} s {busiest(1 - LATE)}, sustained {sustained:.2f}/s")
    assert busiest(1 - LATE) <= 11
    assert 9.5 <= sustained <= 10.5
    assert all(any(c["account"] == ACCOUNTS["ten"]["apiid"] for c in box.calls()) for box in sandboxes)  # both sent


def scrape(url: str, auth: tuple[str, str] | None = METRICS_AUTH) -> requests.Response:
    return requests.get(url, auth=auth, timeout=10)


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_metrics_scraped_after_the_run_match_every_result(pool, sandboxes, states):
    assert len(RESULTS) > 150  # the tests above ran
    assert pool.cli("balance").returncode == 0  # a balance recorded for each account, as the beat's check does
    port = free_port()
    process = start(pool, "metrics", "-m", "cli", "metrics", "--port", str(port), "--address", "127.0.0.1")
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for(lambda: _answers(url), 30, 0.1, "the metrics endpoint")
        assert scrape(url, None).status_code == 401 and scrape(url, ("prometheus", "wrong")).status_code == 401
        reply = scrape(url)
    finally:
        stop(process)
    assert process.returncode == 0  # SIGTERM stops it cleanly
    assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text, got = reply.text, samples(reply.text)

    def series(name: str) -> dict[frozenset, float]:
        return {labels: value for (n, labels), value in got.items() if n == name}

    outcomes = Counter(frozenset({"account": r["account"], "status": outcome_of(r),
                                  "ihuyi_code": "none" if r["code"] is None else str(r["code"])}.items())
                       for r in RESULTS)
    assert series("voicecode_outcomes_total") == dict(outcomes)

    for name, spec in ACCOUNTS.items():
        calls = [c for box in sandboxes for c in box.calls() if c["account"] == spec["apiid"]]
        labels = frozenset({("account", name)})
        assert got[("voicecode_submit_seconds_count", labels)] == len(calls)  # every Submit, whatever it answered
        buckets = sorted((float(dict(k)["le"]), v) for k, v in series("voicecode_submit_seconds_bucket").items()
                         if dict(k)["account"] == name)
        assert [v for _, v in buckets] == sorted(v for _, v in buckets) and buckets[-1][1] == len(calls)
        assert 0 < got[("voicecode_submit_seconds_sum", labels)] < len(calls)  # well under a second each
        assert got[("voicecode_account_paused", labels)] == 0
        assert got[("voicecode_account_paused_hosts", labels)] == 0
        assert got[("voicecode_balance", labels)] == 10**6 - sum(c["reply"] == 2 for c in sandboxes[1].calls()
                                                                 if c["account"] == spec["apiid"])
    waits = got[("voicecode_rate_limit_waits_total", frozenset({("account", "ten")}))]
    assert 149 <= waits <= 300  # every send on "ten" but the first waited for its slot (a late one twice)
    assert got[("voicecode_rate_limit_wait_seconds_total", frozenset({("account", "ten")}))] > 149 * 0.05
    dead = sum(r["status"] == "dead_lettered" for r in RESULTS)
    assert got[("voicecode_dead_letters", frozenset())] == dead == len(DeadLetterStore(pool.state).list()) > 0

    assert not [m for m in SENT if m in text]
    assert not re.search(r"(?<!\d)1[3-9]\d{9}(?!\d)", text)
    assert not [key for key in APIKEYS.values() if key in text]


def _answers(url: str) -> bool:
    try:
        return scrape(url).status_code == 200
    except requests.ConnectionError:
        return False
