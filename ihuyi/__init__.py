"""Client for the ihuyi (互亿无线) voice-code API and a local simulator of it.

Nothing in this package imports Celery: it is usable and testable on its own.
"""
from ihuyi.client import IhuyiClient, SubmitReply
from ihuyi.codes import Outcome, Scope, classify
from ihuyi.exceptions import IhuyiError, PermanentError, TransientError

__all__ = [
    "IhuyiClient",
    "SubmitReply",
    "Outcome",
    "Scope",
    "classify",
    "IhuyiError",
    "PermanentError",
    "TransientError",
]
