"""The producer API: what a web app calls to verify a number, or to send a code of its own.

    from tasks.producer import InvalidPayload, Throttled, check_verification, start_verification

    verification = start_verification("13800138000", request_id=f"login:{nonce}")  # the service picks the code
    ...
    if check_verification("13800138000", typed).status == "approved":
        ...                                                                     # let them in

    result = enqueue_voice_code("13800138000", "4821", request_id=f"login:{nonce}")  # a code of your own

A web app needs only ``CELERY_BROKER_URL`` and ``REDIS_URL`` (and ``VOICECODE_SECRET`` to
verify), never an ihuyi APIKEY: the workers announce which accounts they serve in the state
Redis (worker/stores/registry.py), and an account none of them serves is refused here rather
than left on a queue nobody reads. Importing this module does nothing; the first call reads
the settings, connects, and builds a bare Celery app that publishes ``send_voice_code`` by name.

Everything is checked before anything is enqueued, in order: the arguments, the account, then
the request id and the number's throttle. The same ``request_id`` again (still queued, running
or done) answers the same task (its id is derived from the request id) and is not throttled
again: only a new request counts against the number. Flower only ever sees masked arguments.
"""
from __future__ import annotations

import dataclasses
import functools
import time
import uuid
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

import redis
from kombu import Exchange, Queue

from config.settings import DEFAULT_ACCOUNT, ConfigError, ProducerSettings, get_producer_settings, get_settings
from tasks.verification import StartedVerification, Verifications
from worker.broker.routing import DEFAULT_QUEUE, queue_for
from worker.errors import InvalidPayload, NotReplayable, Throttled
from worker.sending.masking import masked_call
from worker.sending.request import VoiceCodeRequest, validate
from worker.stores import Stores
from worker.stores.connection import Urls, connect_state, resolve_urls
from worker.stores.enqueues import EnqueueRecords, task_id_for
from worker.stores.registry import WorkerRegistry
from worker.stores.throttle import MobileThrottle, number_key
from worker.stores.verifications import CheckResult, VerificationStore

if TYPE_CHECKING:
    from celery import Celery
    from celery.result import AsyncResult

__all__ = [
    "enqueue_voice_code", "start_verification", "check_verification", "replay_dead_letter", "Producer",
    "StartedVerification", "CheckResult", "InvalidPayload", "NotReplayable", "Throttled", "ConfigError",
]

#: How long a request id is remembered: as long as the worker keeps the request's outcome
#: (worker/stores/idempotency.py) and Celery its result (``result_expires``).
KEEP_SECONDS = 86400


class Producer:
    """Enqueues ``send_voice_code`` for one configuration; each part is built on first use."""

    keep_seconds = KEEP_SECONDS

    def __init__(self, settings: ProducerSettings) -> None:
        self.settings = settings

    @cached_property
    def urls(self) -> Urls:
        """Broker, results and state; the embedded Redis is started only when the settings name no server."""
        return resolve_urls(self.settings)

    @cached_property
    def state(self) -> redis.Redis:
        return connect_state(self.urls.state)

    @cached_property
    def celery(self) -> Celery:
        """A bare Celery app on the service's broker: it publishes by task name and reads results.

        Never the current app, so a web app's own Celery app and tasks are left alone.
        """
        from celery import Celery

        app = Celery("voicecode-producer", broker=self.urls.broker, backend=self.urls.result_backend,
                     set_as_current=False)
        app.conf.update(
            task_serializer="json",
            result_serializer="json",
            accept_content=["json"],
            # RabbitMQ confirms each publish: a message is not lost between the web app and the broker.
            broker_transport_options={} if self.urls.broker.startswith("redis") else {"confirm_publish": True},
            # A publishing connection reads no frames between publishes, so it would miss heartbeats
            # and be closed by RabbitMQ; TCP keepalive notices a dead broker, as in the workers.
            broker_heartbeat=0,
            broker_connection_retry_on_startup=True,
            result_backend_transport_options={"retry_policy": {"timeout": 5.0}},
            task_send_sent_event=True,  # Flower shows the task from its enqueue, with masked arguments
        )
        return app

    @cached_property
    def verifications(self) -> Verifications:
        """Starting and checking verifications: ``ConfigError`` naming ``VOICECODE_SECRET`` when it is not set."""
        if self.settings.verify_secret is None:
            raise ConfigError("VOICECODE_SECRET", "not set: verification needs it, the same long random string "
                                                  "for every producer")
        return Verifications(self, VerificationStore(self.state, self.settings.verify_secret,
                                                     max_attempts=self.settings.verify_max_attempts))

    @cached_property
    def _enqueues(self) -> EnqueueRecords:
        return EnqueueRecords(self.state)

    @cached_property
    def _registry(self) -> WorkerRegistry:
        return WorkerRegistry(self.state)

    @cached_property
    def _throttle(self) -> MobileThrottle:
        """The workers' throttle, for its keys and windows (the producer reads the number's log, never writes it)."""
        return MobileThrottle(self.state, self.settings.mobile_throttle)

    def enqueue(self, mobile: object, code: object, account: object = None, request_id: object = None,
                ttl: object = None) -> AsyncResult:
        """See :func:`enqueue_voice_code`."""
        return self._enqueue(*self.request(mobile, code, account, request_id, ttl))

    def replay(self, mobile: str, code: str, account: str, request_id: str, ttl: int) -> AsyncResult:
        """Enqueue a dead letter's request again, as a new task: it is not throttled again (it
        counted the first time), and its old result cannot be mistaken for the new one."""
        req, _ = self.request(mobile, code, account, request_id, ttl)
        self.forget(req.request_id)
        return self._enqueue(req, str(uuid.uuid4()), throttled=False)

    def request(self, mobile: object, code: object, account: object, request_id: object,
                ttl: object) -> tuple[VoiceCodeRequest, str]:
        """The validated request, with its request id, and its task id; ``InvalidPayload`` names the first bad field.

        A caller's request id gives the task id every producer derives from it; without one, a
        fresh task id is the request id too.
        """
        # Which accounts exist is for the live workers to say (below): validate() takes any name.
        named = DEFAULT_ACCOUNT if account is None else account
        req = validate(mobile, code, account, request_id, ttl, accounts=[named], default_ttl=self.settings.code_ttl)
        if req.account not in self._registry.accounts():
            shown = req.account[:32]
            raise InvalidPayload("account", f"unknown account {shown!r}: no live worker consumes its queue "
                                            f"{queue_for(shown)!r}")
        if req.request_id:
            return req, task_id_for(req.request_id)
        task_id = str(uuid.uuid4())
        return dataclasses.replace(req, request_id=task_id), task_id

    def reserve(self, req: VoiceCodeRequest, task_id: str, *, throttled: bool = True) -> tuple[str, bool]:
        """Reserve the request id for ``task_id``: ``(task_id, True)`` for a new request,
        ``(its task id, False)`` for one enqueued before, which is not throttled again.

        Raises :class:`Throttled` for a new request to a number called too often (unless
        ``throttled`` is False). The reservation is atomic: of producers racing with one
        request id, one gets True.
        """
        windows = [(w.limit, w.seconds) for w in self._throttle.windows] if throttled else []
        reservation = self._enqueues.reserve(req.request_id, task_id, number_key(self._throttle.prefix, req.mobile),
                                             windows, self.keep_seconds)
        if reservation.status == "throttled":
            raise Throttled(reservation.retry_after)
        return cast(str, reservation.task_id), reservation.status == "new"

    def publish(self, req: VoiceCodeRequest, task_id: str) -> AsyncResult:
        """Send ``send_voice_code`` by name to the account's queue, stamped with its enqueue time."""
        args = (req.mobile, req.code)
        kwargs: dict[str, Any] = {"account": req.account, "request_id": req.request_id, "ttl": req.ttl}
        argsrepr, kwargsrepr = masked_call(args, kwargs)
        return self.celery.send_task(
            "send_voice_code", args, kwargs, task_id=task_id, queue=_queue(req.account),
            headers={"enqueued_at": time.time()}, argsrepr=argsrepr, kwargsrepr=kwargsrepr,
        )

    def forget(self, request_id: str) -> None:
        """Drop a request id's reservation (its publish failed, or it is replayed), so it can be enqueued again."""
        self._enqueues.forget(request_id)

    def result(self, task_id: str) -> AsyncResult:
        return self.celery.AsyncResult(task_id)

    def _enqueue(self, req: VoiceCodeRequest, task_id: str, *, throttled: bool = True) -> AsyncResult:
        task_id, new = self.reserve(req, task_id, throttled=throttled)
        if not new:
            return self.result(task_id)
        try:
            return self.publish(req, task_id)
        except Exception:
            self.forget(req.request_id)
            raise


def _queue(account: str) -> Queue:
    """The account's queue as the workers declare it (worker/broker/routing.py): bound to the
    ``voicecode`` exchange under its own name, so publishing declares nothing different."""
    name = queue_for(account)
    return Queue(name, Exchange(DEFAULT_QUEUE), routing_key=name)


@functools.cache
def default_producer() -> Producer:
    """The producer for this process's environment (and ``.env`` file), built on first use."""
    return Producer(get_producer_settings())


def enqueue_voice_code(
    mobile: str, code: str, account: str | None = None, request_id: str | None = None, ttl: int | None = None,
) -> AsyncResult:
    """Validate and enqueue one voice code of your own; return the Celery ``AsyncResult``.

    Raises :class:`InvalidPayload` naming the bad field (``account`` for one no live worker
    serves), or :class:`Throttled` (with ``retry_after`` seconds) when the number was called
    too often.

    ``request_id`` is the idempotency key (default: the task id): the same key again returns
    the same task and calls the person once. ``ttl`` is how long the code is valid, in seconds
    (default ``VOICE_CODE_TTL``); it is never sent after that.
    """
    return default_producer().enqueue(mobile, code, account, request_id, ttl)


def start_verification(
    mobile: str, *, account: str | None = None, ttl: int | None = None, length: int = 6, request_id: str | None = None,
) -> StartedVerification:
    """Pick a code of ``length`` digits, keep its keyed hash for ``ttl`` seconds and have it read aloud to ``mobile``.

    Returns the verification (id, masked number, expiry, task id), never the code. A pending
    verification of the number is replaced. ``request_id`` makes the start idempotent: the
    same id again returns the same verification, with no new code and no new call. Raises
    :class:`InvalidPayload`, :class:`Throttled`, or ``ConfigError`` when ``VOICECODE_SECRET``
    is not set.
    """
    return default_producer().verifications.start(mobile, account=account, ttl=ttl, length=length,
                                                  request_id=request_id)


def check_verification(mobile: str, code: str) -> CheckResult:
    """Check what the person typed: ``status`` is ``approved`` (once), ``rejected`` (with
    ``attempts_left``), ``expired``, ``locked`` (after ``VERIFY_MAX_ATTEMPTS`` wrong codes) or
    ``not_found``. A code that is not 4 to 6 digits raises :class:`InvalidPayload` and costs no attempt.
    """
    return default_producer().verifications.check(mobile, code)


@functools.cache
def _worker_stores() -> Stores:
    """The workers' stores, for replays: an operator's tool, run where the workers' settings are."""
    return Stores.connect(get_settings())


def replay_dead_letter(letter_id: str) -> AsyncResult:
    """Enqueue a dead-lettered request again, with its original request_id and deadline.

    The TTL is not refreshed: a replay is for a failure fixed while the code is still
    valid (a topped-up balance, an unfrozen account); past that, the person has asked for
    a new code and calling them with the old one would only confuse.
    """
    stores = _worker_stores()
    letters = stores.dead_letters
    if letters.get(letter_id) is None:
        raise NotReplayable(f"no dead letter {letter_id}")
    payload = letters.payload(letter_id)
    if payload is None:
        raise NotReplayable(f"dead letter {letter_id} cannot be replayed: invalid payload or its code expired")
    stores.idempotency.forget(payload["request_id"])
    result = default_producer().replay(**payload)
    letters.remove(letter_id)
    return result
