"""What a send does on each of the gate's verdicts.

The gate (worker/stores/gate.py) decides everything before the Submit, in one round trip:
this module only acts on its answer, one action per verdict, in the order the gate decides:

- the attempt ended at begin: conflict (the request id is another request's: rejected),
  done (the stored result, a Submit as a duplicate), busy (poll again), expired;
- ``refused``: a request sent by task name that the door's limits refuse (dead-lettered
  ``throttled`` or ``over_budget``);
- ``probe``: a GetNum from this host for the account's pause here, then the gate again;
- ``hand_back`` (a :class:`RetryIn` for another host), ``paused`` (dead-lettered
  ``account_paused``), both recalling the pause;
- ``throttled`` (dead-lettered), ``late`` (expired: no slot before the deadline);
- ``park`` (a :class:`Park` until just before the slot);
- ``go`` and ``slot``: wait for the slot, then Submit (worker/sending/submit.py). A slot
  reached late is used as the account's rate limit allows then (the gate's ``late``), once.
"""
from __future__ import annotations

import time
from typing import assert_never

from config import Settings
from ihuyi import IhuyiClient
from worker.sending.outcomes import Done, Outcome, Park, Refusal, RetryIn, handed_back, make_result
from worker.sending.request import VoiceCodeRequest
from worker.sending.results import Delivery, Measures, ResultStore
from worker.sending.submit import Submitter
from worker.sending.timing import BUSY_POLL_SECONDS, CLAIM_AFTER_SECONDS, late_allowance
from worker.stores import Stores
from worker.stores.accounts import probe
from worker.stores.gate import Policy, Verdict
from worker.stores.guards import Door


class Decider:
    """Enters the gate for a delivery and carries out what it answers."""

    def __init__(self, settings: Settings, stores: Stores, clients: dict[str, IhuyiClient],
                 results: ResultStore, submitter: Submitter) -> None:
        self.settings = settings
        self.stores = stores
        self.clients = clients
        self.results = results
        self.submitter = submitter

    def run(self, req: VoiceCodeRequest, task_id: str | None, enqueued_at: float | None, policy: Policy,
            measures: Measures, door: Door | None = None) -> Outcome:
        """One pass through the gate, and what its verdict calls for; ``door``, the limits of a
        request sent by task name that names who asks."""
        asked = time.monotonic()
        verdict = self.stores.gate.enter(req.request_id, req.mobile, req.account, req.ttl, enqueued_at,
                                         policy=policy, message=(req.mobile, req.code, req.account),
                                         task_id=task_id or "", door=door)
        return self._act(Delivery(req, task_id, enqueued_at, policy, measures, verdict.attempt, asked), verdict)

    def _act(self, d: Delivery, verdict: Verdict) -> Outcome:
        account, seconds = verdict.account, verdict.seconds
        match verdict.verdict:
            case None:
                return self._ended(d)
            case "refused":
                return self._refused_at_door(d, verdict)
            case "probe":
                probe(self.stores.accounts, account, self.clients[account].get_num, d.policy.host)
                return self.run(d.req, d.task_id, d.enqueued_at, d.policy, d.measures)
            case "hand_back":
                return handed_back(self._turned_away(verdict), d.policy.host, seconds)
            case "paused":
                return self._paused(d, verdict)
            case "throttled":
                return self.results.dead_letter(d, "throttled", None, "",
                                                f"number called too often; retry after {seconds:.0f} s",
                                                submitted=False)
            case "late":
                return self.results.expired(d, account, reason="rate_limited_past_ttl")
            case "park":
                self._count_wait(d, verdict)
                # Back a little early: the re-published task may queue behind others before it runs.
                return Park(seconds - d.policy.max_hold)
            case "go":
                self._count_wait(d, verdict)
                return self._on_slot(d, verdict, late_allowance(self.settings.accounts[account].rate))
            case "slot":
                return self._on_slot(d, verdict, d.policy.parked_late)
            case _:
                assert_never(verdict.verdict)

    def _ended(self, d: Delivery) -> Outcome:
        """The attempt ended at begin: the request id is another request's, or the request is
        finished, held by another attempt, or expired."""
        attempt = d.attempt
        match attempt.state:
            case "conflict":
                return self.results.reject(d.req.mobile, "request_id_conflict", "the request id was used before for "
                                           "another number, code or account: nothing sent", task_id=d.task_id,
                                           request_id=d.req.request_id, account=d.req.account)
            case "done":
                stored = attempt.result or {}
                return Done({**stored, "status": "duplicate"} if stored.get("status") == "submitted" else stored)
            case "busy":
                return RetryIn(min(attempt.wait, BUSY_POLL_SECONDS), "another worker holds this request")
            case "expired":
                return self.results.finish(d, make_result(d.req, "expired", attempt.attempts))
            case "go":
                raise AssertionError("an attempt begun comes with the gate's verdict")
            case _:
                assert_never(attempt.state)

    def _refused_at_door(self, d: Delivery, verdict: Verdict) -> Done:
        """A request sent by task name that the door's limits refuse: dead-lettered, nobody called."""
        if verdict.limit == "budget":
            budget = self.settings.accounts[d.req.account].daily_budget
            return self.results.dead_letter(d, "over_budget", None, "", f"account {d.req.account} reached its "
                                            f"daily budget of {budget} calls", submitted=False)
        return self.results.dead_letter(d, "throttled", None, "", f"{verdict.limit} limit; retry after "
                                        f"{verdict.seconds:.0f} s", submitted=False)

    @staticmethod
    def _turned_away(verdict: Verdict) -> Refusal:
        """What a send turned away by the account's pause calls for: the pause, recalled."""
        assert verdict.pause is not None
        return Refusal(verdict.account, verdict.pause.code, "(account paused, send turned away)", verdict.pause)

    def _paused(self, d: Delivery, verdict: Verdict) -> Done:
        refusal = self._turned_away(verdict)
        pause = refusal.pause
        where = "" if pause.host is None else f" on host {pause.host}"
        done = self.results.dead_letter(d, "account_paused", pause.code, pause.msg,
                                        f"account {verdict.account} is paused{where}", submitted=False)
        return Done(done.result, refusal)

    @staticmethod
    def _count_wait(d: Delivery, verdict: Verdict) -> None:
        if verdict.seconds > 0:
            d.measures.waits.append((verdict.account, verdict.seconds))

    def _on_slot(self, d: Delivery, verdict: Verdict, allowance: float) -> Outcome:
        """Wait for the slot ``verdict.seconds`` after the gate was asked, then Submit. A slot
        missed by more than ``allowance`` is used late as the account's rate limit allows
        (the gate's ``late``: go now or after a wait, park, or expire), and only once: on a
        loaded worker every thread wakes late, and asking again and again would burn the
        account's slots faster than they are used."""
        account = verdict.account
        at = d.gated + verdict.seconds
        wait = at - time.monotonic()
        if wait > 0:  # most sends have no wait: no sleep, which would hand the GIL to another thread
            time.sleep(wait)
        if time.monotonic() - at > allowance:
            late = self.stores.gate.late(d.req.request_id, d.attempt, account, verdict.ticket, policy=d.policy)
            if late.verdict == "late":  # the number's call, counted by the gate, given back
                self.stores.throttle.release(d.req.mobile, d.req.request_id)
            if late.verdict != "go":
                return self._act(d, late)
            self._count_wait(d, late)
            time.sleep(late.seconds)
        return self._submit(d, account)

    def _submit(self, d: Delivery, account: str) -> Outcome:
        """Submit on ``account`` now, in the time left before the code's deadline. Only a Submit
        later than CLAIM_AFTER_SECONDS after the gate claims the request first: its record may
        have changed hands since."""
        since = time.monotonic() - d.gated
        remaining = d.attempt.deadline - d.attempt.now - since
        if since > CLAIM_AFTER_SECONDS:
            claim = self.stores.idempotency.claim(d.req.request_id, d.attempt)
            if claim.state == "lost":
                self.stores.throttle.release(d.req.mobile, d.req.request_id)
                return RetryIn(BUSY_POLL_SECONDS, "another attempt took this request over")
            remaining = claim.remaining if claim.state == "go" else 0.0
        if remaining <= 0:
            self.stores.throttle.release(d.req.mobile, d.req.request_id)
            return self.results.expired(d, account)
        return self.submitter.submit(d, account, remaining)
