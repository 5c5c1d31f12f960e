"""The checks every message passes before kombu or Celery act on it: no Celery worker needed."""
from __future__ import annotations

import base64
import json
import math
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.broker.envelope import check_redis_envelope, check_task_message
from worker.errors import InvalidEnvelope

MOBILE, CODE = "13955550001", "7391"


def headers(**changes: object) -> dict:
    task_id = str(uuid.uuid4())
    base = {"lang": "py", "task": "send_voice_code", "id": task_id, "root_id": task_id, "parent_id": None,
            "group": None, "retries": 0, "eta": None, "expires": None, "timelimit": [None, None],
            "argsrepr": "()", "kwargsrepr": "{}", "enqueued_at": time.time()}
    return {**base, **changes}


def body(args: object = (MOBILE, CODE), kwargs: object = None, embed: object = "default") -> list:
    if embed == "default":
        embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return [list(args) if isinstance(args, tuple) else args, {} if kwargs is None else kwargs, embed]


def check(message_headers: object, message_body: object) -> None:
    check_task_message(message_headers, lambda: message_body)


def test_a_message_celery_itself_builds_passes():
    from celery import Celery

    app = Celery(set_as_current=False)
    message = app.amqp.as_task_v2(str(uuid.uuid4()), "send_voice_code", args=(MOBILE, CODE),
                                  kwargs={"ttl": 60}, countdown=5, time_limit=30)
    check(json.loads(json.dumps(message.headers)), json.loads(json.dumps(message.body)))


def test_a_protocol_1_message_passes():
    check({}, {"task": "send_voice_code", "id": str(uuid.uuid4()), "args": [MOBILE, CODE], "kwargs": {},
               "retries": 0, "eta": None, "callbacks": None})


@pytest.mark.parametrize("message_headers, message_body, named", [
    (headers(), None, "body"),
    (headers(), 42, "body"),
    (headers(), [[MOBILE, CODE], {}], "body"),
    (headers(), body(embed="embed"), "embed"),
    (headers(), body(embed={"id": "someone-else"}), "embed"),
    (headers(), body(embed={"callbacks": "x"}), "callbacks"),
    (headers(), body(args={"mobile": MOBILE}), "args"),
    (headers(), body(kwargs=[MOBILE]), "kwargs"),
    (headers(timelimit="abc"), body(), "timelimit"),
    (headers(timelimit=[1, 2, 3]), body(), "timelimit"),
    (headers(timelimit=[math.inf, None]), body(), "timelimit"),
    (headers(retries="1"), body(), "retries"),
    (headers(retries=True), body(), "retries"),
    (headers(eta="tomorrow"), body(), "eta"),
    (headers(expires=12), body(), "expires"),
    (headers(id=None), body(), "id"),
    (headers(id=["x"]), body(), "id"),
    (headers(id="x" * 129), body(), "id"),
    (headers(task=7), body(), "task"),
    (headers(ignore_result="yes"), body(), "ignore_result"),
    (headers(enqueued_at="abc"), body(), "enqueued_at"),
    (headers(enqueued_at=math.nan), body(), "enqueued_at"),
    (headers(enqueued_at=time.time() + 3600), body(), "enqueued_at"),
    ([1, 2, 3], body(), "headers"),
    ({}, [MOBILE, CODE], "protocol 1"),
    ({}, {"task": "send_voice_code", "args": MOBILE}, "id"),
])
def test_poison_shapes_are_refused_naming_the_part_not_the_content(message_headers, message_body, named):
    with pytest.raises(InvalidEnvelope) as refused:
        check(message_headers, message_body)
    assert named in str(refused.value)
    assert MOBILE not in str(refused.value) and CODE not in str(refused.value)


def test_a_body_that_cannot_be_decoded_is_refused_by_type_only():
    def decode() -> object:
        raise UnicodeDecodeError("utf-8", MOBILE.encode(), 0, 1, "bad")

    with pytest.raises(InvalidEnvelope, match="cannot decode the body \\(UnicodeDecodeError\\)"):
        check_task_message(headers(), decode)


def redis_envelope(**changes: object) -> dict:
    encoded = base64.b64encode(json.dumps(body()).encode()).decode()
    envelope = {"body": encoded, "content-encoding": "utf-8", "content-type": "application/json",
                "headers": headers(), "properties": {"delivery_tag": str(uuid.uuid4()), "body_encoding": "base64",
                                                     "priority": 0, "delivery_info": {"exchange": "voicecode",
                                                                                      "routing_key": "voicecode"}}}
    return {**envelope, **changes}


def test_kombus_own_redis_envelope_passes():
    check_redis_envelope(redis_envelope())


@pytest.mark.parametrize("envelope", [
    [1, 2, 3],
    None,
    "text",
    redis_envelope(properties=None),
    redis_envelope(properties={"delivery_tag": 5}),
    redis_envelope(headers=None),
    redis_envelope(body=42),
    redis_envelope(body="not base64 !!"),
    redis_envelope(properties={"delivery_tag": "t", "body_encoding": "rot13"}),
    redis_envelope(properties={"delivery_tag": "t", "priority": "high"}),
    redis_envelope(properties={"delivery_tag": "t", "delivery_info": [1]}),
    redis_envelope(**{"content-type": {"a": 1}}),
])
def test_what_is_not_a_kombu_envelope_is_refused(envelope):
    with pytest.raises(InvalidEnvelope):
        check_redis_envelope(envelope)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_header_names = st.sampled_from(["id", "task", "timelimit", "retries", "eta", "expires", "enqueued_at", "group",
                                 "ignore_result", "stamps", "stamped_headers", "shadow", "argsrepr", "other"])


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_header_names, _json, max_size=6), _json)
def test_any_json_either_passes_or_is_refused_with_invalid_envelope(changes, message_body):
    try:
        check(headers(**changes), message_body)
    except InvalidEnvelope:
        pass


@settings(max_examples=300, deadline=None)
@given(_json)
def test_any_json_as_a_redis_envelope_either_passes_or_is_refused(envelope):
    try:
        check_redis_envelope(envelope)
    except InvalidEnvelope:
        pass
