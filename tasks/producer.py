"""The producer API: what a web app calls to send a voice code.

    from tasks.producer import enqueue_voice_code, InvalidPayload

    try:
        result = enqueue_voice_code("13800138000", "4821", request_id=f"login:{user.id}:{nonce}")
    except InvalidPayload as exc:     # a ValueError; exc.field names the bad argument
        ...

Everything is checked before anything is enqueued, and Flower only ever sees the masked
arguments.
"""
from __future__ import annotations

import time
import uuid

from celery.result import AsyncResult

from config import get_settings
from tasks.voice import send_voice_code
from worker.errors import InvalidPayload, NotReplayable, Throttled
from worker.sending.request import validate
from worker.broker.routing import queue_for

__all__ = ["enqueue_voice_code", "replay_dead_letter", "InvalidPayload", "NotReplayable", "Throttled"]


def enqueue_voice_code(
    mobile: str, code: str, account: str | None = None, request_id: str | None = None, ttl: int | None = None,
) -> AsyncResult:
    """Validate and enqueue one voice code; return the Celery ``AsyncResult``.

    Raises :class:`InvalidPayload` naming the bad field, or :class:`Throttled` (with
    ``retry_after`` seconds) when the number was called too often.

    ``request_id`` is the idempotency key (default: the task id): enqueueing the same key
    twice calls the person once. ``ttl`` is how long the code is valid, in seconds
    (default ``VOICE_CODE_TTL``); it is never sent after that.
    """
    settings = get_settings()
    req = validate(mobile, code, account, request_id, ttl, accounts=settings.accounts.keys(), default_ttl=settings.code_ttl)
    retry_after = send_voice_code.app.stores.throttle.retry_after(req.mobile)
    if retry_after > 0:
        raise Throttled(retry_after)
    task_id = str(uuid.uuid4())
    args = (req.mobile, req.code)
    kwargs = {"account": req.account, "request_id": req.request_id or task_id, "ttl": req.ttl}
    return send_voice_code.apply_async(
        args, kwargs, task_id=task_id, headers={"enqueued_at": time.time()}, queue=queue_for(req.account),
    )


def replay_dead_letter(letter_id: str) -> AsyncResult:
    """Enqueue a dead-lettered request again, with its original request_id and deadline.

    The TTL is not refreshed: a replay is for a failure fixed while the code is still
    valid (a topped-up balance, an unfrozen account); past that, the person has asked for
    a new code and calling them with the old one would only confuse.
    """
    stores = send_voice_code.app.stores
    store = stores.dead_letters
    if store.get(letter_id) is None:
        raise NotReplayable(f"no dead letter {letter_id}")
    payload = store.payload(letter_id)
    if payload is None:
        raise NotReplayable(f"dead letter {letter_id} cannot be replayed: invalid payload or its code expired")
    stores.idempotency.forget(payload["request_id"])
    result = enqueue_voice_code(**payload)
    store.remove(letter_id)
    return result
