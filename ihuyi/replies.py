"""Reading ihuyi's reply bodies, and keeping the secrets a reply may echo out of its text.

A reply is untrusted input: whatever it holds, reading it either gives a well-formed
result or raises TransientError (ihuyi may answer properly next time), never another
exception.
"""
from __future__ import annotations

import json
import re
from urllib.parse import quote_plus
from xml.etree.ElementTree import Element

from defusedxml.ElementTree import fromstring as parse_xml

from ihuyi.exceptions import TransientError

_ROOTS = ("SubmitResult", "GetNumResult")
# Reply field -> key in parse_reply's result. ihuyi's field table calls the Submit id
# "smsid", its examples and replies "voiceid"; "voiceid" wins when both are present.
_REPLY_KEYS = {"voiceid": "voiceid", "smsid": "voiceid", "num": "num"}
_XML_DECLARATION = re.compile(r"^<\?xml[^>]*\?>")
# ASCII digits only: \d would take any Unicode digit, and int() would read them.
_CODE_TEXT = re.compile(r"[0-9]{1,6}")
_CODE_LIMIT = 10**6
#: Characters kept of a voiceid or num: ihuyi's are short; an absurd one is cut, not kept.
FIELD_CAP = 64
#: Characters kept of a reply's msg, once scrubbed.
MSG_CAP = 200
_MASK = "***"
# A mainland mobile number, +86 or 86 in front or not, that is not part of a longer number.
_MOBILE_LIKE = r"(?<![0-9])(?:\+?86)?1[3-9][0-9]{9}(?![0-9])"
_MOBILE_LIKE_PATTERN = re.compile(_MOBILE_LIKE)


class _Unreadable(ValueError):
    """A reply that parsed but says nothing usable; its text is safe to show."""


def parse_reply(body: bytes, reply_format: str) -> dict[str, str | int]:
    """Read an ihuyi reply into ``{'code': int, 'msg': str}`` plus 'voiceid' or 'num'.

    ``code`` is from 0 to 999999: XML text of ASCII digits, a JSON integer (not a bool) or a
    JSON string of ASCII digits. Tolerates any XML namespace, surrounding whitespace and a
    mislabelled encoding (the text is decoded as UTF-8, else GB18030, whatever the
    declaration says). 'voiceid' and 'num' are cut to FIELD_CAP characters.
    Raises TransientError, with ``sent`` True, on anything else.
    """
    try:
        fields = _fields(body, reply_format)
        reply: dict[str, str | int] = {
            "code": _code(fields.get("code")),
            "msg": "" if fields.get("msg") is None else str(fields["msg"]),
        }
        for name, key in _REPLY_KEYS.items():
            if fields.get(name) is not None:
                reply.setdefault(key, str(fields[name]).strip()[:FIELD_CAP])
        return reply
    except _Unreadable as exc:
        reason = str(exc)
    except Exception as exc:  # whatever the bytes make a parser raise
        reason = type(exc).__name__
    raise TransientError(f"unparseable ihuyi {reply_format} reply ({reason})")


def _fields(body: bytes, reply_format: str) -> dict[str, object]:
    if reply_format == "json":
        document = json.loads(_decode(body))
        if not isinstance(document, dict):
            raise _Unreadable("not a JSON object")
        return document
    return _xml_fields(parse_xml(_XML_DECLARATION.sub("", _decode(body).strip()), forbid_dtd=True))


def _code(value: object) -> int:
    if isinstance(value, str) and _CODE_TEXT.fullmatch(value.strip()):
        return int(value.strip())
    if type(value) is int and 0 <= value < _CODE_LIMIT:
        return value
    raise _Unreadable("code is not an integer from 0 to 999999")


def _decode(body: bytes) -> str:
    """The body as text: UTF-8 if it is valid UTF-8, else GB18030 (a superset of GBK)."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return body.decode(encoding)
        except UnicodeDecodeError:
            continue
    return body.decode("utf-8", errors="replace")


def _xml_fields(root: Element) -> dict[str, object]:
    """Text of the root's children keyed by local name, namespaces ignored."""
    if _local_name(root.tag) not in _ROOTS:
        raise _Unreadable("unexpected root element")
    return {_local_name(child.tag): (child.text or "").strip() for child in root}


def _local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


def scrub(text: str, *secrets: str) -> str:
    """``text`` safe to keep: secrets masked as sent or form-encoded, mobile numbers masked, cut to MSG_CAP.

    A gateway may echo the request (the APIKEY or password, the mobile, the code) into msg.
    """
    variants = {variant for secret in secrets if secret for variant in (secret, quote_plus(secret))}
    present = [v for v in variants if v in text]
    if not present:  # the usual case, without compiling a pattern of this call's secrets
        return _MOBILE_LIKE_PATTERN.sub(_MASK, text)[:MSG_CAP]
    # One pass: each secret or number is masked from where it starts, before anything inside
    # it could be; the longest first where two start at the same place.
    alternatives = [re.escape(v) for v in sorted(present, key=len, reverse=True)] + [_MOBILE_LIKE]
    return re.sub("|".join(alternatives), _MASK, text)[:MSG_CAP]
