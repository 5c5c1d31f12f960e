"""Every error the service raises to its callers, as one small hierarchy.

    ValueError
    ├── InvalidPayload      a send_voice_code request is not acceptable (``field`` names the argument)
    │   ├── Throttled       the number, the requester or the number's range asked too often (``retry_after`` seconds)
    │   ├── OverBudget      the account reached its daily call budget
    │   └── RequestIdConflict  a request id used before for another number, code or account
    └── InvalidEnvelope     a message on a queue is not one the worker can act on
    LookupError
    └── NotReplayable       a dead letter that cannot be sent again

ihuyi's own failures are ``ihuyi.IhuyiError`` (transient or permanent), configuration
errors ``config.ConfigError``. Messages never hold a mobile number, a code or a secret.
"""
from __future__ import annotations


class InvalidPayload(ValueError):
    """A ``send_voice_code`` request is not acceptable. ``field`` names the bad argument."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class Throttled(InvalidPayload):
    """Too many calls: to this number (``limit`` ``number``), asked by this requester
    (``requester``), or to numbers of this number's range (``range``, a range under attack);
    ``retry_after`` says in how many seconds it may be again."""

    _PROBLEMS = {"number": ("mobile", "too many calls to this number"),
                 "requester": ("requester", "too many calls asked for by this requester"),
                 "range": ("mobile", "too many numbers of this range called recently")}

    def __init__(self, retry_after: float, limit: str = "number") -> None:
        field, problem = self._PROBLEMS[limit]
        super().__init__(field, f"{problem}; retry after {retry_after:.0f} s")
        self.retry_after = retry_after
        self.limit = limit


class OverBudget(InvalidPayload):
    """The account has taken its daily call budget (``daily_budget``): nothing more today (UTC)."""

    def __init__(self, account: str, budget: int) -> None:
        super().__init__("account", f"account {account!r} has reached its daily budget of {budget} calls; "
                                    "new requests are refused until midnight UTC")
        self.budget = budget


class RequestIdConflict(InvalidPayload):
    """The request id was used before for another request (another number, code or account):
    nothing is sent. ``shown_id`` is the request id as it may be shown (its digit runs masked)."""

    def __init__(self, shown_id: str) -> None:
        super().__init__("request_id", f"{shown_id!r} was used before for another number, code or account; "
                                       "use a new request id for a new request")


class InvalidEnvelope(ValueError):
    """A message is not one the worker can act on; the text says which part, not what it held."""


class NotReplayable(LookupError):
    """A dead letter that cannot be replayed: unknown id, invalid payload, or its code expired."""
