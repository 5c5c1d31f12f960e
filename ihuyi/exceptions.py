"""Every way an ihuyi call can fail, as a small hierarchy.

    IhuyiError
    ├── TransientError      worth retrying: network, timeout, HTTP 5xx, unparseable reply, code 0
    └── PermanentError      never retried: every other documented (or undocumented) code

Messages never contain the APIKEY, the mobile number or the verification code.
"""
from __future__ import annotations

from ihuyi.codes import Scope


class IhuyiError(Exception):
    """Base class. ``code`` is ihuyi's reply code, or None when no reply was parsed."""

    def __init__(self, message: str, code: int | None = None, msg: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.msg = msg


class TransientError(IhuyiError):
    """The call may succeed if tried again later."""


class PermanentError(IhuyiError):
    """ihuyi refused the call; trying again will not help. ``scope`` says who it is about."""

    def __init__(self, message: str, code: int, msg: str, scope: Scope) -> None:
        super().__init__(message, code, msg)
        self.scope = scope
