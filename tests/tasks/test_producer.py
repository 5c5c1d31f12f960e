"""The producer as a web app uses it: no ihuyi secret, idempotent enqueue, a request id that means one
request, accounts no worker has served refused and known ones queued while no worker is live.

Real workers on the embedded default, Redis and RabbitMQ (``producer_stack`` in conftest).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from config.settings import load_producer_settings
from tasks.producer import InvalidPayload, Producer, RequestIdConflict, Throttled
from tests.servers import free_port
from tests.support import ACCOUNTS, ROOT, Stack, submits, unique_mobile, wait_for
from tests.tasks.backends import producer_env
from worker.celeryconf import ANNOUNCE_EVERY_SECONDS
from worker.stores.idempotency import task_id_for
from worker.stores.registry import WorkerRegistry

STACK_ENV = {"MOBILE_THROTTLE": "1/60s", "REQUESTER_THROTTLE": "1/60s"}
#: The module's worker leaves the backup account's queue alone: a configured account no worker consumes.
WORKER_ARGS = ("--exclude-queues", "voicecode.backup")
RESULT_TIMEOUT = 30

# A web app's process: imports the producer (and says what that loaded), then enqueues one code.
WEB_APP = """
import json, sys
import tasks.producer
loaded = sorted({"celery", "worker.app", "worker.celeryconf", "tasks.voice", "ihuyi.sandbox"} & set(sys.modules))
print(json.dumps({"loaded": loaded}), flush=True)
result = tasks.producer.enqueue_voice_code(sys.argv[1], "4821")
print(json.dumps({"task_id": result.id, "result": result.get(timeout=30)}))
"""


def redis_servers() -> dict[int, str]:
    """Every running redis-server: pid -> its command line (its title names its socket or port)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        if proc.name.isdigit() and "redis-server" in cmdline:
            found[int(proc.name)] = cmdline
    return found


def test_a_web_app_needs_only_the_broker_and_state_urls(producer_stack: Stack, sandbox):
    mobile = unique_mobile("138")
    with tempfile.TemporaryDirectory(prefix="vc-home-", dir="/tmp") as home:
        # Only where the broker and the state live (the embedded default: where it lives), a home
        # without a .env file, and nothing else: no IHUYI_* account, no APIKEY.
        places = {k: v for k, v in producer_stack.env.items()
                  if k in ("CELERY_BROKER_URL", "REDIS_URL", "VOICECODE_STATE_DIR")}
        before = redis_servers()
        done = subprocess.run([sys.executable, "-c", WEB_APP, mobile], cwd=home, env={**places, "HOME": home},
                              capture_output=True, text=True, timeout=60)
        started = {pid: cmd for pid, cmd in redis_servers().items() if pid not in before}
        assert not [cmd for cmd in started.values() if home in cmd or str(producer_stack.tmp) in cmd], started
        assert not Path(home, ".local").exists()  # where an embedded Redis would have been started
    assert done.returncode == 0, done.stderr
    imported, sent = (json.loads(line) for line in done.stdout.splitlines())
    assert imported == {"loaded": []}  # no worker app, no Celery app at import
    assert sent["result"]["status"] == "submitted"
    assert [c["content"] for c in submits(sandbox, mobile)] == ["4821"]


def test_the_same_request_id_is_one_task_one_call_and_throttled_once(producer: Producer, sandbox):
    mobile = unique_mobile("139")
    request_id = f"login:{mobile}:nonce-1"
    first = producer.enqueue(mobile, "1357", request_id=request_id)
    queued = producer.enqueue(mobile, "1357", request_id=request_id)  # inside the 1/60s window
    assert first.id == queued.id == task_id_for(request_id)
    assert first.get(timeout=RESULT_TIMEOUT)["status"] == "submitted"
    done = producer.enqueue(mobile, "1357", request_id=request_id)
    assert done.id == first.id and done.get(timeout=RESULT_TIMEOUT)["status"] == "submitted"
    with pytest.raises(Throttled) as refused:  # a new request counts against the number
        producer.enqueue(mobile, "2468", request_id=f"login:{mobile}:nonce-2")
    assert 0 < refused.value.retry_after <= 60
    assert [c["content"] for c in submits(sandbox, mobile)] == ["1357"]


def test_cli_send_with_a_request_id_twice_prints_one_task(producer_stack: Stack, sandbox):
    mobile = unique_mobile("137")

    def send() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cli", "send", mobile, "9753", "--request-id", "cli-1",
                               "--wait", "30"], cwd=ROOT, env=producer_env(producer_stack), capture_output=True,
                              text=True, timeout=60)

    first, second = send(), send()
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.splitlines()[0] == second.stdout.splitlines()[0] == task_id_for("cli-1")
    assert len(submits(sandbox, mobile)) == 1


def test_an_unknown_account_is_refused_at_enqueue(producer: Producer, sandbox):
    mobile = unique_mobile("136")
    with pytest.raises(InvalidPayload) as refused:
        producer.enqueue(mobile, "4821", account="marketing")
    assert refused.value.field == "account"
    assert str(refused.value) == "account: unknown account 'marketing': no worker has served its queue " \
                                 "'voicecode.marketing'"
    assert submits(sandbox, mobile) == []


def test_an_account_no_worker_has_served_is_refused_and_one_served_before_is_queued_while_none_is_live(
        producer_stack: Stack, producer: Producer, sandbox):
    mobile = unique_mobile("135")
    assert "backup" in ACCOUNTS  # configured on the worker, which does not consume its queue
    with pytest.raises(InvalidPayload, match="'voicecode.backup'"):
        producer.enqueue(mobile, "4821", account="backup")

    worker = producer_stack.start_worker("--queues", "voicecode.backup", name="backup-only")
    result = producer.enqueue(mobile, "4821", account="backup")
    assert result.get(timeout=RESULT_TIMEOUT)["account"] == "backup"
    assert [c["account"] for c in submits(sandbox, mobile)] == [ACCOUNTS["backup"]["apiid"]]

    worker.stop()  # withdraws at once: no live worker serves the account now, as during a restart
    producer_stack.workers.remove(worker)
    assert "backup" not in WorkerRegistry(producer.state).accounts()
    later = unique_mobile("135")
    queued = producer.enqueue(later, "4822", account="backup")  # held by the queue, not refused
    assert submits(sandbox, later) == []
    again = producer_stack.start_worker("--queues", "voicecode.backup", name="backup-again")
    assert queued.get(timeout=RESULT_TIMEOUT)["status"] == "submitted"
    assert [c["content"] for c in submits(sandbox, later)] == ["4822"]
    again.stop()
    producer_stack.workers.remove(again)


def test_a_request_id_reused_for_another_number_is_a_conflict_that_calls_nobody(producer_stack: Stack,
                                                                                producer: Producer, sandbox):
    first, second = unique_mobile("133"), unique_mobile("133")
    request_id = f"order-{first}"
    sent = producer.enqueue(first, "4321", request_id=request_id)
    with pytest.raises(RequestIdConflict) as refused:
        producer.enqueue(second, "4321", request_id=request_id)
    assert isinstance(refused.value, InvalidPayload) and refused.value.field == "request_id"
    assert first not in str(refused.value) and second not in str(refused.value)
    assert f"order-{first[:3]}****{first[-4:]}" in str(refused.value)  # the id, its digits masked
    with pytest.raises(RequestIdConflict):
        producer.enqueue(first, "4322", request_id=request_id)  # another code
    with pytest.raises(RequestIdConflict):
        producer.enqueue(first, "4321", account="spare", request_id=request_id)  # another account
    assert sent.get(timeout=RESULT_TIMEOUT)["status"] == "submitted"

    # By name, from a producer that does not use the API: the worker calls nobody and says why.
    by_name = producer_stack.send(second, "4321", request_id=request_id)
    result = by_name.get(timeout=RESULT_TIMEOUT)
    assert result["status"] == "request_id_conflict" and result["voiceid"] is None
    assert result["mobile"] == f"{second[:3]}****{second[-4:]}"  # its own number, never the other request's
    assert result["request_id"] == f"order-{first[:3]}****{first[-4:]}"  # the id as given, its digits masked
    assert first not in json.dumps(result)
    assert [c["content"] for c in submits(sandbox, first)] == ["4321"] and submits(sandbox, second) == []
    letter = producer_stack.dead_letters.get(result["dead_letter"])
    assert letter.reason == "request_id_conflict" and first not in json.dumps(letter.to_dict())
    assert producer.enqueue(first, "4321", request_id=request_id).id == sent.id  # the same request still is


def test_cli_send_with_a_request_id_used_for_another_number_exits_with_one_line(producer_stack: Stack, sandbox):
    first, second = unique_mobile("132"), unique_mobile("132")

    def send(mobile: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cli", "send", mobile, "9753", "--request-id", f"cli-{first}"],
                              cwd=ROOT, env=producer_env(producer_stack), capture_output=True, text=True, timeout=60)

    assert send(first).returncode == 0
    refused = send(second)
    assert refused.returncode != 0 and refused.stdout == ""
    assert refused.stderr.splitlines() == [
        f"voicecode: request_id: 'cli-{first[:3]}****{first[-4:]}' was used before for another number, code or "
        "account; use a new request id for a new request"]


def test_send_voice_code_delay_in_a_web_app_is_the_producer_api(producer_stack: Stack, sandbox):
    mobile, other = unique_mobile("131"), unique_mobile("131")
    script = """
import json, sys
from tasks.voice import send_voice_code
from tasks.producer import RequestIdConflict
print(json.dumps({"imported": True}), flush=True)
first = send_voice_code.delay(sys.argv[1], "4821", request_id="delay-" + sys.argv[1])
again = send_voice_code.apply_async((sys.argv[1], "4821"), {"request_id": "delay-" + sys.argv[1]})
try:
    send_voice_code.delay(sys.argv[2], "4821", request_id="delay-" + sys.argv[1])
except RequestIdConflict as exc:
    conflict = exc.field
print(json.dumps({"ids": [first.id, again.id], "conflict": conflict, "result": first.get(timeout=30)}))
"""
    places = {k: v for k, v in producer_stack.env.items()
              if k in ("CELERY_BROKER_URL", "REDIS_URL", "VOICECODE_STATE_DIR", "PATH")}
    with tempfile.TemporaryDirectory(prefix="vc-home-", dir="/tmp") as home:
        done = subprocess.run([sys.executable, "-c", script, mobile, other], cwd=home,
                              env={**places, "HOME": home},
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    imported, sent = (json.loads(line) for line in done.stdout.splitlines())
    assert sent["ids"] == [task_id_for(f"delay-{mobile}")] * 2 and sent["conflict"] == "request_id"
    assert sent["result"]["status"] == "submitted"
    assert [c["content"] for c in submits(sandbox, mobile)] == ["4821"] and submits(sandbox, other) == []


def test_a_request_whose_publish_failed_can_be_asked_again(producer_stack: Stack, producer: Producer, sandbox):
    mobile, requester = unique_mobile("131"), f"client-{unique_mobile()}"
    dead_broker = ("amqp://guest:guest@127.0.0.1:{}//" if producer_stack.backend.broker.startswith("amqp")
                   else "redis://127.0.0.1:{}/0").format(free_port())
    broken = Producer(load_producer_settings({**producer_env(producer_stack), "REDIS_URL": producer_stack.backend.state,
                                              "CELERY_BROKER_URL": dead_broker}))
    with pytest.raises(Exception):
        broken.enqueue(mobile, "4821", request_id=f"lost-{mobile}", requester=requester)
    # Nothing went out, so nothing counts: neither the number's one call a minute nor the requester's
    # one request, whether the web app asks again with the same request id or a new one.
    result = producer.enqueue(mobile, "4821", request_id=f"again-{mobile}", requester=requester)
    assert result.get(timeout=RESULT_TIMEOUT)["status"] == "submitted"
    assert [c["content"] for c in submits(sandbox, mobile)] == ["4821"]


def test_the_producer_checks_the_workers_limits_without_being_told(producer_stack: Stack, sandbox):
    mobile = unique_mobile("130")
    told_nothing = {k: v for k, v in producer_env(producer_stack).items() if k != "MOBILE_THROTTLE"}
    producer = Producer(load_producer_settings(told_nothing))
    producer.enqueue(mobile, "1111")
    with pytest.raises(Throttled) as refused:  # the workers' 1/60s, announced in the registry
        producer.enqueue(mobile, "2222")
    assert 0 < refused.value.retry_after <= 60


def test_a_replay_is_a_new_task_not_throttled_again(producer_stack: Stack, producer: Producer, sandbox):
    apiid, mobile = ACCOUNTS["spare"]["apiid"], unique_mobile("134")
    sandbox.set_account(apiid, balance=0)
    first = producer.enqueue(mobile, "8642", account="spare", request_id=f"replay-{mobile}")
    letter_id = first.get(timeout=RESULT_TIMEOUT)["dead_letter"]  # 4051, which pauses the account
    sandbox.set_account(apiid, balance=10)
    producer_stack.cli("accounts", "resume", "spare")
    replayed = producer_stack.cli("dead-letters", "replay", letter_id)  # inside the 1/60s window
    assert replayed.returncode == 0, replayed.stderr
    task_id = replayed.stdout.split()[-1]
    assert task_id != first.id
    assert producer.result(task_id).get(timeout=RESULT_TIMEOUT)["status"] == "submitted"
    assert producer.enqueue(mobile, "8642", account="spare", request_id=f"replay-{mobile}").id == task_id
    assert [c["reply"] for c in submits(sandbox, mobile)] == [4051, 2]


def test_the_worker_announces_its_accounts_and_renews_them(producer_stack: Stack):
    if producer_stack.backend.name != "redis":
        pytest.skip("announcing does not depend on the broker: one backend is enough")
    state = producer_stack.state
    assert WorkerRegistry(state).accounts() == {"default", "spare", "main", "slow"}  # backup: excluded queue

    def earliest_expiry() -> float:
        return min(score for _, score in state.zrange("voicecode:workers:expiries", 0, -1, withscores=True))

    first = earliest_expiry()
    wait_for(lambda: earliest_expiry() > first, ANNOUNCE_EVERY_SECONDS + 5, 0.5, "a renewed announcement")
