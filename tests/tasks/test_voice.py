"""``send_voice_code`` end to end: a real worker process, a real broker, the sandbox over HTTP.

Parametrized over the embedded default, Redis and RabbitMQ (see ``stack`` in conftest).
"""
from __future__ import annotations

import json
import signal
import threading
import time
import uuid

import pytest

from tests.support import SECRETS, submits, unique_mobile, wait_for

RESULT_TIMEOUT = 30


def result_of(async_result) -> dict:
    return async_result.get(timeout=RESULT_TIMEOUT)


def test_success_returns_voiceid_and_masked_result(stack, sandbox):
    mobile = unique_mobile("138")
    pending = stack.send(mobile, "4821")
    result = result_of(pending)
    assert result["status"] == "submitted"
    assert result["voiceid"].isdigit() and result["voiceid"] != "0"
    assert result["code"] == 2 and result["attempts"] == 1 and result["account"] == "default"
    assert result["mobile"] == f"{mobile[:3]}****{mobile[-4:]}"
    calls = submits(sandbox, mobile)
    assert len(calls) == 1 and calls[0]["content"] == "4821"
    # The request id defaults to the task id, a UUID whose hex may hold any run of digits.
    assert result["request_id"] == pending.id
    shown = json.dumps({name: value for name, value in result.items() if name != "request_id"})
    assert mobile not in shown and "4821" not in shown


@pytest.mark.parametrize("prefix, retries", [("138", 0), ("1990102", 2)])  # code 0 twice: retried twice, then sent
def test_the_result_is_stored_in_the_sends_own_round_trip_not_again_by_celery(stack, sandbox, prefix, retries):
    """The results are in the state Redis: the script that finishes the request stores the task's
    result and publishes it, and Celery's backend neither reads it back nor writes it again.
    A Redis broker there too: the same script acks the message, and Celery's ack makes no round trip.
    A retried task's ``RETRY`` state is never stored: written after the retry is out, it could
    overwrite the retry's final result. (The deliveries that ended in a retry are acked by Celery.)"""
    seen, stop = [], f"end-{uuid.uuid4().hex}"

    def watch(monitor) -> None:
        for command in monitor.listen():
            if stop in command["command"]:
                return
            seen.append(command)

    with stack.state.monitor() as monitor:
        watcher = threading.Thread(target=watch, args=(monitor,), daemon=True)
        watcher.start()
        pending = stack.send(unique_mobile(prefix), "4821")
        wait_for(lambda: f"[{pending.id}] succeeded" in stack.workers[0].text(), RESULT_TIMEOUT, what="the task's end")
        stack.state.echo(stop)
        watcher.join(10)
    key, waiting = f"celery-task-meta-{pending.id}", {"SUBSCRIBE", "UNSUBSCRIBE"}  # this test's own wait
    on_result = [(c["client_type"], verb) for c in seen for verb, *args in [c["command"].split()]
                 if args[:1] == [key] and verb not in waiting]
    assert on_result == [("lua", "SET"), ("lua", "PUBLISH")], on_result
    acks = [c["command"] for c in seen if c["client_type"] != "lua" and c["command"].split()[:2] in
            (["ZREM", "unacked_index"], ["HDEL", "unacked"])]
    celery_acked = 0 if stack.backend.broker.startswith("amqp") else retries  # acked in Redis, a ZREM and an HDEL each
    assert len(acks) == 2 * celery_acked, acks[:3]
    assert stack.state.hlen("unacked") == 0
    assert result_of(pending)["status"] == "submitted"


def test_code_zero_twice_then_success_is_three_calls_one_result(stack, sandbox):
    mobile = unique_mobile("1990102")
    result = result_of(stack.send(mobile, "5531"))
    assert (result["status"], result["attempts"]) == ("submitted", 3)
    assert [c["reply"] for c in submits(sandbox, mobile)] == [0, 0, 2]


@pytest.mark.parametrize("fault, reply", [("1", "http500"), ("2", "reset"), ("3", "slow")])
def test_transport_fault_then_success(stack, sandbox, fault, reply):
    mobile = unique_mobile(f"19901{fault}1")
    result = result_of(stack.send(mobile, "7710"))
    assert (result["status"], result["attempts"]) == ("submitted", 2)
    assert [c["reply"] for c in submits(sandbox, mobile)] == [reply, 2]


@pytest.mark.parametrize("code", [405, 4030, 4050, 4051, 408])
def test_permanent_code_is_dead_lettered_after_one_call(stack, sandbox, code):
    mobile, since = f"1990000{code:04d}", time.time()
    async_result = stack.send(mobile, "9034", account="spare")
    result = result_of(async_result)
    assert (result["status"], result["code"], result["attempts"]) == ("dead_lettered", code, 1)
    assert len(submits(sandbox, mobile, since)) == 1
    letters = [d for d in stack.dead_letters.list() if d.task_id == async_result.id]
    assert len(letters) == 1
    letter = letters[0]
    assert (letter.reason, letter.code, letter.account, letter.attempts) == ("permanent", code, "spare", 1)
    assert letter.mobile == "199****" + mobile[-4:] and letter.first_attempt and letter.last_attempt
    assert stack.dead_letters.payload(letter.id)["code"] == "9034"  # what a replay needs, kept apart
    stack.cli("accounts", "resume", "spare")  # the account-scoped codes pause it


def test_expired_code_is_never_sent(stack, sandbox):
    mobile = unique_mobile("137")
    async_result = stack.client.send_task(
        "send_voice_code", (mobile, "1234"), {"ttl": 1}, countdown=2, headers={"enqueued_at": time.time()})
    result = result_of(async_result)
    assert result["status"] == "expired" and result["attempts"] == 0
    assert submits(sandbox, mobile) == []


def test_retries_stop_at_the_ttl(stack, sandbox):
    mobile = unique_mobile("1990230")  # every reply is past the 1 s read timeout
    enqueued = time.time()
    result = result_of(stack.send(mobile, "2468", ttl=3))
    assert result["status"] == "expired" and result["attempts"] >= 1
    calls = submits(sandbox, mobile)
    assert len(calls) == result["attempts"]
    assert all(c["at"] < enqueued + 3 for c in calls)


def test_same_request_id_calls_once(stack, sandbox):
    mobile = unique_mobile("136")
    first = result_of(stack.send(mobile, "1111", request_id=f"login-{mobile}"))
    second = result_of(stack.send(mobile, "1111", request_id=f"login-{mobile}"))
    assert first["status"] == "submitted"
    assert second["status"] == "duplicate" and second["voiceid"] == first["voiceid"]
    assert len(submits(sandbox, mobile)) == 1


def test_same_request_id_concurrently_calls_once(stack, sandbox):
    mobile = unique_mobile("135")
    results = [stack.send(mobile, "2222", request_id=f"pay-{mobile}") for _ in range(4)]
    statuses = sorted(result_of(r)["status"] for r in results)
    assert statuses == ["duplicate"] * 3 + ["submitted"]
    assert len(submits(sandbox, mobile)) == 1


def test_invalid_payload_from_a_foreign_producer_is_dead_lettered(stack, sandbox):
    async_result = stack.send("not-a-number", "12", foreign=True)
    result = result_of(async_result)
    assert (result["status"], result["reason"]) == ("dead_lettered", "invalid_payload")
    letter = next(d for d in stack.dead_letters.list() if d.task_id == async_result.id)
    assert letter.reason == "invalid_payload" and "mobile" in letter.detail
    missing = result_of(stack.client.send_task("send_voice_code", ("13800138000",)))
    assert missing["reason"] == "invalid_payload" and "code" in missing["detail"]


def test_cli_send_waits_for_the_result(stack, sandbox):
    mobile = unique_mobile("150")
    done = stack.cli("send", mobile, "3141", "--wait", "30")
    assert done.returncode == 0, done.stderr
    task_id, line = done.stdout.strip().splitlines()
    result = json.loads(line)
    assert result["status"] == "submitted" and result["request_id"] == task_id
    assert len(submits(sandbox, mobile)) == 1


def test_cli_rejects_bad_input_with_one_line(stack):
    done = stack.cli("send", "12345", "3141")
    assert done.returncode != 0
    assert done.stderr.strip() == "voicecode: mobile: must be a mainland China mobile number: 11 digits starting 13-19"


def test_dead_letters_list_replay_purge_through_the_cli(stack, sandbox):
    stack.cli("dead-letters", "purge")
    sandbox.set_account("spare-apiid", balance=0)
    mobile = unique_mobile("188")
    result = result_of(stack.send(mobile, "6060", account="spare"))
    assert (result["status"], result["code"]) == ("dead_lettered", 4051)

    listed = stack.cli("dead-letters", "list")
    assert listed.returncode == 0 and f"{mobile[:3]}****{mobile[-4:]}" in listed.stdout
    assert mobile not in listed.stdout and "6060" not in listed.stdout and "1 dead letter(s)" in listed.stdout
    (letter,) = json.loads(stack.cli("dead-letters", "list", "--json").stdout)
    assert (letter["reason"], letter["code"], letter["account"]) == ("permanent", 4051, "spare")
    assert len(json.loads(stack.cli("dead-letters", "list", "--json").stdout)) == 1  # listing does not consume

    sandbox.set_account("spare-apiid", balance=10)
    assert stack.cli("accounts", "resume", "spare").stdout.strip() == "spare: resumed"
    replayed = stack.cli("dead-letters", "replay", letter["id"])
    assert replayed.returncode == 0, replayed.stderr
    task_id = replayed.stdout.split()[-1]
    again = stack.client.AsyncResult(task_id).get(timeout=RESULT_TIMEOUT)
    assert again["status"] == "submitted" and again["request_id"] == letter["request_id"]
    assert [c["reply"] for c in submits(sandbox, mobile)] == [4051, 2]
    assert json.loads(stack.cli("dead-letters", "list", "--json").stdout) == []

    result_of(stack.send("19900004030", "7000"))
    assert stack.cli("dead-letters", "purge").stdout.strip() == "purged 1 dead letter(s)"
    assert json.loads(stack.cli("dead-letters", "list", "--json").stdout) == []


def test_dead_letters_survive_a_worker_restart(stack, sandbox):
    result = result_of(stack.send("19900004030", "7001"))
    letter_id = result["dead_letter"]
    stack.stop_workers()
    stack.workers.clear()
    stack.start_worker()
    assert stack.dead_letters.get(letter_id) is not None
    assert result_of(stack.send(unique_mobile("139"), "7002"))["status"] == "submitted"


def test_killed_worker_task_is_requeued_and_sent(stack, sandbox):
    mobile = unique_mobile("1990231")  # one reply past the 1 s timeout, then success
    victim = stack.start_worker(name="victim")
    for worker in stack.workers[:-1]:
        worker.stop()
    stack.workers[:] = [victim]
    async_result = stack.send(mobile, "8080")
    wait_for(lambda: submits(sandbox, mobile), 20, what="first Submit")
    victim.stop(signal.SIGKILL)
    stack.workers.clear()
    stack.start_worker()
    result = async_result.get(timeout=60)
    assert result["status"] in ("submitted", "duplicate")
    assert submits(sandbox, mobile)[-1]["reply"] == 2


def test_no_secret_in_worker_logs(stack):
    for worker in stack.workers:
        text = worker.text()
        assert not [secret for secret in SECRETS if secret in text]
