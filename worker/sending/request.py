"""What a valid ``send_voice_code`` request is; shared by the producer API and the worker."""
from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from config.settings import MAX_TTL
from worker.errors import InvalidPayload
from worker.sending.masking import mask_digit_runs, mask_mobile

# ASCII digits only: Python's \d also matches Arabic-Indic and full-width digits.
_MOBILE = re.compile(r"1[3-9][0-9]{9}")
_CODE = re.compile(r"[0-9]{4,6}")
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
# What a person may type around a number: ASCII white space and dashes.
_MOBILE_SEPARATORS = re.compile(r"[\s-]", re.ASCII)
# What a web form may send around a code: ASCII white space (not U+00A0, U+3000 or the like).
_ASCII_SPACE = " \t\n\r\v\f"
#: The longest mobile input looked at; a longer one is refused, never cut.
MAX_MOBILE_INPUT = 64
#: The longest requester key a web app may give.
MAX_REQUESTER = 256


@dataclass(frozen=True)
class VoiceCodeRequest:
    mobile: str
    code: str = ""
    account: str = "default"
    request_id: str = ""
    ttl: int = 300

    def __repr__(self) -> str:  # never shows the code or the full number
        return f"VoiceCodeRequest(mobile={mask_mobile(self.mobile)!r}, account={self.account!r}, request_id={mask_digit_runs(self.request_id)!r}, ttl={self.ttl})"

    __str__ = __repr__


def normalise_mobile(mobile: object) -> str:
    """A mainland China mobile number as 11 digits; ``+86``/``86`` prefixes, spaces and dashes are dropped."""
    if not isinstance(mobile, str):
        raise InvalidPayload("mobile", f"must be a string, got {type(mobile).__name__}")
    if len(mobile) > MAX_MOBILE_INPUT:
        raise InvalidPayload("mobile", f"must be at most {MAX_MOBILE_INPUT} characters")
    digits = _MOBILE_SEPARATORS.sub("", mobile)
    if digits.startswith("+86"):
        digits = digits[3:]
    elif digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    if not _MOBILE.fullmatch(digits):
        raise InvalidPayload("mobile", "must be a mainland China mobile number: 11 digits starting 13-19")
    return digits


def normalise_code(code: object) -> object:
    """A code without the ASCII white space a form may add around it; anything but a string is left for the check to refuse."""
    return code.strip(_ASCII_SPACE) if isinstance(code, str) else code


def validate_requester(requester: object) -> str | None:
    """Who asks for a request, as the web app names them (a client address, a user id, a session),
    or None; ``InvalidPayload`` for anything but 1 to 256 printable characters."""
    if requester is None:
        return None
    if not isinstance(requester, str) or not 1 <= len(requester) <= MAX_REQUESTER or not requester.isprintable():
        raise InvalidPayload("requester", f"must be a string of 1 to {MAX_REQUESTER} printable characters")
    return requester


def validate(
    mobile: object,
    code: object,
    account: object,
    request_id: object,
    ttl: object,
    *,
    accounts: Collection[str],
    default_ttl: int,
) -> VoiceCodeRequest:
    """Check and normalise every argument; raise :class:`InvalidPayload` naming the first bad one.

    ``request_id`` may be None: the caller (the task) fills in its task id.
    """
    number = normalise_mobile(mobile)
    code = normalise_code(code)
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        raise InvalidPayload("code", "must be a string of 4 to 6 ASCII digits")
    account = "default" if account is None else account
    if not isinstance(account, str) or account not in accounts:
        shown = account[:32] if isinstance(account, str) else type(account).__name__
        raise InvalidPayload("account", f"unknown account {shown!r}")
    if request_id is not None and (not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id)):
        raise InvalidPayload("request_id", "must be 1 to 128 printable ASCII characters")
    ttl = default_ttl if ttl is None else ttl
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL:
        raise InvalidPayload("ttl", f"must be a whole number of seconds from 1 to {MAX_TTL}")
    return VoiceCodeRequest(number, code, account, request_id or "", ttl)
