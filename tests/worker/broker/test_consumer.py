"""Whatever arrives on a queue, a real worker survives it: on Redis and on RabbitMQ.

Messages are written raw, the way a hostile or broken producer would: bytes pushed onto the
Redis list, AMQP messages with any headers and body published to RabbitMQ. After each batch a
valid task must be sent within seconds by the same worker process, and on Redis nothing may
stay in ``unacked`` to come back after the visibility timeout.
"""
from __future__ import annotations

import base64
import json
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ihuyi.sandbox import Sandbox
from tests.conftest import require_servers
from tests.support import SANDBOX_ACCOUNTS, Stack, base_env, make_backend, unique_mobile, wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.e2e]

#: Appears in many generated messages; must never reach the worker's log or a dead letter.
SECRET_MOBILE, SECRET_CODE = "13955550001", "739146"
#: Messages tried per broker (the closing numbers of the fuzzer), printed at the end.
TRIED: Counter = Counter()


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def poisoned(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """One worker per broker, on databases of its own (8/9), kept for the module's messages.

    Each number may be called once a minute: every valid task below has a number of its own.
    """
    require_servers(request.param)
    with Sandbox(SANDBOX_ACCOUNTS, initial_balance=100000) as box, \
            tempfile.TemporaryDirectory(prefix="vc-", dir="/tmp") as tmp:
        backend = make_backend(request.param, Path(tmp), redis_db=8)
        backend.flush()
        stack = Stack(backend, base_env(box.url, **backend.env, MOBILE_THROTTLE="1/60s"), Path(tmp))
        stack.start_worker(concurrency=8)
        try:
            yield stack
        finally:
            print(f"\n[fuzzer] {request.param}: {TRIED[request.param]} messages tried, "
                  f"worker alive: {stack.workers[0].process.poll() is None}")
            stack.stop_workers()


def task_headers(**changes: object) -> dict:
    task_id = str(uuid.uuid4())
    return {"lang": "py", "task": "send_voice_code", "id": task_id, "root_id": task_id, "parent_id": None,
            "group": None, "retries": 0, "eta": None, "expires": None, "timelimit": [None, None],
            "argsrepr": "()", "kwargsrepr": "{}", **changes}


def task_body(*parts: object) -> bytes:
    return json.dumps(list(parts)).encode()


def write_raw(stack: Stack, raw: bytes | None = None, *, body: bytes = b"", headers: object = None,
              content_type: str = "application/json") -> None:
    """Put one message on the ``voicecode`` queue: ``raw`` bytes as they are (Redis), else an envelope."""
    if stack.backend.name == "redis":
        if raw is None:
            raw = json.dumps({
                "body": base64.b64encode(body).decode(), "content-encoding": "utf-8", "content-type": content_type,
                "headers": headers, "properties": {"delivery_tag": str(uuid.uuid4()), "body_encoding": "base64",
                                                   "delivery_info": {"exchange": "voicecode",
                                                                     "routing_key": "voicecode"}, "priority": 0},
            }).encode()
        stack.state.lpush("voicecode", raw)
        return
    with kombu.Connection(stack.backend.broker) as conn:
        conn.Producer().publish(raw if raw is not None else body, exchange=kombu.Exchange("voicecode", "direct"),
                                routing_key="voicecode", headers=headers if isinstance(headers, dict) else {},
                                content_type=content_type, content_encoding="utf-8", serializer=None,
                                declare=[kombu.Queue("voicecode")])


def assert_still_serving(stack: Stack) -> None:
    """A valid task is sent at once by the same worker, and (Redis) nothing poisonous stays unacked."""
    worker = stack.workers[0]
    assert stack.send(unique_mobile("138"), "4821", ttl=60).get(timeout=15)["status"] == "submitted"
    assert worker.process.poll() is None, worker.text()[-3000:]
    if stack.backend.name == "redis":
        wait_for(lambda: stack.state.hlen("unacked") == 0, 15, 0.1, "every message acked or dropped")
    text = worker.text()
    assert SECRET_MOBILE not in text and SECRET_CODE not in text


VALID_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
#: The messages that stopped or wedged a worker before: name -> how to write it.
POISON = {
    "a JSON list instead of an envelope": dict(raw=b"[1,2,3]"),
    "body null": dict(body=b"null", headers=task_headers()),
    "body 42": dict(body=b"42", headers=task_headers()),
    "embed not an object": dict(body=task_body([SECRET_MOBILE, SECRET_CODE], {}, "embed"), headers=task_headers()),
    "timelimit not a pair": dict(body=task_body([SECRET_MOBILE, SECRET_CODE], {}, VALID_EMBED),
                                 headers=task_headers(timelimit="abc")),
    "enqueued_at not a time": dict(body=task_body([SECRET_MOBILE, SECRET_CODE], {}, VALID_EMBED),
                                   headers=task_headers(enqueued_at="abc")),
    "headers not an object": dict(body=task_body([SECRET_MOBILE, SECRET_CODE], {}, VALID_EMBED), headers=[1, 2]),
}

#: On Redis these are not even kombu envelopes: dropped with a log line, there is nothing to dead-letter.
NOT_AN_ENVELOPE = {"a JSON list instead of an envelope", "headers not an object"}


@pytest.mark.parametrize("name", POISON)
def test_a_poison_message_is_dead_lettered_and_the_next_task_runs(poisoned, name):
    stack = poisoned
    before = {letter.id for letter in stack.dead_letters.list()}
    for _ in range(3):  # several: a wedged thread each would soon fill the prefetch
        write_raw(stack, **POISON[name])
    TRIED[stack.backend.name] += 3
    assert_still_serving(stack)
    if stack.backend.name == "redis" and name in NOT_AN_ENVELOPE:
        assert "dropped an unreadable message" in stack.workers[0].text()
        return
    letters = wait_for(lambda: [d for d in stack.dead_letters.list() if d.id not in before], 10,
                       what="the poison dead-lettered")
    assert {d.reason for d in letters} == {"invalid_payload"}
    assert all(SECRET_MOBILE not in d.detail and SECRET_CODE not in d.detail for d in letters)


def test_a_forged_slot_header_does_not_skip_the_numbers_throttle(poisoned):
    mobile = unique_mobile("138")
    slot = {"account": "default", "at": time.time()}
    results = [poisoned.client.send_task("send_voice_code", (mobile, "4821"), {"ttl": 60},
                                         headers={"voicecode_slot": slot}).get(timeout=15) for _ in range(3)]
    assert [r["status"] for r in results] == ["submitted", "dead_lettered", "dead_lettered"]
    assert {r["reason"] for r in results[1:]} == {"throttled"}


def _json_of(*leaves: st.SearchStrategy) -> st.SearchStrategy:
    return st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False),
                  st.text(max_size=12), *leaves),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=10,
    )


#: Any JSON, with the secret number among the leaves: for bodies, where the arguments are.
_json = _json_of(st.just(SECRET_MOBILE))
#: Headers name the message (its id shows in Celery's log, as a task id should): no secret there.
_header_values = st.dictionaries(
    st.sampled_from(["id", "task", "timelimit", "retries", "eta", "expires", "enqueued_at", "group", "shadow",
                     "ignore_result", "stamps", "stamped_headers", "argsrepr", "kwargsrepr", "root_id", "x"]),
    _json_of(), max_size=5,
)
_bodies = st.one_of(
    st.binary(max_size=64),
    _json.map(lambda v: json.dumps(v).encode()),
    st.tuples(st.lists(_json, max_size=6), st.dictionaries(st.text(max_size=10), _json, max_size=3), _json)
    .map(lambda parts: json.dumps(list(parts)).encode()),
    st.just(task_body([SECRET_MOBILE, SECRET_CODE], {}, VALID_EMBED)),
)
_messages = st.one_of(
    st.binary(max_size=200).map(lambda raw: dict(raw=raw)),
    _json.map(lambda v: dict(raw=json.dumps(v).encode())),
    st.builds(lambda changes, body, ctype: dict(headers=task_headers(**changes), body=body, content_type=ctype),
              _header_values, _bodies,
              st.sampled_from(["application/json", "application/x-python-serialize", "text/plain", "", "x/y"])),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(st.lists(_messages, min_size=25, max_size=25))
def test_any_batch_of_messages_leaves_the_worker_serving(poisoned, batch):
    stack = poisoned
    for message in batch:
        try:
            write_raw(stack, **message)
        except (TypeError, ValueError, OverflowError):  # AMQP cannot carry it: nothing reached the queue
            continue
        TRIED[stack.backend.name] += 1
    assert_still_serving(stack)
