"""Every error the service raises to its callers, as one small hierarchy.

    ValueError
    ├── InvalidPayload      a send_voice_code request is not acceptable (``field`` names the argument)
    │   └── Throttled       the number was called too often (``retry_after`` seconds)
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
    """This number was called too often; ``retry_after`` says in how many seconds it may be again."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("mobile", f"too many calls to this number; retry after {retry_after:.0f} s")
        self.retry_after = retry_after


class InvalidEnvelope(ValueError):
    """A message is not one the worker can act on; the text says which part, not what it held."""


class NotReplayable(LookupError):
    """A dead letter that cannot be replayed: unknown id, invalid payload, or its code expired."""
