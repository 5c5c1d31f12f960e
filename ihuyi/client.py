"""HTTP client for the ihuyi voice API: Submit (send a voice code) and GetNum (balance).

Every failure surfaces as a TransientError (worth retrying) or a PermanentError (never
retried), classified by ihuyi/codes.py. Each call ends by a total deadline however slowly
ihuyi answers (ihuyi/transport.py). The APIKEY, the password sent, the mobile number and
the content never appear in exception messages, log lines or reprs.
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from dataclasses import dataclass
from http.client import HTTPException
from typing import Callable
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError, ProtocolError, ProxyError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ReadTimeoutError, SSLError

from ihuyi.codes import SUBMIT_FAILED, SUCCESS, Outcome, classify
from ihuyi.exceptions import PermanentError, TransientError
from ihuyi.replies import parse_reply, scrub
from ihuyi.transport import Session, shared_session, within

log = logging.getLogger(__name__)

PASSWORD_MODES = ("dynamic", "apikey")
REPLY_FORMATS = ("xml", "json")
_BALANCE = re.compile(r"[0-9]{1,12}")
# What a request can raise (requests' exceptions, urllib3's while the body is read), a
# connection cut by the watchdog included (a shut TLS socket may raise ValueError or a bare
# OSError past urllib3).
_HTTP_FAILURES = (requests.RequestException, OSError, ValueError, HTTPException, Urllib3Error)


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


class IhuyiClient:
    """Calls one ihuyi account. Thread-safe; share one per account per process.

    ``total_timeout`` bounds a whole call: connect, send, status line, headers and body
    (default ``connect_timeout + read_timeout``). ``session`` must come from
    ``ihuyi.transport.new_session`` (the default is the process's shared one): only its
    connections can be cut at the deadline.
    """

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
        total_timeout: float | None = None,
        max_reply_bytes: int = 64 * 1024,
        session: Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if password_mode not in PASSWORD_MODES:
            raise ValueError(f"password_mode must be one of {PASSWORD_MODES}, not {password_mode!r}")
        if reply_format not in REPLY_FORMATS:
            raise ValueError(f"reply_format must be one of {REPLY_FORMATS}, not {reply_format!r}")
        total_timeout = connect_timeout + read_timeout if total_timeout is None else total_timeout
        if not 0 < total_timeout < math.inf:
            raise ValueError(f"total_timeout must be a positive number of seconds, not {total_timeout!r}")
        if session is not None and not isinstance(session, Session):
            raise ValueError("session must be an ihuyi.transport.Session: use ihuyi.transport.new_session()")
        self.api_url = api_url
        self.apiid = apiid
        self._apikey = apikey
        self.password_mode = password_mode
        self.reply_format = reply_format
        self.timeout = (connect_timeout, read_timeout)
        self.total_timeout = total_timeout
        self.max_reply_bytes = max_reply_bytes
        self._session = session
        self._clock = clock
        self._host = urlsplit(api_url).hostname or "?"
        self._urls = {method: _with_method(api_url, method) for method in ("Submit", "GetNum")}

    def __repr__(self) -> str:
        return (
            f"IhuyiClient(api_url={self.api_url!r}, apiid={self.apiid!r}, "
            f"password_mode={self.password_mode!r})"
        )

    def submit(self, mobile: str, content: str, *, timeout: float | None = None) -> SubmitReply:
        """Ask ihuyi to call ``mobile`` and read ``content`` (the 4-6 digit code) aloud.

        ``timeout`` (seconds, e.g. the time left before the code expires) shortens the total
        deadline of this call; it never lengthens it. A code-2 reply without an id still
        counts as sent (voiceid ""): retrying it would call the person twice.
        """
        reply = self._call("Submit", {"mobile": mobile, "content": content}, timeout)
        return SubmitReply(code=SUCCESS, msg=str(reply["msg"]), voiceid=str(reply.get("voiceid", "")))

    def get_num(self) -> int:
        """The account's remaining balance."""
        reply = self._call("GetNum", {}, None)
        num = str(reply.get("num", ""))
        if not _BALANCE.fullmatch(num):
            raise TransientError("unparseable ihuyi GetNum reply (num is not a number)", SUCCESS, str(reply["msg"]))
        return int(num)

    def _call(self, method: str, fields: dict[str, str], timeout: float | None) -> dict[str, str | int]:
        """POST one request and return its parsed code-2 reply; raise on anything else.

        ``fields`` are in the order the dynamic password hashes them (mobile, content).
        """
        budget = self.total_timeout if timeout is None else min(self.total_timeout, timeout)
        started = time.monotonic()
        form = {"account": self.apiid, **fields, "format": self.reply_format}
        if self.password_mode == "dynamic":
            form["time"] = str(int(self._clock()))
            form["password"] = dynamic_password(self.apiid, self._apikey, *fields.values(), form["time"])
        else:
            form["password"] = self._apikey
        body, date = self._post(method, form, started + budget, budget)
        received_at = time.time()
        reply = parse_reply(body, self.reply_format)
        code = int(reply["code"])
        msg = scrub(str(reply["msg"]), self._apikey, form["password"], *fields.values())
        log.debug("ihuyi %s on %s: code %s in %.3fs", method, self._host, code, time.monotonic() - started)
        if code == SUCCESS:
            return {**reply, "msg": msg}
        info = classify(code)
        message = f"ihuyi {method} refused: code {code} ({info.meaning})"
        if info.outcome is Outcome.TRANSIENT:
            raise TransientError(message, code, msg, sent=code != SUBMIT_FAILED)
        raise PermanentError(message, code, msg, info.scope, date=date, received_at=received_at)

    def _post(self, method: str, form: dict[str, str], deadline: float, budget: float) -> tuple[bytes, str | None]:
        """The reply body and Date header of one POST that ends by ``deadline`` (monotonic), else TransientError."""
        failed = f"ihuyi {method} to {self._host} failed"
        left = deadline - time.monotonic()
        if left <= 0:
            raise TransientError(f"{failed}: no time left before the deadline", sent=False)
        error: Exception | None = None
        with within(deadline) as call:
            try:
                reply = self._exchange(method, form, left, failed)
            except (TransientError, *_HTTP_FAILURES) as exc:
                error = exc
        # Cut by the watchdog, or a connect timed out by its deadline-bound timeout.
        if call.cut or isinstance(error, _HTTP_FAILURES) and time.monotonic() >= deadline:
            raise TransientError(f"{failed}: no complete reply by the {budget:g} s deadline", sent=_sent(error))
        if isinstance(error, TransientError):
            raise error
        if error is not None:
            # Only what kind of failure: an exception may carry the request, form body included.
            raise TransientError(f"{failed}: {_failure_name(error)}", sent=_sent(error))
        return reply

    def _exchange(self, method: str, form: dict[str, str], left: float, failed: str) -> tuple[bytes, str | None]:
        """The reply body, capped at max_reply_bytes, and its Date header; never follows redirects."""
        connect_timeout, read_timeout = self.timeout
        response = (self._session or shared_session()).post(
            self._urls[method], form,
            # Connecting cannot be cut by the watchdog: its own timeout ends it by the deadline.
            connect_timeout=min(connect_timeout, left), read_timeout=read_timeout,
        )
        try:
            if 300 <= response.status < 400:
                raise TransientError(f"{failed}: unexpected redirect (HTTP {response.status})")
            if not 200 <= response.status < 300:
                raise TransientError(f"{failed}: HTTP {response.status}")
            body = bytearray()
            for chunk in response.stream(8192, decode_content=True):
                body += chunk
                if len(body) > self.max_reply_bytes:
                    raise TransientError(f"{failed}: reply larger than {self.max_reply_bytes} bytes")
            return bytes(body), response.headers.get("Date")
        finally:
            if not response.isclosed():  # not read to its end: the connection is not reused
                response.close()
            response.release_conn()


def _with_method(url: str, method: str) -> str:
    """``url`` with ``method=<method>`` added to its query."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode({"method": method})) if q)
    return urlunsplit(parts._replace(query=query))


def _sent(error: Exception | None) -> bool:
    """False only when ``error`` is a failure to connect: no byte of the request went out.

    requests raises ConnectTimeout for a connect that timed out, and ConnectionError around
    urllib3's NewConnectionError (refused, unreachable, DNS), a kind of ConnectTimeoutError."""
    if isinstance(error, requests.ConnectTimeout):
        return False
    if isinstance(error, requests.ConnectionError) and not isinstance(error, requests.exceptions.ProxyError):
        reason = error.args[0] if error.args else None
        error = reason.reason if isinstance(reason, MaxRetryError) else reason
    return not isinstance(error, ConnectTimeoutError)


def _failure_name(error: Exception) -> str:
    """What kind of failure ``error`` is, in requests' words (the names operators know)."""
    if isinstance(error, requests.RequestException):
        return type(error).__name__
    # urllib3's, raised while the body is read.
    if isinstance(error, NewConnectionError):
        return "ConnectionError"
    if isinstance(error, ConnectTimeoutError):
        return "ConnectTimeout"
    if isinstance(error, ReadTimeoutError):
        return "ReadTimeout"
    if isinstance(error, (ProxyError, SSLError)):
        return type(error).__name__
    if isinstance(error, ProtocolError):
        return "ConnectionError"
    return type(error).__name__
