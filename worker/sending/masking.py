"""How a mobile number and a verification code are shown anywhere outside the Submit call."""
from __future__ import annotations

import re
from typing import Any

CODE_MASK = "****"
#: A run of digits long enough to hold most of a mobile number.
_DIGIT_RUN = re.compile(r"[0-9]{7,}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def mask_mobile(mobile: object) -> str:
    """``13800138000`` -> ``138****8000``; anything too short to mask safely -> ``****``."""
    text = str(mobile)
    if len(text) < 11:
        return CODE_MASK
    return f"{text[:3]}****{text[-4:]}"


def mask_digit_runs(text: str) -> str:
    """``text`` with every run of 7 or more digits masked as :func:`mask_mobile` masks a number:
    ``login:13900139000`` -> ``login:139****9000``. For identifiers a caller chose (request
    ids, task ids), which may hold a number. A UUID (Celery's own task ids) is shown whole, to
    find the task by."""
    if _UUID.fullmatch(text):
        return text
    return _DIGIT_RUN.sub(lambda run: mask_mobile(run[0]), text)


def masked_call(args: Any, kwargs: Any) -> tuple[str, str]:
    """``argsrepr`` and ``kwargsrepr`` for a ``send_voice_code`` call, as Flower will show them.

    Works on whatever a foreign producer sent: mobile (first) and code (second) are masked,
    every other argument is shown only by its type, except the harmless account and ttl, and
    a keyword this task does not take only by its position (its name could be anything).
    """
    args = list(args) if isinstance(args, (list, tuple)) else []
    kwargs = dict(kwargs) if isinstance(kwargs, dict) else {}
    shown_args = [_mask_field(name, value) for name, value in zip(_FIELDS, args)]
    shown_args += ["…"] * (len(args) - len(_FIELDS))
    shown_kwargs = {name if name in _KEYWORDS else f"<keyword {i}>": _mask_field(str(name), value)
                    for i, (name, value) in enumerate(kwargs.items(), 1)}
    return repr(tuple(shown_args)), repr(shown_kwargs)


_FIELDS = ("mobile", "code", "account", "request_id", "ttl")
#: ``requester`` is keyword-only: who asks, shown only by its type.
_KEYWORDS = (*_FIELDS, "requester")


def _mask_field(name: str, value: Any) -> str:
    if name == "mobile":
        return mask_mobile(value)
    if name in ("account", "ttl") and isinstance(value, (str, int)) and len(str(value)) <= 64:
        return str(value)
    if name == "request_id" and isinstance(value, str) and len(value) <= 128:
        return mask_digit_runs(value)
    return CODE_MASK if name == "code" else f"<{type(value).__name__}>"
