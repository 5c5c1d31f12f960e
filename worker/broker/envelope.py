"""What a message on a queue must look like before kombu or Celery act on it.

Anyone who can write to the broker can put anything on a queue. Celery trusts the shape of
what it receives: a header of the wrong type or a body that is not ``[args, kwargs, embed]``
made it raise in the worker's main loop (the worker exited, restored the message and the
next worker died on it) or in a pool thread (the task hung, never acked). So every message
is checked here first, in two layers:

- :func:`check_redis_envelope`: the JSON envelope kombu's Redis transport stores (for
  RabbitMQ the AMQP framing plays this part);
- :func:`check_task_message`: the Celery task message inside it, headers and body, for
  protocol 2 and the older protocol 1.

Both raise :class:`InvalidEnvelope` whose text names the part that is wrong, never its
content (which may hold a mobile number and a code).
"""
from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from worker.errors import InvalidEnvelope

#: A producer's clock may be this far ahead of the worker's before ``enqueued_at`` is refused.
CLOCK_SKEW_SECONDS = 60.0
_MAX_ID = 128
_MAX_TEXT = 4096


def _is_text(limit: int) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, str) and len(value) <= limit


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 1_000_000


def _is_seconds(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and 0 <= value <= 86400)


def _is_time_limit(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(_optional(_is_seconds)(v) for v in value)


def _is_moment(value: Any) -> bool:
    if isinstance(value, datetime):
        return True
    if not isinstance(value, str) or len(value) > 64:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_enqueued_at(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and 0 < value <= time.time() + CLOCK_SKEW_SECONDS)


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_ID and value.isascii() and value.isprintable()


def _is_list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, (list, tuple)) and len(value) <= 1000 and all(check(v) for v in value)


_text = _optional(_is_text(_MAX_TEXT))
_id = _optional(_is_id)

#: Every header Celery (or this service) reads, and what it must be. Others are left alone.
HEADERS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "id": (_is_id, "a task id of 1-128 printable ASCII characters"),
    "task": (_is_text(_MAX_ID), "a task name"),
    "lang": (_text, "text"),
    "root_id": (_id, "a task id"),
    "parent_id": (_id, "a task id"),
    "group": (_id, "a group id"),
    "group_index": (_optional(_is_count), "a count"),
    "meth": (_text, "text"),
    "shadow": (_optional(_is_text(_MAX_ID)), "a task name"),
    "eta": (_optional(_is_moment), "an ISO 8601 time"),
    "expires": (_optional(_is_moment), "an ISO 8601 time"),
    "retries": (_optional(_is_count), "a count"),
    "timelimit": (_optional(_is_time_limit), "[soft, hard] seconds"),
    "argsrepr": (_text, "text"),
    "kwargsrepr": (_text, "text"),
    "origin": (_text, "text"),
    "ignore_result": (_optional(lambda v: isinstance(v, bool)), "true or false"),
    "replaced_task_nesting": (_optional(_is_count), "a count"),
    "stamped_headers": (_optional(_is_list_of(_is_text(_MAX_ID))), "a list of names"),
    "stamps": (_optional(lambda v: isinstance(v, dict)), "an object"),
    "groups": (_optional(_is_list_of(_is_id)), "a list of group ids"),
    "enqueued_at": (_optional(_is_enqueued_at), "a Unix time, not in the future"),
}
#: What protocol 2's third body element may hold; Celery spreads it into the task's context.
EMBED: dict[str, Callable[[Any], bool]] = {
    "callbacks": _optional(_is_list_of(lambda v: isinstance(v, dict))),
    "errbacks": _optional(_is_list_of(lambda v: isinstance(v, dict))),
    "chain": _optional(_is_list_of(lambda v: isinstance(v, dict))),
    "chord": _optional(lambda v: isinstance(v, dict)),
}


def check_headers(headers: Mapping[str, Any], *, required: tuple[str, ...] = ("id", "task")) -> None:
    """Every known header has its expected type; ``required`` ones are present."""
    for name in required:
        if headers.get(name) is None:
            raise InvalidEnvelope(f"header {name!r} is missing")
    for name, (check, expected) in HEADERS.items():
        if name in headers and not check(headers[name]):
            raise InvalidEnvelope(f"header {name!r} must be {expected}")


def check_body(body: Any) -> None:
    """A protocol 2 body: ``[args (a list), kwargs (an object), embed (an object or null)]``."""
    if not isinstance(body, (list, tuple)) or len(body) != 3:
        raise InvalidEnvelope("body must be [args, kwargs, embed]")
    args, kwargs, embed = body
    _check_arguments(args, kwargs)
    if embed is None:
        return
    if not isinstance(embed, dict) or not set(embed) <= set(EMBED):
        raise InvalidEnvelope(f"body's embed must be an object with only {', '.join(EMBED)}")
    for name, check in EMBED.items():
        if not check(embed.get(name)):
            raise InvalidEnvelope(f"body's embed {name!r} has the wrong type")


def _check_arguments(args: Any, kwargs: Any) -> None:
    if not isinstance(args, (list, tuple)):
        raise InvalidEnvelope("args must be a list")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise InvalidEnvelope("kwargs must be an object")


def check_task_message(headers: Any, decode: Callable[[], Any]) -> None:
    """A Celery task message: ``headers`` as received and ``decode()`` giving the body.

    Protocol 2 keeps the task's fields in the headers; protocol 1 (no ``task`` header) in
    the body, an object that also carries ``args`` and ``kwargs``.
    """
    if not isinstance(headers, dict):
        raise InvalidEnvelope("headers must be an object")
    try:
        body = decode()
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the same: unreadable
        raise InvalidEnvelope(f"cannot decode the body ({type(exc).__name__})") from None
    if "task" in headers:
        check_headers(headers)
        check_body(body)
        return
    if not isinstance(body, dict):
        raise InvalidEnvelope("a message without a task header must have an object body (protocol 1)")
    check_headers(headers, required=())
    check_headers(body)
    _check_arguments(body.get("args", ()), body.get("kwargs", {}))
    for name in ("callbacks", "errbacks", "chord"):
        if not EMBED[name](body.get(name)):
            raise InvalidEnvelope(f"{name!r} has the wrong type")


def check_redis_envelope(envelope: Any) -> None:
    """kombu's Redis envelope: body, content type and encoding, headers, properties."""
    if not isinstance(envelope, dict):
        raise InvalidEnvelope("envelope must be an object")
    properties = envelope.get("properties")
    if not isinstance(properties, dict) or not _is_text(_MAX_ID)(properties.get("delivery_tag")):
        raise InvalidEnvelope("envelope properties must be an object with a delivery_tag")
    if not isinstance(envelope.get("headers"), dict):
        raise InvalidEnvelope("envelope headers must be an object")
    for name in ("content-type", "content-encoding"):
        if not _optional(_is_text(_MAX_ID))(envelope.get(name)):
            raise InvalidEnvelope(f"envelope {name} must be text")
    info = properties.get("delivery_info")
    if not (info is None or isinstance(info, dict) and all(_text(info.get(k)) for k in ("exchange", "routing_key"))):
        raise InvalidEnvelope("envelope delivery_info must be an object")
    if not _optional(lambda v: _is_count(v) and v <= 255)(properties.get("priority")):
        raise InvalidEnvelope("envelope priority must be 0-255")
    body, encoding = envelope.get("body"), properties.get("body_encoding")
    if not _optional(lambda v: isinstance(v, str))(body):
        raise InvalidEnvelope("envelope body must be text")
    if encoding not in (None, "base64"):
        raise InvalidEnvelope("envelope body_encoding must be base64")
    if encoding == "base64" and body:
        try:
            base64.b64decode(body.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error):
            raise InvalidEnvelope("envelope body is not base64") from None
