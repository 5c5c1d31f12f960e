"""The ihuyi response codes and what the worker does with each (ihuyi's published code tables and its help pages for 4080-4086), in one table.

Each row says what a code means, whether the request is retried (``outcome``), who the
failure is about (``scope``), when the number may be called again (``retry_after``, for the
codes about one called number) and the alert it calls for (``alert``, a kind the worker's
alerts know), if a person must act.

Codes 4080-4086 are not in the seed: their meanings are from ihuyi's help pages and public
clients. The number is blocked for the window the code names: a minute, or a day; 4080's
one second is blocked for a minute (our own throttle works in minutes), and 4086 ("too
often", no window given) for an hour.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

MINUTE, HOUR, DAY = 60, 3600, 86400


class Outcome(str, enum.Enum):
    """SUCCESS: sent. TRANSIENT: retried with backoff. PERMANENT: never retried."""

    SUCCESS = "success"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


class Scope(str, enum.Enum):
    """Who a failure is about.

    MESSAGE: this one request. NUMBER: the called number (called too often; blocked for
    ``retry_after``). HOST: the sending host (its IP): the account is paused on that host
    only. ACCOUNT: the whole account, paused pool-wide (405 with the dynamic password may be
    the host's clock instead: the worker checks). CONFIG: our configuration. UNKNOWN: a code
    ihuyi never documented.
    """

    MESSAGE = "message"
    NUMBER = "number"
    HOST = "host"
    ACCOUNT = "account"
    CONFIG = "config"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class CodeInfo:
    """One row of the table."""

    code: int | None
    meaning: str
    outcome: Outcome
    scope: Scope
    alert: str | None = None
    #: Seconds before the number may be called again (NUMBER scope only).
    retry_after: int | None = None


SUCCESS = 2
#: ihuyi refused the Submit and placed no call.
SUBMIT_FAILED = 0
#: Wrong APIID or APIKEY, or, with the dynamic password, a ``time`` too far from ihuyi's clock.
WRONG_CREDENTIALS = 405

#: ihuyi's limits per called number: what each code says, and how long the number is blocked.
_NUMBER_LIMITS = {
    4080: ("number sent to more than twice in one second", MINUTE),
    4081: ("number sent to more than once in one minute", MINUTE),
    4082: ("number sent to more than five times in one day", DAY),
    4083: ("same content sent more than once in one minute", MINUTE),
    4084: ("same content sent more than five times in one day", DAY),
    4085: ("more than five verification codes to the number today", DAY),
    4086: ("number sent to too often", HOUR),
}

CODES: dict[int, CodeInfo] = {
    info.code: info
    for info in (
        CodeInfo(0, "submit failed", Outcome.TRANSIENT, Scope.MESSAGE),
        CodeInfo(2, "submitted", Outcome.SUCCESS, Scope.MESSAGE),
        CodeInfo(400, "IP not allowed", Outcome.PERMANENT, Scope.HOST, "ip_refused"),
        CodeInfo(401, "account empty", Outcome.PERMANENT, Scope.CONFIG, "configuration"),
        CodeInfo(402, "password empty", Outcome.PERMANENT, Scope.CONFIG, "configuration"),
        CodeInfo(403, "mobile empty", Outcome.PERMANENT, Scope.MESSAGE),
        CodeInfo(4030, "number blacklisted", Outcome.PERMANENT, Scope.MESSAGE),
        CodeInfo(404, "content empty", Outcome.PERMANENT, Scope.MESSAGE),
        CodeInfo(405, "wrong APIID or APIKEY", Outcome.PERMANENT, Scope.ACCOUNT, "credentials_refused"),
        CodeInfo(4050, "account frozen", Outcome.PERMANENT, Scope.ACCOUNT, "account_frozen"),
        CodeInfo(4051, "balance used up", Outcome.PERMANENT, Scope.ACCOUNT, "low_balance"),
        CodeInfo(4052, "IP differs from the registered one", Outcome.PERMANENT, Scope.HOST, "ip_refused"),
        CodeInfo(406, "bad mobile format", Outcome.PERMANENT, Scope.MESSAGE),
        CodeInfo(407, "sensitive content", Outcome.PERMANENT, Scope.MESSAGE),
        CodeInfo(4070, "content must be 4-6 digits", Outcome.PERMANENT, Scope.MESSAGE),
        CodeInfo(408, "account suspected of abuse, auto-frozen", Outcome.PERMANENT, Scope.ACCOUNT, "account_frozen"),
        *(CodeInfo(code, meaning, Outcome.PERMANENT, Scope.NUMBER, retry_after=window)
          for code, (meaning, window) in _NUMBER_LIMITS.items()),
    )
}


def classify(code: int) -> CodeInfo:
    """What a reply code means; codes ihuyi never documented are permanent and unknown."""
    return CODES.get(code) or CodeInfo(code, "unknown code", Outcome.PERMANENT, Scope.UNKNOWN, "unknown_code")
