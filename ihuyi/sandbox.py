"""A local simulator of the ihuyi voice API, for the demo, the tests and the benchmarks.

It answers ``/webservice/voice.php?method=Submit`` and ``?method=GetNum`` (POST form body or
GET query parameters) with the reply bytes ihuyi documents, in XML (default) or JSON
(``format=json``). It checks the APIKEY or the dynamic password, keeps a balance per account,
records every call, and fails on demand.

Submit checks, in order: account empty 401; password empty 402; unknown account or wrong
password (or a dynamic password whose ``time`` is more than TIME_WINDOW from the sandbox's
clock) 405; the account's forced code (``set_account(forced_code=...)``); frozen 4050;
mobile empty 403; content empty 404; the magic numbers below; mobile not ``1[3-9]`` + 9
digits 406; content not 4-6 digits 4070; balance used up 4051; else code 2, one unit of
balance spent and a fresh voiceid. GetNum checks 401, 402, 405, a forced 400 or 4052 (ihuyi
checks the caller's IP on every method; other forced codes are Submit's only) and 4050, then
answers the balance.

Every reply's ``Date`` header is the sandbox's clock: the real time plus ``clock_offset``
seconds, the same clock the dynamic password's ``time`` is checked against. A test sets an
offset to play an ihuyi whose clock and the worker's disagree (405, with a skewed Date).

Magic mobile numbers (checked after those auth and emptiness checks; they spend balance only
when they succeed):

* ``1990000CCCC`` always answers code ``int(CCCC)``: ``19900004051`` answers 4051,
  ``19900000000`` code 0, ``19900004081`` 4081 (the number called too often: 4080-4086),
  ``19900000400`` and ``19900004052`` the host's IP refused, ``19900009999`` the
  undocumented 9999 ("未知错误"); ``19900000002`` is sent normally.
* ``19901FNxxxx`` fails with fault F on the first N Submit calls for that exact number, then
  is sent normally.
* ``19902F0xxxx`` always fails with fault F.

Faults F: 0 reply code 0 (提交失败); 1 HTTP 500 with an HTML body; 2 connection reset, no
reply at all; 3 a reply slowed by ``slow_ms`` (the call is still placed, and billed: the
client has timed out by then); 4 an HTTP 200 body that is neither XML nor JSON; 5 the first
half of a success reply; 6 drip: the status line and headers at once, then the body one
byte every ``drip_ms`` (with ``drip_headers``, the whole reply one byte at a time from the
status line's first; the call is placed); 7 hang: the status line and headers with the
body's true Content-Length, then nothing for ``slow_ms``, then the body (the call is
placed); 8 an HTTP 200 reply whose code has 5,000 digits; 9 the undocumented code 9999 with
the raw request (the form body, or a GET's query string) echoed as its msg, password and
all, as a careless gateway might.

Every Submit and GetNum call is recorded as ``{"method", "account", "mobile", "content",
"at", "reply"}`` where ``reply`` is the code or the fault's name (``http500``, ``reset``,
``slow``, ``garbage``, ``truncated``, ``drip``, ``hang``, ``huge_code``, ``echo``). The same
control is offered over HTTP, for tests in other processes: ``GET /_sandbox/calls?method=Submit``
(``method=all`` for every call), ``POST /_sandbox/reset`` and ``POST /_sandbox/account`` with a
JSON body ``{"apiid": ..., "balance": N, "frozen": bool, "forced_code": int | null}`` (absent
keys unchanged). ``latency_ms`` delays every API reply, not the control ones. ``stop()`` ends
every reply still waiting or dripping at once.

It is also the phone of a development loop: with no person behind it, showing the digits is
its purpose. Each Submit can be written as one line to ``phone`` (a text stream: ``voicecode
sandbox`` passes its standard output) with the time, the number, the digits its voice would
read and the outcome (ihuyi's code, or the fault), and ``GET /`` serves the same as a page,
newest first, that refreshes itself every 2 s (``voicecode sandbox calls`` prints it from the
control API). Nothing else is written anywhere: no request log, and the numbers and codes of
the calls stay in memory.
"""
from __future__ import annotations

import hashlib
import html
import json
import re
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import EllipsisType
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

PATH = "/webservice/voice.php"
FIRST_VOICEID = 60495654
#: How far a dynamic password's ``time`` may be from the sandbox's clock, in seconds.
TIME_WINDOW = 600

MESSAGES = {
    0: "提交失败",
    2: "提交成功",
    400: "非法ip访问",
    401: "帐号不能为空",
    402: "密码不能为空",
    403: "手机号码不能为空",
    4030: "手机号码已被列入黑名单",
    404: "语音内容不能为空",
    405: "用户名或密码不正确",
    4050: "账号被冻结",
    4051: "剩余条数不足",
    4052: "访问ip与备案ip不符",
    406: "手机格式不正确",
    407: "短信内容含有敏感字符",
    4070: "语音验证码内容必须为4-6位数字",
    408: "您的帐户疑被恶意利用,已被自动冻结,如有疑问请与客服联系。",
    4080: "同一手机号码同一秒钟不能超过2条",
    4081: "同一手机号码一分钟之内发送频率不能超过1条",
    4082: "同一手机号码一天之内发送频率不能超过5条",
    4083: "同内容每分钟限制：1条",
    4084: "同内容每日限制：5条",
    4085: "同一手机号码验证码短信发送量超出5条",
    4086: "发送失败，同一个手机号码发送频率太频繁",
}
GETNUM_OK = "查询成功"
UNKNOWN = "未知错误"

_XML = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<{root} xmlns="http://106.ihuyi.com/">\n'
    "<code>{code}</code>\n"
    "<msg>{msg}</msg>\n"
    "<{key}>{value}</{key}>\n"
    "</{root}>"
)
# What json.dumps(..., ensure_ascii=False) writes, with room for a code too long for int().
_JSON = '{{"code": {code}, "msg": {msg}, {key}: {value}}}'
_HUGE_CODE = "9" * 5000
_HTML_500 = (
    b"<html><head><title>500 Internal Server Error</title></head>"
    b"<body><h1>Internal Server Error</h1></body></html>"
)
_GARBAGE = b"\x8b\x00 upstream busy \xff\xfe"

_MOBILE = re.compile(r"1[3-9][0-9]{9}")
_CONTENT = re.compile(r"[0-9]{4,6}")
_TIME = re.compile(r"[0-9]{10}")
_FIXED = re.compile(r"1990000([0-9]{4})")
_FLAKY = re.compile(r"19901([0-9])([0-9])[0-9]{4}")
_BROKEN = re.compile(r"19902([0-9])0[0-9]{4}")
_FAULTS = {1: "http500", 2: "reset", 3: "slow", 4: "garbage", 5: "truncated", 6: "drip", 7: "hang",
           8: "huge_code", 9: "echo"}
_PLACED = {"slow", "drip", "hang"}  # faults after which the call is still made
_CONTROL_TYPES = {"balance": (int, type(None)), "frozen": (bool, type(None)),
                  "forced_code": (int, type(None))}
_CALLER_CODES = {400, 4052}  # a forced code about the caller's IP answers GetNum too
#: The newest calls the phone's page lists.
PAGE_CALLS = 100


def _md5(*parts: str) -> str:
    return hashlib.md5("".join(parts).encode("utf-8")).hexdigest()


def _render(fmt: str, root: str, code: int | str, msg: str, key: str, value: str) -> tuple[bytes, str]:
    """A reply's bytes and Content-Type; ``code`` may be a string of digits."""
    if fmt == "json":
        body = _JSON.format(code=code, msg=json.dumps(msg, ensure_ascii=False), key=json.dumps(key),
                            value=json.dumps(value, ensure_ascii=False))
        return body.encode("utf-8"), "application/json"
    body = _XML.format(root=root, code=code, msg=escape(msg), key=key, value=value)
    return body.encode("utf-8"), "text/xml; charset=utf-8"


class Sandbox:
    """The simulated ihuyi API. ``accounts`` maps APIID to APIKEY."""

    def __init__(
        self,
        accounts: dict[str, str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: int = 0,
        slow_ms: int = 15000,
        drip_ms: int = 2000,
        drip_headers: bool = False,
        initial_balance: int = 1000,
        clock_offset: float = 0.0,
        phone: TextIO | None = None,
    ) -> None:
        self._accounts = dict(accounts)
        self._host, self._port = host, port
        self.latency_ms, self.slow_ms = latency_ms, slow_ms
        self.drip_ms, self.drip_headers = drip_ms, drip_headers
        #: Seconds the sandbox's clock is ahead of the real time (negative: behind).
        self.clock_offset = clock_offset
        self._initial_balance = initial_balance
        self._lock = threading.Lock()
        self._calls: list[dict[str, Any]] = []
        self._balances = dict.fromkeys(self._accounts, initial_balance)
        self._frozen: set[str] = set()
        self._forced: dict[str, int] = {}
        self._seen: dict[str, int] = {}  # Submit calls per 19901FN number
        self._next_voiceid = FIRST_VOICEID
        self._open: set[socket.socket] = set()
        self._connections = 0  # TCP connections accepted so far
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._phone = phone  # where each Submit is written as a line, if anywhere
        self._phone_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Bind and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("sandbox already started")
        self._stopping.clear()
        self._server = _Server((self._host, self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="ihuyi-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end the replies in progress and drop the open keep-alive connections."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            open_now = list(self._open)
        for conn in open_now:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        assert self._thread is not None
        self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("sandbox not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{PATH}"

    # -- control ---------------------------------------------------------------------

    def calls(self, method: str | None = "Submit") -> list[dict]:
        """The recorded calls of ``method`` (every call if None), oldest first."""
        with self._lock:
            return [dict(c) for c in self._calls if method is None or c["method"] == method]

    def reset(self) -> None:
        """Forget calls and per-number counters; balances, frozen and forced codes as new."""
        with self._lock:
            self._calls.clear()
            self._seen.clear()
            self._balances = dict.fromkeys(self._accounts, self._initial_balance)
            self._frozen.clear()
            self._forced.clear()

    def set_account(
        self,
        apiid: str,
        *,
        balance: int | None = None,
        frozen: bool | None = None,
        forced_code: int | None | EllipsisType = ...,
    ) -> None:
        """Change one account; ``forced_code`` answers every Submit with it (None clears)."""
        with self._lock:
            if apiid not in self._accounts:
                raise KeyError(apiid)
            if balance is not None:
                self._balances[apiid] = balance
            if frozen is not None:
                (self._frozen.add if frozen else self._frozen.discard)(apiid)
            if forced_code is None:
                self._forced.pop(apiid, None)
            elif forced_code is not ...:
                self._forced[apiid] = forced_code

    def now(self) -> float:
        """The sandbox's clock: what its Date headers say and dynamic passwords are checked against."""
        return time.time() + self.clock_offset

    # -- the API itself (called by the handler threads) ---------------------------------

    def _submit(self, p: dict[str, str], at: float) -> tuple[int, str, str | None]:
        """(code, voiceid, fault name or None) for one Submit, recorded."""
        with self._lock:
            code, voiceid, fault = self._decide_submit(p)
            call = self._record("Submit", p, at, fault or code)
        if self._phone is not None:  # the phone's line is made only for a phone to show
            self._tell(phone_line(call))
        return code, voiceid, fault

    def _getnum(self, p: dict[str, str], at: float) -> tuple[int, str]:
        """(code, balance) for one GetNum, recorded."""
        with self._lock:
            forced = self._forced.get(p["account"])
            code = self._auth(p) or (forced if forced in _CALLER_CODES else None) or (
                4050 if p["account"] in self._frozen else 2)
            num = str(max(self._balances[p["account"]], 0)) if code == 2 else "0"
            self._record("GetNum", p, at, code)
        return code, num

    def _tell(self, text: str) -> None:
        """Write ``text`` and a newline to the phone, if there is one, in one piece."""
        if self._phone is not None:
            with self._phone_lock:
                self._phone.write(text + "\n")
                self._phone.flush()

    def _record(self, method: str, p: dict[str, str], at: float, reply: int | str) -> dict[str, Any]:
        call = {"method": method, "account": p["account"], "mobile": p["mobile"],
                "content": p["content"], "at": at, "reply": reply}
        self._calls.append(call)
        return dict(call)

    def _auth(self, p: dict[str, str], *signed: str) -> int | None:
        account, password, stamp = p["account"], p["password"], p["time"]
        if not account:
            return 401
        if not password:
            return 402
        apikey = self._accounts.get(account)
        if apikey is None:
            return 405
        if password == apikey:
            return None
        fresh = _TIME.fullmatch(stamp) and abs(self.now() - int(stamp)) <= TIME_WINDOW
        if fresh and password == _md5(account, apikey, *signed, stamp):
            return None
        return 405

    def _decide_submit(self, p: dict[str, str]) -> tuple[int, str, str | None]:
        account, mobile, content = p["account"], p["mobile"], p["content"]
        code = self._auth(p, mobile, content)
        if code is None:
            code = self._forced.get(account)
        if code is None and account in self._frozen:
            code = 4050
        if code is None and not mobile:
            code = 403
        if code is None and not content:
            code = 404
        if code is not None:
            return code, "0", None
        fault = None
        if (m := _FIXED.fullmatch(mobile)) and int(m[1]) != 2:
            return int(m[1]), "0", None
        if m := _BROKEN.fullmatch(mobile):
            fault = int(m[1])
        elif m := _FLAKY.fullmatch(mobile):
            self._seen[mobile] = self._seen.get(mobile, 0) + 1
            fault = int(m[1]) if self._seen[mobile] <= int(m[2]) else None
        if fault == 0:
            return 0, "0", None
        name = _FAULTS.get(fault)
        if name and name not in _PLACED:
            return 0, "0", name
        if not _MOBILE.fullmatch(mobile):
            code = 406
        elif not _CONTENT.fullmatch(content):
            code = 4070
        elif self._balances[account] <= 0:
            code = 4051
        if code is not None:
            return code, "0", name
        self._balances[account] -= 1
        self._next_voiceid += 1
        return 2, str(self._next_voiceid - 1), name

    def _idle(self, ms: int) -> bool:
        """Wait ``ms`` milliseconds, or less if the sandbox stops: then True, drop the reply."""
        return self._stopping.wait(ms / 1000)

    def _opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.add(conn)
            self._connections += 1

    def _closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.discard(conn)


# -- the phone: how a Submit looks to the person called ---------------------------------

def _printable(text: str, limit: int) -> str:
    """``text`` safe on a terminal: control characters escaped, cut at ``limit`` characters."""
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text[:limit])
    return shown + ("…" if len(text) > limit else "")


def phone_view(call: dict[str, Any]) -> dict[str, str]:
    """One recorded Submit as the phone shows it: ``time``, ``mobile``, ``digits`` (as its voice
    would read them), ``outcome`` (whether the phone rang, with ihuyi's code or the fault) and
    ``rang`` (``"yes"`` or ``"no"``), every value printable."""
    content, reply = str(call["content"]), call["reply"]
    placed = reply == 2 or reply in _PLACED
    if isinstance(reply, int):
        why = f"code {reply} {MESSAGES.get(reply, UNKNOWN)}"
    else:
        why = f"fault {reply}"
    return {
        "time": time.strftime("%H:%M:%S", time.localtime(call["at"])),
        "mobile": _printable(str(call["mobile"]), 20),
        "digits": " ".join(content) if _CONTENT.fullmatch(content) else _printable(content, 20),
        "outcome": f"{'rang' if placed else 'no call'} ({why})",
        "rang": "yes" if placed else "no",
    }


def phone_line(call: dict[str, Any]) -> str:
    """One Submit as a line: time, number, the digits read aloud, the outcome."""
    view = phone_view(call)
    return f"{view['time']}  {view['mobile']:11}  reads {view['digits']:11}  {view['outcome']}"


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>ihuyi sandbox phone</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }} td, th {{ padding: .3em 1em; text-align: left; }}
.digits {{ font: bold 1.5em monospace; }} tr.rang-no {{ color: #888; }}
</style></head><body>
<h1>ihuyi sandbox phone</h1>
<p>Every Submit to this simulator, newest first: the number called and the digits its voice reads.
This page refreshes itself every 2 s.</p>
<table><thead><tr><th>time</th><th>number</th><th>reads</th><th>outcome</th></tr></thead>
<tbody>
{rows}</tbody></table>
{empty}</body></html>
"""
_ROW = ('<tr class="call rang-{rang}"><td>{time}</td><td class="mobile">{mobile}</td>'
        '<td class="digits">{digits}</td><td class="outcome">{outcome}</td></tr>\n')


def phone_page(calls: list[dict[str, Any]]) -> bytes:
    """The phone's page: the newest ``PAGE_CALLS`` Submits of ``calls`` (oldest first), newest first."""
    views = [phone_view(call) for call in reversed(calls[-PAGE_CALLS:])]
    rows = "".join(_ROW.format(**{k: html.escape(v) for k, v in view.items()}) for view in views)
    return _PAGE.format(rows=rows, empty="" if views else "<p>No calls yet.</p>\n").encode("utf-8")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client gone away is no error
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.sandbox._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sandbox._closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests carry mobile numbers and codes: no request log (the phone shows the Submits)

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header: the sandbox's clock, offset included."""
        return super().date_time_string(self.server.sandbox.now() if timestamp is None else timestamp)

    def do_GET(self) -> None:
        self._dispatch(time.time(), b"")

    def do_POST(self) -> None:
        at = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if len(body) < length:
            # The client went away mid-body (a killed worker): like a real server, nothing is
            # handled or recorded.
            self.close_connection = True
            return
        self._dispatch(at, body)

    def _dispatch(self, at: float, body: bytes) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        route = (self.command, url.path)
        if url.path == PATH:
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
            self._voice(at, query | {k: v[0] for k, v in form.items()}, body or url.query.encode())
        elif route == ("GET", "/"):
            self._send(200, "text/html; charset=utf-8", phone_page(self.server.sandbox.calls()))
        elif route == ("GET", "/_sandbox/calls"):
            method = query.get("method", "Submit")
            self._json(200, self.server.sandbox.calls(None if method == "all" else method))
        elif route == ("POST", "/_sandbox/reset"):
            self.server.sandbox.reset()
            self._json(200, {"ok": True})
        elif route == ("POST", "/_sandbox/account"):
            self._set_account(body)
        else:
            self._json(404, {"error": "not found"})

    def _voice(self, at: float, params: dict[str, str], raw: bytes) -> None:
        sandbox = self.server.sandbox
        p = {k: params.get(k, "") for k in ("account", "password", "mobile", "content", "time")}
        fmt = "json" if params.get("format", "").lower() == "json" else "xml"
        method = params.get("method")
        if method == "Submit":
            code, value, fault = sandbox._submit(p, at)
            root, key, msg = "SubmitResult", "voiceid", MESSAGES.get(code, UNKNOWN)
        elif method == "GetNum":
            code, value = sandbox._getnum(p, at)
            fault, root, key = None, "GetNumResult", "num"
            msg = GETNUM_OK if code == 2 else MESSAGES.get(code, UNKNOWN)
        else:
            self._json(404, {"error": "unknown method"})
            return
        if sandbox._idle(sandbox.latency_ms) or fault == "slow" and sandbox._idle(sandbox.slow_ms):
            self.close_connection = True
            return
        if fault == "reset":
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        body, ctype = _render(fmt, root, code, msg, key, value)
        if fault == "http500":
            self._send(500, "text/html; charset=utf-8", _HTML_500)
        elif fault == "garbage":
            self._send(200, ctype, _GARBAGE)
        elif fault == "truncated":
            body = _render(fmt, root, 2, MESSAGES[2], key, str(FIRST_VOICEID))[0]
            self._send(200, ctype, body[: len(body) // 2])
        elif fault == "drip":
            self._drip(ctype, body)
        elif fault == "hang":
            self._hang(ctype, body)
        elif fault == "huge_code":
            self._send(200, ctype, _render(fmt, root, _HUGE_CODE, UNKNOWN, key, "0")[0])
        elif fault == "echo":
            self._send(200, ctype, _render(fmt, root, 9999, raw.decode("utf-8", "replace"), key, "0")[0])
        else:
            self._send(200, ctype, body)

    def _head(self, ctype: str, length: int) -> bytes:
        """The status line and headers of a 200 reply, as bytes to write at any pace."""
        return (f"{self.protocol_version} 200 OK\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {length}\r\n\r\n").encode("latin-1")

    def _drip(self, ctype: str, body: bytes) -> None:
        """The reply one byte every drip_ms: the body, or everything with drip_headers."""
        sandbox = self.server.sandbox
        reply = self._head(ctype, len(body)) + body
        at_once = 0 if sandbox.drip_headers else len(reply) - len(body)
        self.wfile.write(reply[:at_once])
        for i in range(at_once, len(reply)):
            if sandbox._idle(sandbox.drip_ms):
                self.close_connection = True
                return
            self.wfile.write(reply[i : i + 1])

    def _hang(self, ctype: str, body: bytes) -> None:
        """The status line and headers, then nothing for slow_ms, then the body."""
        sandbox = self.server.sandbox
        self.wfile.write(self._head(ctype, len(body)))
        if sandbox._idle(sandbox.slow_ms):
            self.close_connection = True
            return
        self.wfile.write(body)

    def _set_account(self, body: bytes) -> None:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("apiid"), str):
            self._json(400, {"error": "want a JSON object with apiid"})
            return
        changes = {k: data[k] for k in _CONTROL_TYPES if k in data}
        if not all(isinstance(v, _CONTROL_TYPES[k]) for k, v in changes.items()):
            self._json(400, {"error": "balance, frozen, forced_code: int, bool, int or null"})
            return
        try:
            self.server.sandbox.set_account(data["apiid"], **changes)
        except KeyError:
            self._json(404, {"error": "unknown account"})
            return
        self._json(200, {"ok": True})

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, "application/json", json.dumps(obj, ensure_ascii=False).encode("utf-8"))

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(
    accounts: dict[str, str], host: str, port: int, latency_ms: int, slow_ms: int,
    initial_balance: int, drip_ms: int = 2000, drip_headers: bool = False,
) -> None:
    """Serve until SIGINT or SIGTERM (the ``voicecode sandbox`` command)."""
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    with Sandbox(accounts, host=host, port=port, latency_ms=latency_ms, slow_ms=slow_ms, drip_ms=drip_ms,
                 drip_headers=drip_headers, initial_balance=initial_balance, phone=sys.stdout) as sandbox:
        # In one piece, so no Submit's line comes between the two.
        sandbox._tell(f"ihuyi sandbox listening on {sandbox.url}\n"
                      f"its phone: {sandbox.url.removesuffix(PATH)}/ and a line here for every Submit")
        stopping.wait()
