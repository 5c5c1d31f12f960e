"""Pool-wide metrics counters in the shared state Redis: what every worker on every host counted.

A Prometheus client library counts per process; a pool of workers on several hosts, restarted
at will, needs one set of counters they all add to. Each worker event is a few ``HINCRBY``
increments (:data:`Increment`): written in a round trip of their own (:meth:`MetricsStore.add`), or
handed to the script that finishes the send (worker/stores/idempotency.py), which writes them
in the round trip that stores the result. The metrics endpoint reads everything back with
:meth:`MetricsStore.snapshot`.

Keys (``prefix`` defaults to ``voicecode:metrics:``), hashes that never expire:

- ``<prefix>outcomes``: ``<account>|<status>|<ihuyi_code>`` → final outcomes counted;
- ``<prefix>submit_seconds``: ``<account>|le=<bound>`` → Submit calls that took at most
  ``bound`` seconds and more than the bound below it (not cumulative: one field per write),
  and ``<account>|sum_us`` → their total duration in microseconds (an integer, so exact);
- ``<prefix>rate_limit_waits``: ``<account>|count`` → waits for a rate-limit token,
  ``<account>|sum_us`` → their total in microseconds.

**No number, code or secret can become a label.** Every label value is checked on the way
in and again on the way out: an account must be one of the configured ``accounts``, a
status one of :data:`STATUSES`, an ihuyi code one ihuyi documents (or ``none``); anything
else is counted as ``other``. Changing :data:`BUCKETS` needs the ``submit_seconds`` key
deleted.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate

import redis

from ihuyi.codes import CODES

#: The final outcomes of a send (worker/ops/reporting.py's ``outcome``).
STATUSES = frozenset({"submitted", "duplicate", "dead_lettered", "expired", "throttled", "account_paused",
                      "over_budget", "request_id_conflict"})
#: Upper bounds (seconds) of the Submit latency histogram's buckets; the last is +Inf.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)
#: The label value of anything not known to be safe.
OTHER = "other"
NO_CODE = "none"

_ACCOUNT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_BOUND = {f"le={bound}": i for i, bound in enumerate(BUCKETS)}  # le=0.05 … le=inf
_CODES = frozenset({NO_CODE, *map(str, CODES)})
_MICROS = 1_000_000

#: One counter to add to: (hash key, field, by how much).
Increment = tuple[str, str, int]


@dataclass(frozen=True)
class Histogram:
    """One account's Submit latencies: ``cumulative[i]`` calls took at most ``BUCKETS[i]`` seconds."""

    cumulative: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        return self.cumulative[-1]


@dataclass(frozen=True)
class Waits:
    """One account's rate-limit waits: how many, and how long in all (seconds)."""

    count: int
    seconds: float


@dataclass(frozen=True)
class Snapshot:
    """Everything counted, with safe labels only: ``outcomes`` is keyed ``(account, status, ihuyi_code)``."""

    outcomes: dict[tuple[str, str, str], int]
    submit: dict[str, Histogram]
    rate_limit_waits: dict[str, Waits]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _micros(seconds: float) -> int:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be finite and not negative, got {seconds!r}")
    return round(seconds * _MICROS)


class MetricsStore:
    """Counts worker events for the whole pool, and reads them back for the metrics endpoint."""

    def __init__(self, client: redis.Redis, prefix: str = "voicecode:metrics:", *, accounts: Iterable[str]) -> None:
        """``accounts``: the configured account names, the only ones that may become labels."""
        self.accounts = frozenset(accounts)
        invalid = sorted(name for name in self.accounts if not _ACCOUNT.fullmatch(name))
        if invalid:
            raise ValueError(f"account names must be 1-64 of A-Z a-z 0-9 _ . -, got {invalid}")
        self._redis = client
        self._outcomes = prefix + "outcomes"
        self._submit = prefix + "submit_seconds"
        self._waits = prefix + "rate_limit_waits"

    def account_label(self, account: str) -> str:
        """``account`` if it is a configured account, else ``other``."""
        return account if account in self.accounts else OTHER

    def outcome(self, account: str, status: str, ihuyi_code: int | None) -> list[Increment]:
        """What one final outcome adds."""
        code = _code_label(NO_CODE if ihuyi_code is None else str(ihuyi_code))
        return [(self._outcomes, f"{self.account_label(account)}|{_status_label(status)}|{code}", 1)]

    def submit(self, account: str, seconds: float) -> list[Increment]:
        """What one Submit call that took ``seconds`` (finite, not negative) adds."""
        micros, account = _micros(seconds), self.account_label(account)
        bound = next(bound for bound in BUCKETS if seconds <= bound)
        return [(self._submit, f"{account}|le={bound}", 1), (self._submit, f"{account}|sum_us", micros)]

    def rate_limit_wait(self, account: str, seconds: float) -> list[Increment]:
        """What one wait of ``seconds`` (finite, not negative) for a rate-limit slot adds."""
        micros, account = _micros(seconds), self.account_label(account)
        return [(self._waits, f"{account}|count", 1), (self._waits, f"{account}|sum_us", micros)]

    def add(self, increments: Sequence[Increment]) -> None:
        """Write ``increments`` in one round trip (``MULTI``/``EXEC`` when more than one)."""
        if not increments:
            return
        pipe = self._redis.pipeline(transaction=len(increments) > 1)
        for key, name, by in increments:
            pipe.hincrby(key, name, by)
        pipe.execute()

    def snapshot(self) -> Snapshot:
        """Everything counted so far, read atomically in one round trip.

        Labels are checked again: a field written under an account no longer configured is
        added to ``other``; a field this module would never write is skipped.
        """
        pipe = self._redis.pipeline(transaction=True)
        for key in (self._outcomes, self._submit, self._waits):
            pipe.hgetall(key)
        outcomes, submit, waits = ({_text(k): int(v) for k, v in raw.items()} for raw in pipe.execute())
        return Snapshot(self._outcomes_of(outcomes), self._histograms_of(submit), self._waits_of(waits))

    def _outcomes_of(self, fields: dict[str, int]) -> dict[tuple[str, str, str], int]:
        counts: dict[tuple[str, str, str], int] = {}
        for field, value in fields.items():
            parts = field.split("|")
            if len(parts) == 3:
                labels = (self.account_label(parts[0]), _status_label(parts[1]), _code_label(parts[2]))
                counts[labels] = counts.get(labels, 0) + value
        return counts

    def _histograms_of(self, fields: dict[str, int]) -> dict[str, Histogram]:
        buckets: dict[str, list[int]] = {}
        sums: dict[str, int] = {}
        for field, value in fields.items():
            name, _, part = field.rpartition("|")
            account = self.account_label(name)
            if part == "sum_us":
                sums[account] = sums.get(account, 0) + value
            elif part in _BOUND:
                buckets.setdefault(account, [0] * len(BUCKETS))[_BOUND[part]] += value
        return {account: Histogram(tuple(accumulate(counts)), sums.get(account, 0) / _MICROS)
                for account, counts in buckets.items()}

    def _waits_of(self, fields: dict[str, int]) -> dict[str, Waits]:
        totals: dict[tuple[str, str], int] = {}
        for field, value in fields.items():
            name, _, part = field.rpartition("|")
            if part in ("count", "sum_us"):
                key = (self.account_label(name), part)
                totals[key] = totals.get(key, 0) + value
        return {account: Waits(count, totals.get((account, "sum_us"), 0) / _MICROS)
                for (account, part), count in totals.items() if part == "count"}


def _status_label(status: str) -> str:
    return status if status in STATUSES else OTHER


def _code_label(code: str) -> str:
    """A code ihuyi documents (``2``, ``4051``…) or ``none``; any other value, ``other``."""
    return code if code in _CODES else OTHER
