"""Every final outcome of a send, reported to Sentry; alerts for the outcomes that need a person."""
from __future__ import annotations

from typing import Any


def report_outcome(result: dict[str, Any]) -> None:
    """Report one final result (the task's JSON result). Never raises."""
