"""The ihuyi response codes and what the worker does with each (DESIGN.md §1)."""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(str, enum.Enum):
    SUCCESS = "success"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


class Scope(str, enum.Enum):
    """Who a failure is about: one message, the whole account, or our configuration."""

    MESSAGE = "message"
    ACCOUNT = "account"
    CONFIG = "config"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class CodeInfo:
    """One row of the table: what a code means, whether it is retried, who it is about, and the
    alert (a kind name the worker's alerts know) it calls for, if a person must act."""

    code: int | None
    meaning: str
    outcome: Outcome
    scope: Scope
    alert: str | None = None


SUCCESS = 2
#: ihuyi refused the Submit and placed no call.
SUBMIT_FAILED = 0

CODES: dict[int, CodeInfo] = {
    info.code: info
    for info in (
        CodeInfo(0, "submit failed", Outcome.TRANSIENT, Scope.MESSAGE),
        CodeInfo(2, "submitted", Outcome.SUCCESS, Scope.MESSAGE),
        CodeInfo(400, "IP not allowed", Outcome.PERMANENT, Scope.ACCOUNT, "credentials_refused"),
        CodeInfo(401, "account empty", Outcome.PERMANENT, Scope.CONFIG, "configuration"),
        CodeInfo(402, "password empty", Outcome.PERMANENT, Scope.CONFIG, "configuration"),
        CodeInfo(403, "mobile empty", Outcome.PERMANENT, Scope.MESSAGE),
        CodeInfo(4030, "number blacklisted", Outcome.PERMANENT, Scope.MESSAGE),
        CodeInfo(404, "content empty", Outcome.PERMANENT, Scope.MESSAGE),
        CodeInfo(405, "wrong APIID or APIKEY", Outcome.PERMANENT, Scope.ACCOUNT, "credentials_refused"),
        CodeInfo(4050, "account frozen", Outcome.PERMANENT, Scope.ACCOUNT, "account_frozen"),
        CodeInfo(4051, "balance used up", Outcome.PERMANENT, Scope.ACCOUNT, "low_balance"),
        CodeInfo(4052, "IP differs from the registered one", Outcome.PERMANENT, Scope.ACCOUNT, "credentials_refused"),
        CodeInfo(406, "bad mobile format", Outcome.PERMANENT, Scope.MESSAGE),
        CodeInfo(407, "sensitive content", Outcome.PERMANENT, Scope.MESSAGE),
        CodeInfo(4070, "content must be 4-6 digits", Outcome.PERMANENT, Scope.MESSAGE),
        CodeInfo(408, "account suspected of abuse, auto-frozen", Outcome.PERMANENT, Scope.ACCOUNT, "account_frozen"),
    )
}

#: Account-scoped codes after which the account is paused pool-wide.
ACCOUNT_PAUSING = frozenset(c for c, i in CODES.items() if i.scope is Scope.ACCOUNT)


def classify(code: int) -> CodeInfo:
    """What a reply code means; codes ihuyi never documented are permanent and unknown."""
    return CODES.get(code) or CodeInfo(code, "unknown code", Outcome.PERMANENT, Scope.UNKNOWN, "unknown_code")
