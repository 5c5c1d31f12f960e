"""Every way an ihuyi call can fail, as a small hierarchy.

    IhuyiError
    ├── TransientError      worth retrying: network, timeout, deadline, HTTP 5xx, unparseable
    │                       reply, code 0; ``sent`` says whether ihuyi may have acted on it
    └── PermanentError      never retried: every other documented (or undocumented) code

Messages never contain the APIKEY, the mobile number or the verification code.
"""
from __future__ import annotations

from email.utils import parsedate_to_datetime

from ihuyi.codes import Scope


class IhuyiError(Exception):
    """Base class. ``code`` is ihuyi's reply code, or None when no reply was parsed."""

    def __init__(self, message: str, code: int | None = None, msg: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.msg = msg


class TransientError(IhuyiError):
    """The call may succeed if tried again later.

    ``sent`` is False only when ihuyi certainly placed no call: no connection was made
    (refused, DNS failure, connect timeout) or it answered code 0 (submit failed). After
    anything else (a timeout or reset once the request went out, HTTP 5xx, an unreadable
    reply, the deadline cutting a reply short) a call may have been placed: True.
    """

    def __init__(self, message: str, code: int | None = None, msg: str = "", *, sent: bool = True) -> None:
        super().__init__(message, code, msg)
        self.sent = sent


class PermanentError(IhuyiError):
    """ihuyi refused the call; trying again will not help. ``scope`` says who it is about.

    ``date`` is the reply's HTTP ``Date`` header (None without one): ihuyi's clock when it
    refused, which tells a skewed clock from a wrong APIKEY after a 405; ``received_at`` this
    host's clock (Unix seconds) when the reply was read, to compare it with.
    """

    def __init__(self, message: str, code: int, msg: str, scope: Scope, *, date: str | None = None,
                 received_at: float | None = None) -> None:
        super().__init__(message, code, msg)
        self.scope = scope
        self.date = date
        self.received_at = received_at

    @property
    def server_time(self) -> float | None:
        """``date`` in Unix seconds; None when there was none or it is not an HTTP date."""
        try:
            return parsedate_to_datetime(self.date or "").timestamp()
        except (TypeError, ValueError, OverflowError):
            return None
