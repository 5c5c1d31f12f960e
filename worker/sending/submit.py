"""The Submit itself, and what ihuyi's answer calls for.

What ihuyi refuses is handled by who it is about (ihuyi/codes.py): a number called too often
(4080-4086) is blocked in the throttle and the send ends ``throttled``; the sending host's IP
(400, 4052), or its clock (405 with the dynamic password while this host's clock is more than
a minute from ihuyi's), pauses the account on this host only and hands the send back to the
queue for another host, as the gate decides (worker/stores/gate.py's ``refused_here``); the
account itself (405, 4050, 4051, 408) pauses it pool-wide. A transient failure is retried
with backoff (worker/sending/retry.py) while attempts and the code's deadline allow.
"""
from __future__ import annotations

import contextlib
import logging
import time
from urllib.parse import urlsplit

import sentry_sdk
from sentry_sdk.consts import OP

from config import Settings
from ihuyi import IhuyiClient, PermanentError, Scope, SubmitReply, TransientError
from ihuyi.codes import WRONG_CREDENTIALS, classify
from worker.sending.masking import mask_digit_runs
from worker.sending.outcomes import Done, Refusal, RetryIn, handed_back, make_result
from worker.sending.results import Delivery, ResultStore
from worker.sending.retry import send_backoff
from worker.stores import Stores
from worker.stores.accounts import Pause

#: After a 405 with the dynamic password, a clock further than this from ihuyi's is the cause: the dynamic password hashes the worker's own time.
MAX_CLOCK_SKEW_SECONDS = 60.0

log = logging.getLogger(__name__)


def traced_submit(api_url: str, account: str) -> contextlib.AbstractContextManager[object]:
    """An ``http.client`` span of the Submit inside the run's Sentry transaction, when the run
    is a sampled one (worker/ops/sentry.py); else nothing. Only the URL's scheme, address and
    path are named: the form, with the number and the code, never is."""
    if sentry_sdk.get_current_span() is None:
        return contextlib.nullcontext()
    parts = urlsplit(api_url)
    address = parts.netloc.rpartition("@")[2]  # without a user and password, should the URL hold them
    span = sentry_sdk.start_span(op=OP.HTTP_CLIENT, name=f"POST {parts.scheme}://{address}{parts.path}")
    span.set_data("ihuyi.method", "Submit")
    span.set_data("ihuyi.account", account)
    return span


class Submitter:
    """Submits through the account's client and acts on the answer."""

    def __init__(self, settings: Settings, stores: Stores, clients: dict[str, IhuyiClient],
                 results: ResultStore) -> None:
        self.settings = settings
        self.stores = stores
        self.clients = clients
        self.results = results

    def submit(self, d: Delivery, account: str, remaining: float) -> Done | RetryIn:
        """The Submit, ``remaining`` seconds before the deadline, and what its outcome calls for."""
        try:
            reply = self._timed_submit(d, account, remaining)
        except TransientError as exc:
            return self._after_transient(d, exc)
        except PermanentError as exc:
            return self._after_permanent(d, account, exc)
        except Exception as exc:  # noqa: BLE001 - whatever the reply did, the request must end final or retried
            log.error("ihuyi Submit for request %s failed unexpectedly (%s)", mask_digit_runs(d.req.request_id),
                      type(exc).__name__)
            return self._after_transient(d, TransientError(f"ihuyi Submit failed ({type(exc).__name__})"))
        return self.results.finish(d, make_result(d.req, "submitted", d.attempt.attempts, code=reply.code,
                                                  voiceid=reply.voiceid, account=account))

    def _timed_submit(self, d: Delivery, account: str, timeout: float) -> SubmitReply:
        """The Submit call, its duration measured whatever it ends in."""
        client = self.clients[account]
        started = time.monotonic()
        try:
            with traced_submit(client.api_url, account):
                return client.submit(d.req.mobile, d.req.code, timeout=timeout)
        finally:
            d.measures.submits.append((account, time.monotonic() - started))

    def _after_permanent(self, d: Delivery, account: str, exc: PermanentError) -> Done | RetryIn:
        """ihuyi refused: block the number, or pause the account (on this host or the pool), as the code says."""
        self.stores.accounts.record_code(account, exc.code)
        info = classify(exc.code)
        if exc.scope is Scope.NUMBER:
            self.stores.throttle.block(d.req.mobile, info.retry_after or 0)
            return self.results.dead_letter(d, "throttled", exc.code, exc.msg,
                                            f"ihuyi: {info.meaning}; retry after {info.retry_after} s", account=account)
        skew = self._clock_skew(exc)
        refusal = Refusal(account, exc.code, "on Submit")
        if exc.scope is Scope.HOST or skew is not None:
            host = d.policy.host
            pause = Pause(exc.code, exc.msg if skew is None else skew, time.time(), host)
            refusal = Refusal(account, exc.code, "on Submit", pause)
            if self.stores.gate.refused_here(d.req.request_id, d.attempt, account, pause.code, pause.msg,
                                      policy=d.policy) == "hand_back":
                return handed_back(refusal, host, d.policy.hand_back_delay)
        elif exc.scope is Scope.ACCOUNT:
            self.stores.accounts.pause(account, exc.code, exc.msg)
        done = self.results.dead_letter(d, "permanent", exc.code, exc.msg, account=account)
        return Done(done.result, refusal)

    def _clock_skew(self, exc: PermanentError) -> str | None:
        """After a 405 with the dynamic password, "clock skew on host X by N s" when this host's clock
        is more than a minute from ihuyi's (its reply's Date; the state Redis's TIME without one);
        else None: the APIID or APIKEY is wrong."""
        if exc.code != WRONG_CREDENTIALS or self.settings.password_mode != "dynamic":
            return None
        seconds, micros = self.stores.redis.time()
        redis_skew = time.time() - (seconds + micros / 1e6)
        ihuyi = exc.server_time
        # A Date is a whole second, cut down: ihuyi's clock read half a second later, on average;
        # compared with this host's clock when the reply was read, not after a Redis round trip.
        skew = redis_skew if ihuyi is None or exc.received_at is None else exc.received_at - (ihuyi + 0.5)
        if abs(skew) <= MAX_CLOCK_SKEW_SECONDS:
            return None
        against = "the state Redis's clock (ihuyi sent no Date)" if ihuyi is None else "ihuyi's clock"
        return (f"clock skew on host {self.settings.host} by {abs(skew):.0f} s "
                f"({'ahead of' if skew > 0 else 'behind'} {against}; the state Redis's clock differs by "
                f"{redis_skew:+.0f} s)")

    def _after_transient(self, d: Delivery, exc: TransientError) -> Done | RetryIn:
        attempt = d.attempt
        if not exc.sent:  # ihuyi cannot have called the person: the number's quota is given back
            self.stores.throttle.release(d.req.mobile, d.req.request_id)
        if attempt.attempts >= self.settings.max_attempts:
            return self.results.dead_letter(d, "retries_exhausted", exc.code, exc.msg, str(exc))
        delay = send_backoff(self.settings).delay(attempt.attempts)
        if attempt.now + delay >= attempt.deadline:
            return self.results.dead_letter(d, "expired", exc.code, exc.msg, str(exc), status="expired")
        self.stores.idempotency.release(d.req.request_id, attempt, sent=True)
        return RetryIn(delay, str(exc))
