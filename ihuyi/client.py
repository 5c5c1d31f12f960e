"""HTTP client for the ihuyi voice API: Submit (send a voice code) and GetNum (balance).

Every failure surfaces as a TransientError (worth retrying) or a PermanentError (never
retried), classified by ihuyi/codes.py. The APIKEY, the mobile number and the content
never appear in exception messages, log lines or reprs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element, ParseError

import requests
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as parse_xml
from requests.adapters import HTTPAdapter

from ihuyi.codes import SUCCESS, Outcome, classify
from ihuyi.exceptions import PermanentError, TransientError

log = logging.getLogger(__name__)

PASSWORD_MODES = ("dynamic", "apikey")
REPLY_FORMATS = ("xml", "json")
_ROOTS = ("SubmitResult", "GetNumResult")
# Reply field -> key in parse_reply's result. ihuyi's field table calls the Submit id
# "smsid", its examples and replies "voiceid"; "voiceid" wins when both are present.
_REPLY_KEYS = {"voiceid": "voiceid", "smsid": "voiceid", "num": "num"}
_XML_DECLARATION = re.compile(r"^<\?xml[^>]*\?>")
_INTEGER = re.compile(r"-?[0-9]+")


@dataclass(frozen=True)
class SubmitReply:
    """A Submit that ihuyi accepted (code 2); ``voiceid`` identifies the call."""

    code: int
    msg: str
    voiceid: str


def dynamic_password(*parts: str) -> str:
    """ihuyi's dynamic password: lowercase hex md5 of the parts concatenated, no separator.

    Submit uses (account, apikey, mobile, content, time); GetNum (account, apikey, time).
    """
    return hashlib.md5("".join(parts).encode("utf-8")).hexdigest()


def parse_reply(body: bytes, reply_format: str) -> dict[str, str | int]:
    """Read an ihuyi reply into ``{'code': int, 'msg': str}`` plus 'voiceid' or 'num'.

    Tolerates any XML namespace, surrounding whitespace and a mislabelled encoding
    (the text is decoded as UTF-8, else GB18030, whatever the declaration says).
    Raises TransientError on anything it cannot read: ihuyi may answer properly next time.
    """
    try:
        if reply_format == "json":
            fields = _json_fields(json.loads(_decode(body)))
        else:
            fields = _xml_fields(parse_xml(_XML_DECLARATION.sub("", _decode(body).strip()), forbid_dtd=True))
    except (ParseError, DefusedXmlException, ValueError, RecursionError) as exc:
        raise TransientError(f"unparseable ihuyi {reply_format} reply ({type(exc).__name__})") from None
    code = fields.get("code")
    if isinstance(code, str) and _INTEGER.fullmatch(code.strip()):
        code = int(code)
    elif not (isinstance(code, int) and not isinstance(code, bool)):
        raise TransientError(f"unparseable ihuyi {reply_format} reply (code is not an integer)")
    reply: dict[str, str | int] = {"code": code, "msg": "" if fields.get("msg") is None else str(fields["msg"])}
    for name, key in _REPLY_KEYS.items():
        if fields.get(name) is not None:
            reply.setdefault(key, str(fields[name]).strip())
    return reply


def _decode(body: bytes) -> str:
    """The body as text: UTF-8 if it is valid UTF-8, else GB18030 (a superset of GBK)."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return body.decode(encoding)
        except UnicodeDecodeError:
            continue
    return body.decode("utf-8", errors="replace")


def _json_fields(document: object) -> dict[str, object]:
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    return document


def _xml_fields(root: Element) -> dict[str, object]:
    """Text of the root's children keyed by local name, namespaces ignored."""
    if _local_name(root.tag) not in _ROOTS:
        raise ValueError("unexpected root element")
    return {_local_name(child.tag): (child.text or "").strip() for child in root}


def _local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


_session: requests.Session | None = None
_session_pid: int | None = None
_session_lock = threading.Lock()


def shared_session() -> requests.Session:
    """One pooled Session per process, re-created in a forked child.

    The adapter keeps up to 100 connections per host and never retries by itself:
    retrying is the caller's decision (a retried Submit may call someone twice).
    """
    global _session, _session_pid
    with _session_lock:
        if _session is None or _session_pid != os.getpid():
            session = requests.Session()
            adapter = HTTPAdapter(pool_maxsize=100, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            _session, _session_pid = session, os.getpid()
        return _session


class IhuyiClient:
    """Calls one ihuyi account. Thread-safe; share one per account per process."""

    def __init__(
        self,
        api_url: str,
        apiid: str,
        apikey: str,
        *,
        password_mode: str = "dynamic",
        reply_format: str = "xml",
        connect_timeout: float = 3.05,
        read_timeout: float = 10.0,
        max_reply_bytes: int = 64 * 1024,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if password_mode not in PASSWORD_MODES:
            raise ValueError(f"password_mode must be one of {PASSWORD_MODES}, not {password_mode!r}")
        if reply_format not in REPLY_FORMATS:
            raise ValueError(f"reply_format must be one of {REPLY_FORMATS}, not {reply_format!r}")
        self.api_url = api_url
        self.apiid = apiid
        self._apikey = apikey
        self.password_mode = password_mode
        self.reply_format = reply_format
        self.timeout = (connect_timeout, read_timeout)
        self.max_reply_bytes = max_reply_bytes
        self._session = session
        self._clock = clock
        self._host = urlsplit(api_url).hostname or "?"

    def __repr__(self) -> str:
        return (
            f"IhuyiClient(api_url={self.api_url!r}, apiid={self.apiid!r}, "
            f"password_mode={self.password_mode!r})"
        )

    def submit(self, mobile: str, content: str) -> SubmitReply:
        """Ask ihuyi to call ``mobile`` and read ``content`` (the 4-6 digit code) aloud.

        A code-2 reply without an id still counts as sent (voiceid ""): retrying it
        would call the person twice.
        """
        reply = self._call("Submit", {"mobile": mobile, "content": content})
        return SubmitReply(code=SUCCESS, msg=str(reply["msg"]), voiceid=str(reply.get("voiceid", "")))

    def get_num(self) -> int:
        """The account's remaining balance."""
        reply = self._call("GetNum", {})
        num = str(reply.get("num", ""))
        if not num.isascii() or not num.isdigit():
            raise TransientError("unparseable ihuyi GetNum reply (num is not a number)", SUCCESS, str(reply["msg"]))
        return int(num)

    def _call(self, method: str, fields: dict[str, str]) -> dict[str, str | int]:
        """POST one request and return its parsed code-2 reply; raise on anything else.

        ``fields`` are in the order the dynamic password hashes them (mobile, content).
        """
        form = {"account": self.apiid, **fields, "format": self.reply_format}
        if self.password_mode == "dynamic":
            form["time"] = str(int(self._clock()))
            form["password"] = dynamic_password(self.apiid, self._apikey, *fields.values(), form["time"])
        else:
            form["password"] = self._apikey
        started = time.monotonic()
        body = self._post(method, form)
        reply = parse_reply(body, self.reply_format)
        code, msg = int(reply["code"]), _scrub(str(reply["msg"]), *fields.values())
        log.debug("ihuyi %s on %s: code %s in %.3fs", method, self._host, code, time.monotonic() - started)
        if code == SUCCESS:
            return {**reply, "msg": msg}
        info = classify(code)
        message = f"ihuyi {method} refused: code {code} ({info.meaning})"
        if info.outcome is Outcome.TRANSIENT:
            raise TransientError(message, code, msg)
        raise PermanentError(message, code, msg, info.scope)

    def _post(self, method: str, form: dict[str, str]) -> bytes:
        """The reply body of one POST, capped at max_reply_bytes; never follows redirects."""
        failed = f"ihuyi {method} to {self._host} failed"
        try:
            response = (self._session or shared_session()).post(
                self.api_url,
                params={"method": method},
                data=form,
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
            )
            with response:
                if 300 <= response.status_code < 400:
                    raise TransientError(f"{failed}: unexpected redirect (HTTP {response.status_code})")
                if not 200 <= response.status_code < 300:
                    raise TransientError(f"{failed}: HTTP {response.status_code}")
                body = bytearray()
                for chunk in response.iter_content(chunk_size=8192):
                    body += chunk
                    if len(body) > self.max_reply_bytes:
                        raise TransientError(f"{failed}: reply larger than {self.max_reply_bytes} bytes")
                return bytes(body)
        except requests.RequestException as exc:
            # Only the type name: a requests exception carries the request, form body included.
            raise TransientError(f"{failed}: {type(exc).__name__}") from None


def _scrub(text: str, *secrets: str) -> str:
    """``text`` with every non-empty secret masked, in case a gateway echoes the request."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
