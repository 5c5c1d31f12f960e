"""``voicecode demo``: a scripted set of sends through every outcome, against the sandbox.

It runs against the sandbox only (``voicecode sandbox``; it refuses any other
``IHUYI_API_URL``): the magic numbers make code 0, HTTP 500 and a connection reset happen,
and the sandbox's control API makes the demo account answer each dead-letter code in turn.
It uses what is up (``make run``) and starts what is not, stopping it after (cli/devstack.py):
the embedded Redis (``voicecode demo`` starts it before importing this module), a sandbox where
``IHUYI_API_URL`` points (a plain http:// URL on this machine), a worker for its account.
Every send uses a fresh random number, so the demo can run again at once without the
per-number throttle getting in the way.

In steps, each waiting for the one before:

1. at once: a plain send, retries then success, and a code that expires before its turn;
2. at once: the first request again (duplicate) and the first number again, by name and
   through the producer API (throttled, when ``MOBILE_THROTTLE`` is on);
3. with ``VOICECODE_SECRET`` set, a verification: started (the service picks the code), then
   checked with a wrong code, the right one (read from the sandbox's Submit) and the right one
   again;
4. one at a time: ihuyi answering 4030, 405, 4050, 4051 and 408, then a send while the
   account is still paused by the 408. The account is resumed and the sandbox put back
   afterwards, whatever happens.

With ``SENTRY_DSN`` set, the account-scoped codes raise real alerts: a way to see them.
"""
from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from celery.result import AsyncResult

from cli.devstack import StackError, sandbox_at, worker_for
from config import Settings, get_settings
from config.settings import DEFAULT_ACCOUNT, get_producer_settings
from tasks.producer import CheckResult, Throttled, check_verification, enqueue_voice_code, start_verification
from tasks.voice import send_voice_code
from worker.ops.reporting import outcome_of
from worker.broker.messages import queue_for

#: The dead-letter codes users meet most, message-scoped first: the others pause the account.
FORCED_CODES = (4030, 405, 4050, 4051, 408)
REFUSED = "refused: Throttled"


@dataclass
class Scenario:
    name: str
    expected: str
    ihuyi_code: int | None = None
    pending: AsyncResult | None = None
    result: Any = None
    answer: str | None = None  # an outcome known at once, with no task: a refusal, a check's answer

    @property
    def done(self) -> bool:
        if self.result is None and self.pending is not None and self.pending.ready():
            self.result = self.pending.get(propagate=False)
        return self.result is not None or self.answer is not None

    @property
    def outcome(self) -> str:
        if self.answer:
            return self.answer
        if isinstance(self.result, dict):
            return outcome_of(self.result)
        return "no result" if self.result is None else f"failed: {type(self.result).__name__}"

    @property
    def ok(self) -> bool:
        code = self.result.get("code") if isinstance(self.result, dict) else None
        return self.outcome == self.expected and (self.ihuyi_code is None or code == self.ihuyi_code)


class SandboxControl:
    """The sandbox's control API for one account (``POST /_sandbox/account``)."""

    def __init__(self, api_url: str, apiid: str) -> None:
        parts = urlsplit(api_url)
        self._url = f"{parts.scheme}://{parts.netloc}/_sandbox"
        self._apiid = apiid

    def set(self, **changes: Any) -> bool:
        """Change the account (no changes: just ask); False when no sandbox answers."""
        try:
            reply = requests.post(f"{self._url}/account", json={"apiid": self._apiid, **changes}, timeout=5)
        except requests.RequestException:
            return False
        return reply.status_code == 200

    def code_read_to(self, mobile: str) -> str:
        """The code of the last Submit to ``mobile``: what the person heard."""
        calls = requests.get(f"{self._url}/calls", params={"method": "Submit"}, timeout=5).json()
        return [call["content"] for call in calls if call["mobile"] == mobile][-1]


def _mobile(prefix: str = "138") -> str:
    return prefix + "".join(secrets.choice("0123456789") for _ in range(11 - len(prefix)))


def _code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def _by_name(mobile: str, code: str, account: str, **kwargs: Any) -> AsyncResult:
    """Enqueue past the producer's checks, as a foreign producer would (``countdown`` is Celery's)."""
    countdown = kwargs.pop("countdown", None)
    kwargs["account"] = account
    return send_voice_code.publish((mobile, code), kwargs, countdown=countdown,
                                   headers={"enqueued_at": time.time()}, queue=queue_for(account))


def _shown(answer: CheckResult) -> str:
    return f"rejected ({answer.attempts_left} left)" if answer.status == "rejected" else answer.status


def demo_account(settings: Settings) -> tuple[str, bool]:
    """The account to run on (``default`` if it can) and whether a paused send ends ``account_paused``
    (it does not when the account has a fallback to send through instead)."""
    names = sorted(settings.accounts, key=lambda n: (n != DEFAULT_ACCOUNT, n))
    alone = [n for n in names if settings.accounts[n].fallback is None]
    return (alone[0], True) if alone else (names[0], False)


class Demo:
    def __init__(self, total: int, deadline: float) -> None:
        self.rows: list[Scenario] = []
        self.total = total
        self.deadline = deadline
        self.shown = -1  # the count the progress shows

    def run(self, step: list[tuple[Scenario, Callable[[], AsyncResult | str]]]) -> None:
        """Enqueue every scenario of one step, then wait for them with a progress line."""
        for scenario, send in step:
            self.rows.append(scenario)
            try:
                sent = send()
            except Throttled:
                sent = REFUSED
            if isinstance(sent, str):
                scenario.answer = sent
            else:
                scenario.pending = sent
        # On a terminal one line counting up; into a pipe or a file a line each time the count moves.
        start, end = ("\r", "") if sys.stdout.isatty() else ("", "\n")
        while True:
            # Read once per turn: a result arriving between the count and the check is shown before the end.
            states = [row.done for row in self.rows]
            done = sum(states)
            if done != self.shown:
                print(f"{start}{done}/{self.total} done", end=end, flush=True)
                self.shown = done
            if done == len(states) or time.monotonic() > self.deadline:  # earlier steps ended done, or at the deadline
                return
            time.sleep(0.1)

    def table(self) -> str:
        lines = [f"{'scenario':44}  {'expected':20}  {'outcome':20}  {'ihuyi code':>10}  {'attempts':>8}"]
        for row in self.rows:
            result = row.result if isinstance(row.result, dict) else {}
            code, attempts = result.get("code"), result.get("attempts")
            lines.append(f"{row.name:44}  {row.expected:20}  {row.outcome:20}  {'-' if code is None else code:>10}  "
                         f"{'-' if attempts is None else attempts:>8}  {'ok' if row.ok else 'UNEXPECTED'}")
        return "\n".join(lines)


def run_demo(timeout: float) -> int:
    """Run the scripted set; 0 when every scenario ended as expected within ``timeout`` seconds."""
    settings = get_settings()
    account, pauses = demo_account(settings)
    sandbox = SandboxControl(settings.api_url, settings.accounts[account].apiid)
    try:
        # What is not up yet, started in this order and stopped in the reverse (the embedded Redis
        # before them all, by the command: importing this module starts it).
        with ExitStack() as stack:
            stack.enter_context(sandbox_at(settings, found=sandbox.set()))
            stack.enter_context(worker_for(settings, account))
            return _run_scenarios(settings, account, pauses, sandbox, timeout)
    except StackError as exc:
        print(f"voicecode: {exc}", file=sys.stderr)
        return 1


def _run_scenarios(settings: Settings, account: str, pauses: bool, sandbox: SandboxControl, timeout: float) -> int:
    states = send_voice_code.app.stores.accounts
    throttling = bool(settings.mobile_throttle)
    verify = get_producer_settings()
    verifying = verify.verify_secret is not None

    def send(mobile: str, code: str | None = None, **kwargs: Any) -> Callable[[], AsyncResult]:
        return lambda: enqueue_voice_code(mobile, code or _code(), account, **kwargs)

    def check(mobile: str, wrong: bool = False) -> Callable[[], str]:
        """Check the code the sandbox read to ``mobile`` (``wrong``: a code one off it)."""
        def answer() -> str:
            code = sandbox.code_read_to(mobile)
            if wrong:
                code = f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"
            return _shown(check_verification(mobile, code))
        return answer

    first, first_code, request_id = _mobile(), _code(), f"demo-{secrets.token_hex(8)}"
    verified = _mobile()
    # (the code the sandbox forces on the account during the step, or None; the step's scenarios)
    steps: list[tuple[int | None, list[tuple[Scenario, Callable[[], AsyncResult | str]]]]] = [
        (None, [
            (Scenario("sent", "submitted", 2), send(first, first_code, request_id=request_id)),
            (Scenario("code 0 twice, then sent", "submitted", 2), send(_mobile("1990102"))),
            (Scenario("HTTP 500, then sent", "submitted", 2), send(_mobile("1990111"))),
            (Scenario("connection reset, then sent", "submitted", 2), send(_mobile("1990121"))),
            (Scenario("expired in the queue (ttl 1 s, due in 2 s)", "expired"),
             lambda: _by_name(_mobile(), _code(), account, ttl=1, countdown=2)),
        ]),
        (None, [
            (Scenario("same request_id again", "duplicate", 2),
             lambda: _by_name(first, first_code, account, request_id=request_id)),
            *([(Scenario("same number again, by name", "throttled"), lambda: _by_name(first, _code(), account)),
               (Scenario("same number again, producer API", REFUSED), send(first))] if throttling else []),
        ]),
        *([(None, [(Scenario("verification started", "submitted", 2),
                    lambda: send_voice_code.AsyncResult(start_verification(verified, account=account).task_id))]),
           (None, [(Scenario("verification: a wrong code", f"rejected ({verify.verify_max_attempts - 1} left)"),
                    check(verified, wrong=True)),
                   (Scenario("verification: the code read aloud", "approved"), check(verified)),
                   (Scenario("verification: the same code again", "not_found"), check(verified))])]
          if verifying else []),
        *((code, [(Scenario(f"ihuyi answers {code}", "dead_lettered", code), send(_mobile()))])
          for code in FORCED_CODES),
        *([(None, [(Scenario("account paused (by the 408)", "account_paused", 408), send(_mobile()))])]
          if pauses else []),
    ]
    demo = Demo(sum(len(rows) for _, rows in steps), time.monotonic() + timeout)
    states.resume(account)
    try:
        for forced, rows in steps:
            if forced is not None:
                states.resume(account)  # paused by the code before
                sandbox.set(forced_code=forced)
            try:
                demo.run(rows)
            finally:
                sandbox.set(forced_code=None)
    finally:
        states.resume(account)
    if sys.stdout.isatty():
        print()  # ends the progress line
    print(demo.table())
    unexpected = [row for row in demo.rows if not row.ok]
    print(f"{len(demo.rows) - len(unexpected)}/{len(demo.rows)} scenarios ended as expected"
          f"{'' if throttling else ' (MOBILE_THROTTLE is off: no throttled scenarios)'}"
          f"{'' if verifying else ' (VOICECODE_SECRET is not set: no verification scenarios)'}")
    return 1 if unexpected else 0
