"""Errors the service raises to its callers."""
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
