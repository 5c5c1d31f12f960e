"""The life of one ``send_voice_code`` request, without Celery: :class:`Sender`.

:meth:`Sender.send` takes a validated request and returns what to do next: :class:`Done`,
:class:`RetryIn` or :class:`Park` (worker/sending/outcomes.py). On its way:

1. the gate (worker/stores/gate.py) decides, in one round trip on the Redis server's clock,
   everything that may refuse the send before it costs an ihuyi call or a rate-limit slot:
   the request's deadline and idempotency, the account's pause (a probe of this host's, the
   fallback, a hand-back to another host), the number's throttle, the account's rate limit;
2. worker/sending/decide.py acts on the verdict: waits for the slot, or parks, retries,
   dead-letters;
3. worker/sending/submit.py makes the Submit and acts on ihuyi's answer;
4. worker/sending/results.py writes the final result and the delivery's metrics in one more
   round trip: when Celery's results live in the state Redis, the task's result too.

The constants of these steps are in worker/sending/timing.py.
"""
from __future__ import annotations

import logging

from config import Account, Settings
from ihuyi import IhuyiClient
from worker.errors import InvalidPayload
from worker.sending.decide import Decider
from worker.sending.outcomes import Done, Outcome, Park, Refusal, RetryIn, make_result, outcome_of
from worker.sending.request import VoiceCodeRequest
from worker.sending.results import Measures, ResultStore
from worker.sending.submit import Submitter
from worker.sending.timing import HAND_BACK_DELAY, HAND_BACK_SECONDS, MAX_HOLD_SECONDS, PARKED_LATE_SECONDS
from worker.stores import Stores
from worker.stores.gate import Policy
from worker.stores.idempotency import TaskResult
from worker.stores.metrics import MetricsStore
from worker.stores.registry import Limits

__all__ = ["Done", "Park", "Refusal", "RetryIn", "Sender", "client_for", "make_result", "outcome_of"]

log = logging.getLogger(__name__)


def client_for(settings: Settings, account: Account) -> IhuyiClient:
    return IhuyiClient(
        settings.api_url, account.apiid, account.apikey,
        password_mode=settings.password_mode, reply_format=settings.reply_format,
        connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout,
    )


class Sender:
    """Everything one worker process needs to send: settings, the stores and an ihuyi client per
    account. ``settings.host`` is this host, for the pauses about it; ``policy`` what the gate
    is told of this sender's waits, probes and hand-backs."""

    def __init__(self, settings: Settings, stores: Stores) -> None:
        self.settings = settings
        self.stores = stores
        self.limits = Limits.of(settings)
        self.metrics = MetricsStore(stores.redis, accounts=settings.accounts)
        self.clients = {name: client_for(settings, account) for name, account in settings.accounts.items()}
        self.policy = Policy(host=settings.host, probe_every=settings.account_probe_seconds,
                             max_hold=MAX_HOLD_SECONDS, parked_late=PARKED_LATE_SECONDS,
                             hand_back_window=HAND_BACK_SECONDS, hand_back_delay=HAND_BACK_DELAY)
        self.results = ResultStore(stores.idempotency, stores.dead_letters, self.metrics)
        self.decider = Decider(settings, stores, self.clients, self.results,
                               Submitter(settings, stores, self.clients, self.results))
        if settings.api_url.startswith("http://"):
            log.warning("IHUYI_API_URL is plain http://: passwords, numbers and codes cross the network "
                        "unencrypted; use https://")

    def send(self, req: VoiceCodeRequest, *, task_id: str | None, enqueued_at: float | None = None,
             task_result: TaskResult | None = None, requester: str | None = None) -> Outcome:
        """One delivery of ``req``: what to do next (see the module's docstring). Given
        ``task_result``, a final result written to the request's record is written there too.
        ``requester``: who asks, named by a request sent by task name; it meets the door's
        limits (worker/stores/guards.py) on its first delivery, in the gate's round trip."""
        measures = Measures()
        door = None if requester is None else self.limits.door(requester, req.account, req.mobile)
        outcome = self.decider.run(req, task_id, enqueued_at, self.policy, measures, door)
        if isinstance(outcome, Done) and outcome.store:
            return self.results.store(req, outcome, measures, task_result)
        self.results.record(measures, outcome.result if isinstance(outcome, Done) else None)
        return outcome

    def reject_invalid(self, mobile: object, error: InvalidPayload, *, task_id: str | None, request_id: object) -> Done:
        """Dead-letter a payload the worker cannot accept (nothing to replay: it would fail again)."""
        return self.results.reject_invalid(mobile, error, task_id=task_id, request_id=request_id)
