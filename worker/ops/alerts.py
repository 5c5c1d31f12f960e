"""Alerts: the things that need a person, each a Sentry issue of its own per kind and account.

An alert is a Sentry message event fingerprinted ``["voicecode", kind, account]`` and tagged
``kind``, ``account`` and ``ihuyi_code``, so every account's low balance (say) is one issue
that reopens and counts, apart from every other. It is raised at most once per
``ALERT_DEDUP_SECONDS`` per kind and account for the whole pool: the first worker to ``SET
key NX EX`` in the shared state raises it, every other one in the window stays quiet, so a
backlog of 10,000 failures raises one alert, not 10,000. An alert is also logged (WARNING),
so it is seen where Sentry is not configured.

An alert about one host (its IP refused, its clock skewed) names it, and is one issue per
kind, account and host (fingerprint ``["voicecode", kind, account, host]``, tag ``host``).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import redis
import sentry_sdk

from ihuyi.codes import WRONG_CREDENTIALS, classify
from worker.sending.flow import Refusal
from worker.stores.accounts import Pause
from worker.stores.guards import Guards, Trip, shown_range

log = logging.getLogger(__name__)

Level = Literal["warning", "error"]


@dataclass(frozen=True)
class Kind:
    name: str
    level: Level
    advice: str


LOW_BALANCE = Kind("low_balance", "error", "the balance is used up: top the account up")
BALANCE_BELOW_THRESHOLD = Kind("balance_below_threshold", "warning", "the balance is running low: top the account up")
ACCOUNT_FROZEN = Kind("account_frozen", "error", "ihuyi froze the account: ask ihuyi support to unfreeze it")
CREDENTIALS_REFUSED = Kind("credentials_refused", "error",
                           "ihuyi refused the APIID/APIKEY: check the account's APIID and APIKEY")
CONFIGURATION = Kind("configuration", "error", "the APIID or APIKEY sent was empty: check IHUYI_ACCOUNTS / IHUYI_APIID")
UNKNOWN_CODE = Kind("unknown_code", "error", "ihuyi answered a code it never documented: ask ihuyi what it means")
IP_REFUSED = Kind("ip_refused", "error", "register this host's IP with ihuyi, or send from hosts whose IP is registered")
CLOCK_SKEW = Kind("clock_skew", "error", "set the host's clock right (NTP)")
BUDGET_REACHED = Kind("budget_reached", "warning",
                      "if this is real traffic, raise the account's daily_budget in IHUYI_ACCOUNTS; if not, "
                      "look for one requester or one range behind it (voicecode accounts, the metrics)")
RANGE_UNDER_ATTACK = Kind("range_under_attack", "error",
                          "calls to many numbers of one range in a short time are the mark of toll fraud "
                          "(pumping): find the requesters behind it in the web app's logs and block them")

KINDS: Mapping[str, Kind] = {kind.name: kind for kind in (
    LOW_BALANCE, BALANCE_BELOW_THRESHOLD, ACCOUNT_FROZEN, CREDENTIALS_REFUSED, CONFIGURATION, UNKNOWN_CODE,
    IP_REFUSED, CLOCK_SKEW, BUDGET_REACHED, RANGE_UNDER_ATTACK)}


@dataclass(frozen=True)
class Alert:
    """One alert to raise: what, about which account (and host), with which ihuyi code."""

    kind: Kind
    account: str
    message: str
    code: int | None = None
    host: str | None = None


def kind_for_code(code: int | None) -> Kind | None:
    """The alert an ihuyi reply code calls for (its ``alert`` in ihuyi/codes.py's table), or None."""
    if code is None:
        return None
    alert = classify(code).alert
    return None if alert is None else KINDS[alert]


def trip_alert(trip: Trip) -> Alert:
    """The alert for a limit the door tripped (worker/stores/guards.py): an account's daily budget
    reached, or a range of numbers called too widely (named as ``1380013****``, never a number)."""
    if trip.kind == "budget":
        return Alert(BUDGET_REACHED, trip.name, f"account {trip.name} reached its daily budget of {trip.value} calls: "
                                                f"new requests are refused until midnight UTC; {BUDGET_REACHED.advice}")
    shown = shown_range(trip.name)
    refused = (f"its new requests are refused for {trip.value} s" if trip.value
               else "its requests are still accepted (RANGE_GUARD_BLOCK is 0)")
    return Alert(RANGE_UNDER_ATTACK, shown, f"range {shown}: more distinct numbers called than RANGE_GUARD allows; "
                                            f"{refused}; {RANGE_UNDER_ATTACK.advice}")


def host_pause_alert(account: str, pause: Pause) -> Alert:
    """The alert for ``account`` paused on one host (``pause.host``): its clock skewed (a 405,
    whose ``msg`` then says by how much) or its IP refused (400, 4052)."""
    host = pause.host or "?"
    after = (f"host {host} no longer sends through account {account} (its other hosts go on) "
             "until a probe from it succeeds")
    if pause.code == WRONG_CREDENTIALS:
        return Alert(CLOCK_SKEW, account, f"{pause.msg}: ihuyi refused the dynamic password (code 405); "
                                          f"{after}; {CLOCK_SKEW.advice}", pause.code, host)
    return Alert(IP_REFUSED, account, f"ihuyi account {account}: code {pause.code} on host {host}: ihuyi refuses "
                                      f"this host's IP; {after}; {IP_REFUSED.advice}", pause.code, host)


class Alerts:
    """Raises alerts, deduplicated pool-wide through ``client`` for ``window`` seconds."""

    def __init__(self, client: redis.Redis, window: int, prefix: str = "voicecode:alert:") -> None:
        self._redis = client
        self.window = window
        self.prefix = prefix
        self._local_lock = threading.Lock()
        self._local_at: dict[str, float] = {}

    def raise_from_this_process(self, every: float, kind: str, account: str, *, level: Level, message: str) -> bool:
        """Raise an alert about the shared state itself, at most once per ``every`` seconds per process.

        The pool-wide dedup lives in the Redis the alert is about, so this process keeps its own.
        """
        with self._local_lock:
            if time.monotonic() - self._local_at.get(kind, float("-inf")) < every:
                return False
            self._local_at[kind] = time.monotonic()
        return self.raise_alert(kind, account, level=level, message=message)

    def raise_alert(self, kind: str, account: str, *, level: Level, message: str, code: int | None = None,
                    details: Mapping[str, object] | None = None, host: str | None = None) -> bool:
        """Raise one alert unless the pool already raised it inside the window; True when this call raised it.

        With ``host``, the alert is about that host: deduplicated, fingerprinted and tagged per host.
        """
        about = [kind, account] + ([host] if host else [])
        try:
            first = self._redis.set(self.prefix + ":".join(about), 1, nx=True, ex=self.window)
        except redis.RedisError as exc:  # rather a duplicate alert than a missed one
            log.warning("alert dedup unavailable (%s): raising %s for %s anyway", type(exc).__name__, kind, account)
            first = True
        if not first:
            return False
        with sentry_sdk.new_scope() as scope:
            scope.fingerprint = ["voicecode", *about]
            scope.set_tags({"kind": kind, "account": account, "ihuyi_code": "none" if code is None else str(code),
                            **({"host": host} if host else {})})
            scope.set_context("alert", {"kind": kind, "account": account, "ihuyi_code": code, "host": host,
                                        "dedup_seconds": self.window, **(details or {})})
            sentry_sdk.capture_message(message, level=level)
        log.warning("ALERT %s [%s] account %s%s: %s", kind, level, account, f" host {host}" if host else "", message)
        return True

    def raise_(self, alert: Alert) -> bool:
        """Raise ``alert`` (deduplicated as :meth:`raise_alert`)."""
        return self.raise_alert(alert.kind.name, alert.account, level=alert.kind.level, message=alert.message,
                                code=alert.code, host=alert.host)

    def for_trips(self, guards: Guards) -> int:
        """Raise an alert for each limit the door tripped since the last call (pool-wide: each trip
        is taken once); how many were raised."""
        return sum(self.raise_(trip_alert(trip)) for trip in guards.take_trips())

    def for_refusal(self, refusal: Refusal) -> bool:
        """Raise the alert a send the flow saw refused calls for: about the host its pause names, else the code's."""
        pause = refusal.pause
        if pause is not None and pause.host is not None:
            return self.raise_(host_pause_alert(refusal.account, pause))
        return self.for_code(refusal.code, refusal.account, refusal.where)

    def for_code(self, code: int | None, account: str, context: str, host: str | None = None) -> bool:
        """Raise the alert ``code`` calls for (if any) on ``account``; ``context`` says where it was seen.

        ``host`` names where, for the codes about the sending host (its IP: 400, 4052).
        """
        kind = kind_for_code(code)
        if kind is None:
            return False
        host = host if kind is IP_REFUSED else None
        where = f" on host {host}" if host else ""
        return self.raise_alert(kind.name, account, level=kind.level, code=code, host=host,
                                message=f"ihuyi account {account}: code {code} {context}{where}; {kind.advice}")
