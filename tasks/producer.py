"""The producer API: what a web app calls to verify a number, or to send a code of its own.

    from tasks.producer import InvalidPayload, Throttled, check_verification, start_verification

    verification = start_verification("13800138000", request_id=f"login:{nonce}")  # the service picks the code
    ...
    if check_verification("13800138000", typed).status == "approved":
        ...                                                                     # let them in

    result = enqueue_voice_code("13800138000", "4821", request_id=f"login:{nonce}")  # a code of your own

A web app needs only ``CELERY_BROKER_URL`` and ``REDIS_URL`` (and ``VOICECODE_SECRET`` to
verify), never an ihuyi APIKEY: the workers announce which accounts they serve and the limits
they keep in the state Redis (worker/stores/registry.py). An account no worker has served is
refused here rather than left on a queue nobody reads; one served before is queued while no
worker is live (a restart). Importing this module does nothing; the first call reads the
settings, connects, and builds a bare Celery app that publishes ``send_voice_code`` by name.

Everything is checked before anything is enqueued, in order: the arguments, the account, then
the request id and the number's throttle, which a new request is counted against in the same
atomic step that reserves its id (worker/stores/idempotency.py), so the limits hold however
far behind the workers are. The same ``request_id`` again (still queued, running or done)
answers the same task (its id is derived from the request id) and is not counted again; with
another number, code or account it is a :class:`RequestIdConflict`. Flower only ever sees
masked arguments.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import redis

from config.settings import (DEFAULT_ACCOUNT, DEFAULT_CODE_TTL, DEFAULT_MOBILE_THROTTLE, DEFAULT_REQUESTER_THROTTLE,
                             ConfigError, ProducerSettings, get_producer_settings, get_settings, parse_range_guard,
                             parse_throttle)
from tasks.verification import StartedVerification, Verifications
from worker.broker.messages import TASK_NAME, QueueKind, queue_for, send_options, shared_conf
from worker.errors import InvalidPayload, NotReplayable, OverBudget, RequestIdConflict, Throttled
from worker.sending.masking import mask_digit_runs
from worker.sending.request import VoiceCodeRequest, validate, validate_requester
from worker.stores import Stores
from worker.stores.connection import Urls, connect_state, resolve_urls
from worker.stores.idempotency import IdempotencyStore, task_id_for
from worker.stores.registry import Limits, WorkerRegistry
from worker.stores.throttle import MobileThrottle, window_args
from worker.stores.verifications import CheckResult, VerificationStore

if TYPE_CHECKING:
    from celery import Celery
    from celery.result import AsyncResult

__all__ = [
    "enqueue_voice_code", "start_verification", "check_verification", "replay_dead_letter", "Producer",
    "StartedVerification", "CheckResult", "InvalidPayload", "NotReplayable", "OverBudget", "RequestIdConflict",
    "Throttled", "ConfigError",
]

log = logging.getLogger(__name__)

#: The limits before any worker has announced its own.
DEFAULT_LIMITS = Limits(parse_throttle("MOBILE_THROTTLE", DEFAULT_MOBILE_THROTTLE), int(DEFAULT_CODE_TTL),
                        parse_throttle("REQUESTER_THROTTLE", DEFAULT_REQUESTER_THROTTLE), parse_range_guard({}))

#: How long a request id is remembered: as long as the worker keeps the request's outcome
#: (worker/stores/idempotency.py) and Celery its result (``result_expires``).
KEEP_SECONDS = 86400


@dataclass(frozen=True)
class Ticket:
    """A validated request on its way in: its task id, who asks for it (None: nobody said) and the
    workers' limits it is checked against."""

    req: VoiceCodeRequest
    task_id: str
    requester: str | None
    limits: Limits


class Producer:
    """Enqueues ``send_voice_code`` for one configuration; each part is built on first use."""

    keep_seconds = KEEP_SECONDS

    def __init__(self, settings: ProducerSettings) -> None:
        self.settings = settings
        self._warned_limits = False

    @cached_property
    def urls(self) -> Urls:
        """Broker, results and state; the embedded Redis is started only when the settings name no server."""
        return resolve_urls(self.settings)

    @cached_property
    def state(self) -> redis.Redis:
        return connect_state(self.urls.state, self.urls.sentinel_master)

    @cached_property
    def celery(self) -> Celery:
        """A bare Celery app on the service's broker: it publishes by task name and reads results.

        Never the current app, so a web app's own Celery app and tasks are left alone.
        """
        from celery import Celery

        app = Celery("voicecode-producer", set_as_current=False)
        app.conf.update(shared_conf(self.urls.broker, self.urls.result_backend, self.urls.sentinel_master,
                                    self.settings.wait_replicas))
        if self.settings.wait_replicas and self.urls.broker.startswith(("redis://", "rediss://", "sentinel://")):
            # kombu's Redis transport with the wait for replicas after each publish (worker/broker/transport.py)
            from worker.broker.transport import transport_for

            app.conf.broker_transport = transport_for(self.urls.broker)
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
    def _requests(self) -> IdempotencyStore:
        return IdempotencyStore(self.state, lease_seconds=0.0, keep_seconds=self.keep_seconds)

    @cached_property
    def _registry(self) -> WorkerRegistry:
        return WorkerRegistry(self.state)

    @cached_property
    def _throttle(self) -> MobileThrottle:
        """The number's throttle, for its keys (its windows come with each ticket)."""
        return MobileThrottle(self.state, ())

    def enqueue(self, mobile: object, code: object, account: object = None, request_id: object = None,
                ttl: object = None, requester: object = None) -> AsyncResult:
        """See :func:`enqueue_voice_code`."""
        ticket = self.request(mobile, code, account, request_id, ttl, requester)
        task_id, new = self.reserve(ticket, asked=(ticket.req.mobile, ticket.req.code, ticket.req.account))
        if not new:
            return self.result(task_id)
        try:
            return self.publish(ticket.req, task_id)
        except Exception:
            self.withdraw(ticket)
            raise

    def replay(self, mobile: str, code: str, account: str, request_id: str, ttl: int) -> AsyncResult:
        """Enqueue a dead letter's request again, as a new task: not counted against the number
        again (it was the first time), and its old result cannot be mistaken for the new one."""
        ticket = self.request(mobile, code, account, request_id, ttl)
        task_id = str(uuid.uuid4())
        self._requests.reopen(ticket.req.request_id, task_id)
        return self.publish(ticket.req, task_id)

    def request(self, mobile: object, code: object, account: object, request_id: object, ttl: object,
                requester: object = None) -> Ticket:
        """The validated request and its task id; ``InvalidPayload`` names the first bad field.

        A caller's request id gives the task id every producer derives from it; without one, a
        fresh task id is the request id too.
        """
        announced = self._registry.view()
        limits = self._limits(announced.limits)
        # Which accounts exist is for the workers to say (below): validate() takes any name.
        named = DEFAULT_ACCOUNT if account is None else account
        req = validate(mobile, code, account, request_id, ttl, accounts=[named], default_ttl=limits.code_ttl)
        asking = validate_requester(requester)
        if req.account not in announced.live | announced.known | set(self.settings.accounts):
            shown = req.account[:32]
            raise InvalidPayload("account", f"unknown account {shown!r}: no worker has served its queue "
                                            f"{queue_for(shown)!r}")
        if req.request_id:
            return Ticket(req, task_id_for(req.request_id), asking, limits)
        task_id = str(uuid.uuid4())
        return Ticket(dataclasses.replace(req, request_id=task_id), task_id, asking, limits)

    def reserve(self, ticket: Ticket, *, asked: tuple[str, ...]) -> tuple[str, bool]:
        """Reserve the ticket's request id and count the call against the number, in one step:
        ``(task_id, True)`` for a new request, ``(its task id, False)`` for one enqueued before,
        which is not counted again. ``asked`` identifies the request as the caller asked for it.

        Raises :class:`Throttled` for a new request to a number called too often (or from a
        requester who asked too often, or to a range under attack), :class:`OverBudget` for an
        account past its daily budget, and :class:`RequestIdConflict` for a request id used
        before for another request. Of producers racing with one request id, one gets True.
        """
        req, limits = ticket.req, ticket.limits
        log_key, block_key = self._throttle.keys(req.mobile)
        reservation = self._requests.reserve(
            req.request_id, ticket.task_id, asked, (req.mobile, req.code, req.account),
            throttle=(log_key, block_key, self._throttle.member(req.request_id)), windows=window_args(limits.windows),
            door=ticket.limits.door(ticket.requester, req.account, req.mobile))
        if reservation.status == "throttled":
            raise Throttled(reservation.retry_after, reservation.limit)
        if reservation.status == "over_budget":
            raise OverBudget(req.account, reservation.budget)
        if reservation.status == "conflict":
            raise RequestIdConflict(mask_digit_runs(req.request_id))
        return reservation.task_id, reservation.status == "new"

    def publish(self, req: VoiceCodeRequest, task_id: str) -> AsyncResult:
        """Send ``send_voice_code`` by name to the account's queue (worker/broker/messages.py)."""
        kind = QueueKind(self.settings.queue_type, self.settings.delivery_limit)  # as the workers declare it
        return self.celery.send_task(TASK_NAME, **send_options(req, task_id, kind=kind))

    def withdraw(self, ticket: Ticket) -> None:
        """Give back a reservation whose publish failed: the request id, and the call counted
        against the number, the requester and the account's budget."""
        req = ticket.req
        log_key, _ = self._throttle.keys(req.mobile)
        self._requests.withdraw(req.request_id, throttle=(log_key, self._throttle.member(req.request_id)),
                                door=ticket.limits.door(ticket.requester, req.account, req.mobile))

    def result(self, task_id: str) -> AsyncResult:
        return self.celery.AsyncResult(task_id)

    def _limits(self, announced: Limits | None) -> Limits:
        """The workers' limits as they announced them (the defaults before any did, with this
        process's own ``MOBILE_THROTTLE`` and ``VOICE_CODE_TTL`` if set); one of those set here
        that differs from the workers' is logged once."""
        own_windows, own_ttl = self.settings.mobile_throttle, self.settings.code_ttl
        if announced is None:
            return dataclasses.replace(DEFAULT_LIMITS, windows=DEFAULT_LIMITS.windows if own_windows is None
                                       else own_windows, code_ttl=own_ttl or DEFAULT_LIMITS.code_ttl)
        differs = (own_windows is not None and own_windows != announced.windows
                   or own_ttl is not None and own_ttl != announced.code_ttl)
        if differs and not self._warned_limits:
            self._warned_limits = True
            log.warning("MOBILE_THROTTLE or VOICE_CODE_TTL here differs from the workers' (%s, %d s): "
                        "the workers' are used", ",".join(f"{w.limit}/{w.seconds}s" for w in announced.windows) or
                        "no throttle", announced.code_ttl)
        return announced


@functools.cache
def default_producer() -> Producer:
    """The producer for this process's environment (and ``.env`` file), built on first use."""
    return Producer(get_producer_settings())


def enqueue_voice_code(
    mobile: str, code: str, account: str | None = None, request_id: str | None = None, ttl: int | None = None,
    requester: str | None = None,
) -> AsyncResult:
    """Validate and enqueue one voice code of your own; return the Celery ``AsyncResult``.

    Raises :class:`InvalidPayload` naming the bad field (``account`` for one no worker has
    served), :class:`Throttled` (with ``retry_after`` seconds) when the number was called too
    often (or ``requester`` asked too often, or the number's range is under attack),
    :class:`OverBudget` when the account took its daily budget, or :class:`RequestIdConflict`
    when ``request_id`` was used for another request.

    ``request_id`` is the idempotency key (default: the task id): the same key again, with the
    same number, code and account, returns the same task and calls the person once. ``ttl`` is how long the code is valid, in seconds
    (default ``VOICE_CODE_TTL``); it is never sent after that. ``requester`` names who asks
    (your choice: the client's address, a user id, a session) for the per-requester limit
    (``REQUESTER_THROTTLE``); it is kept only as an HMAC and never shown.
    """
    return default_producer().enqueue(mobile, code, account, request_id, ttl, requester)


def start_verification(
    mobile: str, *, account: str | None = None, ttl: int | None = None, length: int = 6, request_id: str | None = None,
    requester: str | None = None,
) -> StartedVerification:
    """Pick a code of ``length`` digits, keep its keyed hash for ``ttl`` seconds and have it read aloud to ``mobile``.

    Returns the verification (id, masked number, expiry, task id), never the code. A pending
    verification of the number is replaced. ``request_id`` makes the start idempotent: the
    same id again returns the same verification, with no new code and no new call. Raises
    :class:`InvalidPayload`, :class:`Throttled`, :class:`OverBudget`, :class:`RequestIdConflict`
    (the id was used for another request), or ``ConfigError`` when ``VOICECODE_SECRET`` is not
    set. ``requester`` is as for :func:`enqueue_voice_code`.
    """
    return default_producer().verifications.start(mobile, account=account, ttl=ttl, length=length,
                                                  request_id=request_id, requester=requester)


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
    result = default_producer().replay(**payload)
    letters.remove(letter_id)
    return result
