"""Results, alerts and the balance monitor in Sentry, end to end.

Two real worker processes (and a beat) run the real sentry-sdk, posting to a receiver on
loopback (tests/sentry_receiver.py); nothing of ``sentry_sdk`` is mocked. The last test
scans every byte they sent for the APIKEYs, the mobile numbers and the code.
"""
from __future__ import annotations

import re
import time
import uuid

import pytest
import sentry_sdk
from sentry_sdk import logger as sentry_logger

from tests.sentry_receiver import SentryReceiver
from tests.stacks import redis_stack, start, stop
from tests.support import ACCOUNTS, SECRETS, SPARE_APIID, unique_mobile, wait_for
from worker.stores.accounts import AccountStates
from worker.ops.reporting import report_outcome, tags_of

CODE = "730519"
RESULT_TIMEOUT = 30
SENTRY_TIMEOUT = 30  # Sentry logs are sent in batches, at least every 5 s; a loaded machine delays them more
#: Every full mobile number this module sends, for the final scan.
SENT: list[str] = []


@pytest.fixture(scope="module")
def receiver():
    with SentryReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def stack(sandbox, receiver):
    with redis_stack(sandbox, SENTRY_DSN=receiver.dsn, SENTRY_ENVIRONMENT="test", SENTRY_TRACES_SAMPLE_RATE="1.0",
                     ALERT_DEDUP_SECONDS="600", BALANCE_ALERT_THRESHOLD="5000", BALANCE_CHECK_SECONDS="1",
                     MOBILE_THROTTLE="1/60s") as stack:
        stack.start_worker(concurrency=8)
        stack.start_worker(concurrency=8)
        yield stack


@pytest.fixture
def clean(stack, fresh_sandbox):
    """The sandbox as new before and after, and every account resumed after."""
    yield
    fresh_sandbox.reset()
    states = AccountStates(stack.state)
    for name in ACCOUNTS:
        states.resume(name)


@pytest.mark.parametrize(("result", "tags"), [
    ({"status": "submitted", "account": "default", "code": 2},
     {"account": "default", "outcome": "submitted", "ihuyi_code": "2"}),
    ({"status": "dead_lettered", "account": "spare", "code": 4051, "reason": "account_paused"},
     {"account": "spare", "outcome": "account_paused", "ihuyi_code": "4051", "reason": "account_paused"}),
    ({"status": "dead_lettered", "account": "default", "code": None, "reason": "throttled"},
     {"account": "default", "outcome": "throttled", "ihuyi_code": "none", "reason": "throttled"}),
    ({"status": "dead_lettered", "account": None, "code": None, "reason": "invalid_payload"},
     {"account": "none", "outcome": "dead_lettered", "ihuyi_code": "none", "reason": "invalid_payload"}),
])
def test_tags_of_a_result(result, tags):
    assert tags_of(result) == tags


def test_without_a_sentry_client_an_outcome_builds_nothing(monkeypatch):
    built = []
    monkeypatch.setattr(sentry_logger, "info", lambda *args, **kwargs: built.append(args))
    monkeypatch.setattr(sentry_sdk, "set_tags", lambda tags: built.append(tags))
    assert not sentry_sdk.get_client().is_active()
    report_outcome({"status": "submitted", "account": "default", "code": 2})
    assert built == []


def send(stack, mobile: str, account: str = "default", request_id: str | None = None, *, foreign: bool = False):
    SENT.append(mobile)
    return stack.send(mobile, CODE, foreign=foreign, account=account,
                      request_id=request_id or f"rep-{uuid.uuid4().hex[:12]}")


def alerts(receiver, kind: str, account: str) -> list[dict]:
    return [e for e in receiver.alerts() if e["fingerprint"] == ["voicecode", kind, account]]


def outcome_tags(receiver) -> set[tuple]:
    """(request_id, outcome, account, ihuyi_code, attempts) of every outcome log line."""
    return {tuple(log["attributes"].get(k) for k in ("request_id", "outcome", "account", "ihuyi_code", "attempts"))
            for log in receiver.outcome_logs()}


def test_every_outcome_arrives_tagged(stack, receiver, clean):
    ordinary, first_id = unique_mobile("138"), f"rep-{uuid.uuid4().hex[:12]}"
    sent = {
        "submitted": send(stack, ordinary, request_id=first_id),
        "retried then submitted": send(stack, unique_mobile("1990102")),  # code 0 twice, then sent
        "blacklisted": send(stack, "19900004030"),
        "unknown code": send(stack, "19900009999"),
        "frozen": send(stack, "19900004050", account="backup"),
        "refused": send(stack, "19900000405", account="slow"),
    }
    SENT.append(late := unique_mobile("138"))
    sent["expired"] = stack.client.send_task("send_voice_code", (late, CODE), {"request_id": "rep-expired", "ttl": 1},
                                             countdown=2, headers={"enqueued_at": time.time()})
    results = {name: r.get(timeout=RESULT_TIMEOUT) for name, r in sent.items()}
    later = {
        "duplicate": send(stack, ordinary, request_id=first_id),
        "throttled": stack.client.send_task("send_voice_code", (ordinary, CODE), {"request_id": "rep-throttled"}),
        "paused": send(stack, unique_mobile("138"), account="backup"),
    }
    results |= {name: r.get(timeout=RESULT_TIMEOUT) for name, r in later.items()}
    expected = {
        "submitted": ("submitted", "default", "2"),
        "retried then submitted": ("submitted", "default", "2"),
        "blacklisted": ("dead_lettered", "default", "4030"),
        "unknown code": ("dead_lettered", "default", "9999"),
        "frozen": ("dead_lettered", "backup", "4050"),
        "refused": ("dead_lettered", "slow", "405"),
        "expired": ("expired", "default", "none"),
        "duplicate": ("duplicate", "default", "2"),
        "throttled": ("throttled", "default", "none"),
        "paused": ("account_paused", "backup", "4050"),
    }
    ids = {name: r.id for name, r in (sent | later).items()}

    wanted = {(results[name]["request_id"], *tags, results[name]["attempts"]) for name, tags in expected.items()}
    try:
        wait_for(lambda: wanted <= outcome_tags(receiver), SENTRY_TIMEOUT, 0.2, "an outcome log per result")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; missing {wanted - outcome_tags(receiver)}") from None
    assert results["retried then submitted"]["attempts"] == 3
    tagged = {t["tags"]["celery_task_id"]: t["tags"] for t in receiver.transactions()
              if t["transaction"] == "send_voice_code" and "outcome" in t["tags"]}
    for name, (outcome, account, code) in expected.items():
        tags = tagged[ids[name]]
        assert (tags["outcome"], tags["account"], tags["ihuyi_code"]) == (outcome, account, code), name
    # Every run is sampled here: the Submit is the transaction's one HTTP span, named without its query.
    [submitted] = [t for t in receiver.transactions() if t["tags"].get("celery_task_id") == ids["submitted"]]
    spans = [(s["description"], s["data"]["ihuyi.method"], s["data"]["ihuyi.account"])
             for s in submitted["spans"] if s["op"] == "http.client"]
    assert spans == [(f"POST {stack.env['IHUYI_API_URL'].split('?')[0]}", "Submit", "default")], spans

    for kind, account, code in (("unknown_code", "default", "9999"), ("account_frozen", "backup", "4050"),
                                ("credentials_refused", "slow", "405")):
        [alert] = alerts(receiver, kind, account)  # the paused send on backup was deduplicated
        assert alert["level"] == "error"
        assert {k: alert["tags"][k] for k in ("kind", "account", "ihuyi_code")} == {
            "kind": kind, "account": account, "ihuyi_code": code}
    assert not alerts(receiver, "low_balance", "default")  # 4030 is about one number, nobody's needed


def test_a_backlog_of_4051_raises_one_low_balance_alert(stack, receiver, sandbox, clean):
    sandbox.set_account(SPARE_APIID, balance=0)
    pending = [send(stack, unique_mobile("139"), account="spare") for _ in range(25)]
    pending += [send(stack, unique_mobile("139"), account="spare", foreign=True) for _ in range(25)]
    results = [r.get(timeout=RESULT_TIMEOUT) for r in pending]
    assert {(r["status"], r["code"]) for r in results} == {("dead_lettered", 4051)}
    assert {r["reason"] for r in results} <= {"permanent", "account_paused"}
    assert all(any(r.id in worker.text() for r in pending) for worker in stack.workers)  # both took some: pool-wide
    ids = {r["request_id"] for r in results}
    wait_for(lambda: ids <= {log[0] for log in outcome_tags(receiver)}, SENTRY_TIMEOUT, 0.2, "50 outcome logs")

    [alert] = alerts(receiver, "low_balance", "spare")
    assert alert["level"] == "error"
    assert alert["tags"]["kind"] == "low_balance" and alert["tags"]["account"] == "spare"
    assert alert["tags"]["ihuyi_code"] == "4051"
    assert alert["contexts"]["alert"]["dedup_seconds"] == 600
    assert alert["environment"] == "test" and alert["release"].startswith("voicecode@")


def balance_logs(receiver) -> list[dict]:
    return [log for log in receiver.logs() if log["body"] == "balance of account default: 1000"]


def test_beat_checks_balances_alerts_under_the_threshold_and_checks_in(stack, receiver, sandbox, clean):
    sandbox.set_account("main-apiid", frozen=True)  # its GetNum answers 4050
    beat = start(stack, "beat", "-m", "celery", "-A", "worker.app", "beat", "--loglevel", "INFO",
                 "--schedule", str(stack.tmp / "celerybeat-schedule"))
    try:
        wait_for(lambda: alerts(receiver, "balance_below_threshold", "default") and balance_logs(receiver)
                 and alerts(receiver, "account_frozen", "main")
                 and {"in_progress", "ok"} <= {c["status"] for c in receiver.check_ins()
                                               if c["monitor_slug"] == "check-balance"},
                 SENTRY_TIMEOUT, 0.2, "the balance alert, log and check-ins")
    finally:
        stop(beat)
    [alert] = alerts(receiver, "balance_below_threshold", "default")
    assert alert["level"] == "warning" and alert["tags"]["kind"] == "balance_below_threshold"
    assert alert["contexts"]["alert"]["balance"] == 1000 and alert["contexts"]["alert"]["threshold"] == 5000
    assert "balance 1000 is under 5000" in alert["message"]
    [frozen] = alerts(receiver, "account_frozen", "main")  # seen by the balance check: nothing was sent
    assert frozen["tags"]["ihuyi_code"] == "4050" and "GetNum" in frozen["message"]
    assert not alerts(receiver, "balance_below_threshold", "main")
    check_in = next(c for c in receiver.check_ins() if c["monitor_slug"] == "check-balance")
    assert check_in["monitor_config"]["schedule"] == {"type": "interval", "value": 1, "unit": "minute"}
    assert check_in["environment"] == "test"
    assert "Sentry on: environment test" in (stack.tmp / "beat.log").read_text()
    assert balance_logs(receiver)[0]["attributes"]["balance"] == 1000


@pytest.mark.e2e  # scans what the e2e tests above sent
def test_nothing_secret_reached_sentry(receiver):
    wire = b"".join(receiver.bodies)
    assert len(receiver.bodies) > 10 and len(SENT) > 50
    assert b"138****" in wire  # the numbers were there, masked
    assert not [s for s in SECRETS if s.encode() in wire]
    assert not [m for m in SENT if m.encode() in wire]
    assert not re.search(rb"(?<![\w.])" + CODE.encode() + rb"(?![\w.])", wire)
