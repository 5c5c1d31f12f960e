"""Tests for ihuyi/client.py against recorded replies and a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import json
import logging
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from ihuyi import transport
from ihuyi.client import IhuyiClient, SubmitReply, dynamic_password
from ihuyi.codes import CODES, Outcome, Scope, classify
from ihuyi.exceptions import IhuyiError, PermanentError, TransientError
from ihuyi.replies import parse_reply
from ihuyi.sandbox import MESSAGES
from ihuyi.transport import Session, new_session, shared_session

APIID = "cf_demo"
APIKEY = "secretkey"
MOBILE = "13800138000"
CONTENT = "1234"
NOW = 1_700_000_000

# The reply bytes exactly as ihuyi's documentation shows them (newlines, namespace).
DOC_SUBMIT_OK = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<SubmitResult xmlns="http://106.ihuyi.com/">\n'
    "<code>2</code>\n"
    "<msg>提交成功</msg>\n"
    "<voiceid>60495654</voiceid>\n"
    "</SubmitResult>"
).encode()
DOC_SUBMIT_405 = DOC_SUBMIT_OK.replace(b"<code>2<", b"<code>405<").replace(
    "提交成功".encode(), "用户名或密码不正确".encode()
).replace(b">60495654<", b">0<")
DOC_GETNUM_OK = (
    '<GetNumResult xmlns="http://106.ihuyi.com/"><code>2</code><msg>查询成功</msg><num>856</num></GetNumResult>'
).encode()

# ihuyi's msg for each Submit code ("响应参数" in the seed page; 4080-4086 from public clients),
# as the sandbox answers them.
SUBMIT_MSGS = MESSAGES
GETNUM_MSGS = {2: "查询成功", 400: "非法ip访问", 401: "帐号不能为空", 402: "密码不能为空", 405: "用户名或密码不正确", 4050: "账号被冻结"}
UNKNOWN_CODE = 4099

NAMESPACES = ["http://106.ihuyi.com/", "106.ihuyi.com", "http://106.ihuyi.cn/", None]


def xml_reply(
    code: object,
    msg: str,
    value: str = "60495654",
    *,
    root: str = "SubmitResult",
    field: str = "voiceid",
    ns: str | None = "http://106.ihuyi.com/",
    declared: str = "utf-8",
    encoding: str = "utf-8",
) -> bytes:
    """A reply laid out like the documented one."""
    xmlns = f' xmlns="{ns}"' if ns is not None else ""
    return (
        f'<?xml version="1.0" encoding="{declared}"?>\n<{root}{xmlns}>\n<code>{code}</code>\n'
        f"<msg>{msg}</msg>\n<{field}>{value}</{field}>\n</{root}>"
    ).encode(encoding)


def json_reply(code: object, msg: str, value: str = "60495654", *, field: str = "voiceid") -> bytes:
    return json.dumps({"code": code, "msg": msg, field: value}, ensure_ascii=False).encode()


def reply_for(reply_format: str, code: int, msg: str, *, getnum: bool = False) -> bytes:
    value = ("856" if code == 2 else "0") if getnum else ("60495654" if code == 2 else "0")
    field = "num" if getnum else "voiceid"
    if reply_format == "json":
        return json_reply(code, msg, value, field=field)
    return xml_reply(code, msg, value, field=field, root="GetNumResult" if getnum else "SubmitResult")


# --- a tiny real HTTP server -------------------------------------------------------------

Behaviour = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    form: dict[str, str]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        self.server.seen.append(Seen(self.path, dict(self.headers), form))
        try:
            self.server.behaviour(self)
        except OSError:
            pass  # the client hung up first (timeout, size cap): expected

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[Seen] = []
        self.behaviour: Behaviour = respond(b"")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/webservice/voice.php"


def respond(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Behaviour:
    def send(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return send


def start_server() -> Server:
    server = Server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Server, Server]]:
    pair = start_server(), start_server()
    yield pair
    for server in pair:
        server.shutdown()
        server.server_close()


@pytest.fixture
def server(servers: tuple[Server, Server]) -> Server:
    for s in servers:
        s.seen.clear()
        s.behaviour = respond(b"")
    return servers[0]


@pytest.fixture
def other_host(servers: tuple[Server, Server], server: Server) -> Server:
    return servers[1]


@pytest.fixture
def make_client(server: Server, session: Session) -> Callable[..., IhuyiClient]:
    def make(**kwargs: object) -> IhuyiClient:
        kwargs.setdefault("session", session)
        kwargs.setdefault("clock", lambda: NOW + 0.75)
        return IhuyiClient(server.url, APIID, APIKEY, **kwargs)

    return make


# --- dynamic password --------------------------------------------------------------------


def test_dynamic_password_known_vector() -> None:
    # Worked out once with:
    #   hashlib.md5(b"cf_demo" b"secretkey" b"13800138000" b"1234" b"1700000000").hexdigest()
    # i.e. md5(account + apikey + mobile + content + time). Changing the order of the parts
    # (apikey first gives 5c887bb2...) or adding separators must fail this test.
    assert dynamic_password(APIID, APIKEY, MOBILE, CONTENT, "1700000000") == "e27801cb2dc170d8011d1cced883e646"
    # GetNum: md5(b"cf_demo" b"secretkey" b"1700000000")
    assert dynamic_password(APIID, APIKEY, "1700000000") == "4fc4c45ec2f0fe60af907a0a2f7de133"


def test_submit_posts_the_documented_form(server: Server, make_client: Callable[..., IhuyiClient]) -> None:
    server.behaviour = respond(DOC_SUBMIT_OK)
    assert make_client().submit(MOBILE, CONTENT) == SubmitReply(code=2, msg="提交成功", voiceid="60495654")
    (seen,) = server.seen
    assert urlsplit(seen.path).path == "/webservice/voice.php"
    assert parse_qs(urlsplit(seen.path).query) == {"method": ["Submit"]}
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert seen.form == {
        "account": APIID,
        "mobile": MOBILE,
        "content": CONTENT,
        "time": "1700000000",
        "format": "xml",
        "password": "e27801cb2dc170d8011d1cced883e646",
    }
    assert APIKEY not in json.dumps(seen.form)  # the APIKEY never travels in dynamic mode


def test_get_num_posts_the_documented_form(server: Server, make_client: Callable[..., IhuyiClient]) -> None:
    server.behaviour = respond(DOC_GETNUM_OK)
    assert make_client().get_num() == 856
    (seen,) = server.seen
    assert parse_qs(urlsplit(seen.path).query) == {"method": ["GetNum"]}
    assert seen.form == {
        "account": APIID,
        "time": "1700000000",
        "format": "xml",
        "password": "4fc4c45ec2f0fe60af907a0a2f7de133",
    }


def test_fresh_time_and_password_on_every_attempt(server: Server, make_client: Callable[..., IhuyiClient]) -> None:
    server.behaviour = respond(DOC_SUBMIT_OK)
    ticks = iter([NOW, NOW + 7.9])
    client = make_client(clock=lambda: next(ticks))
    client.submit(MOBILE, CONTENT)
    client.submit(MOBILE, CONTENT)
    first, second = (s.form for s in server.seen)
    assert (first["time"], second["time"]) == (str(NOW), str(NOW + 7))
    for form in (first, second):
        assert len(form["time"]) == 10 and form["time"].isdigit()
        assert form["password"] == dynamic_password(APIID, APIKEY, MOBILE, CONTENT, form["time"])
    assert first["password"] != second["password"]


def test_apikey_mode_sends_the_apikey_as_password(server: Server, make_client: Callable[..., IhuyiClient]) -> None:
    server.behaviour = respond(json_reply(2, "提交成功"))
    make_client(password_mode="apikey", reply_format="json").submit(MOBILE, CONTENT)
    (seen,) = server.seen
    assert seen.form["password"] == APIKEY
    assert seen.form["format"] == "json"


@pytest.mark.parametrize("kwargs", [{"password_mode": "md5"}, {"reply_format": "yaml"}])
def test_invalid_modes_are_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        IhuyiClient("http://example.invalid/", APIID, APIKEY, **kwargs)


# --- every reply code, xml and json -----------------------------------------------------


def test_the_code_table_covers_every_known_code() -> None:
    assert set(SUBMIT_MSGS) == set(CODES)
    assert UNKNOWN_CODE not in CODES


@pytest.mark.parametrize("reply_format", ["xml", "json"])
@pytest.mark.parametrize("code", [*SUBMIT_MSGS, UNKNOWN_CODE])
def test_submit_reply_codes(
    server: Server, make_client: Callable[..., IhuyiClient], reply_format: str, code: int
) -> None:
    msg = SUBMIT_MSGS.get(code, "未知错误")
    server.behaviour = respond(reply_for(reply_format, code, msg))
    client = make_client(reply_format=reply_format)
    info = classify(code)
    if info.outcome is Outcome.SUCCESS:
        assert client.submit(MOBILE, CONTENT) == SubmitReply(2, msg, "60495654")
        return
    expected = TransientError if info.outcome is Outcome.TRANSIENT else PermanentError
    with pytest.raises(expected) as caught:
        client.submit(MOBILE, CONTENT)
    assert type(caught.value) is expected
    assert (caught.value.code, caught.value.msg) == (code, msg)
    assert str(caught.value) == f"ihuyi Submit refused: code {code} ({info.meaning})"
    if expected is PermanentError:
        assert caught.value.scope is (Scope.UNKNOWN if code == UNKNOWN_CODE else CODES[code].scope)


def test_refusal_message_names_code_and_meaning(server: Server, make_client: Callable[..., IhuyiClient]) -> None:
    server.behaviour = respond(xml_reply(4051, "剩余条数不足", "0"))
    with pytest.raises(PermanentError) as caught:
        make_client().submit(MOBILE, CONTENT)
    assert str(caught.value) == "ihuyi Submit refused: code 4051 (balance used up)"
    assert caught.value.scope is Scope.ACCOUNT


@pytest.mark.parametrize(("code", "window"), [(4080, 60), (4081, 60), (4082, 86400), (4083, 60), (4084, 86400),
                                              (4085, 86400), (4086, 3600)])
def test_a_number_called_too_often_is_about_the_number(code: int, window: int) -> None:
    info = classify(code)
    assert (info.outcome, info.scope, info.alert, info.retry_after) == (Outcome.PERMANENT, Scope.NUMBER, None, window)


def test_only_the_number_codes_say_when_to_call_again() -> None:
    assert {c for c, info in CODES.items() if info.retry_after} == set(range(4080, 4087))
    assert {c for c, info in CODES.items() if info.scope is Scope.HOST} == {400, 4052}


def dated(body: bytes, date: str) -> Behaviour:
    """A 200 reply whose Date header is ``date``."""
    def send(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response_only(200)
        handler.send_header("Date", date)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return send


@pytest.mark.parametrize(("date", "server_time"), [
    ("Tue, 14 Nov 2023 22:13:20 GMT", 1_700_000_000.0), ("yesterday", None), ("", None)])
def test_a_refusal_carries_ihuyis_date(server: Server, make_client: Callable[..., IhuyiClient],
                                       date: str, server_time: float | None) -> None:
    server.behaviour = dated(DOC_SUBMIT_405, date)
    asked = time.time()
    with pytest.raises(PermanentError) as caught:
        make_client().submit(MOBILE, CONTENT)
    assert (caught.value.date, caught.value.server_time) == (date, server_time)
    assert asked <= caught.value.received_at <= time.time()  # this host's clock when the reply was read


def test_a_refusal_without_a_date_has_no_server_time(server: Server, make_client: Callable[..., IhuyiClient]) -> None:
    def undated(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response_only(200)
        handler.send_header("Content-Length", str(len(DOC_SUBMIT_405)))
        handler.end_headers()
        handler.wfile.write(DOC_SUBMIT_405)

    server.behaviour = undated
    with pytest.raises(PermanentError) as caught:
        make_client().submit(MOBILE, CONTENT)
    assert (caught.value.date, caught.value.server_time) == (None, None)


def test_documented_failure_reply(server: Server, make_client: Callable[..., IhuyiClient]) -> None:
    server.behaviour = respond(DOC_SUBMIT_405)
    with pytest.raises(PermanentError) as caught:
        make_client().submit(MOBILE, CONTENT)
    assert (caught.value.code, caught.value.msg, caught.value.scope) == (405, "用户名或密码不正确", Scope.ACCOUNT)


@pytest.mark.parametrize("reply_format", ["xml", "json"])
@pytest.mark.parametrize("code", [*GETNUM_MSGS, UNKNOWN_CODE])
def test_get_num_reply_codes(
    server: Server, make_client: Callable[..., IhuyiClient], reply_format: str, code: int
) -> None:
    msg = GETNUM_MSGS.get(code, "未知错误")
    server.behaviour = respond(reply_for(reply_format, code, msg, getnum=True))
    client = make_client(reply_format=reply_format)
    if code == 2:
        assert client.get_num() == 856
        return
    with pytest.raises(PermanentError) as caught:
        client.get_num()
    assert (caught.value.code, caught.value.msg) == (code, msg)
    assert str(caught.value).startswith(f"ihuyi GetNum refused: code {code} ")


@pytest.mark.parametrize(
    "body",
    [
        xml_reply(2, "查询成功", "", root="GetNumResult", field="num"),
        xml_reply(2, "查询成功", "-5", root="GetNumResult", field="num"),
        DOC_GETNUM_OK.replace(b"<num>856</num>", b""),
    ],
)
def test_get_num_without_a_number_is_transient(
    server: Server, make_client: Callable[..., IhuyiClient], body: bytes
) -> None:
    server.behaviour = respond(body)
    with pytest.raises(TransientError):
        make_client().get_num()


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize("ns", NAMESPACES)
def test_any_namespace(ns: str | None) -> None:
    assert parse_reply(xml_reply(2, "提交成功", ns=ns), "xml") == {"code": 2, "msg": "提交成功", "voiceid": "60495654"}
    body = xml_reply(2, "查询成功", "856", root="GetNumResult", field="num", ns=ns)
    assert parse_reply(body, "xml") == {"code": 2, "msg": "查询成功", "num": "856"}


def test_prefixed_namespace_and_surrounding_whitespace() -> None:
    body = b'\xef\xbb\xbf\r\n  <r:SubmitResult xmlns:r="106.ihuyi.com"><r:code> 405 </r:code><r:msg>x</r:msg></r:SubmitResult>\n\n'
    assert parse_reply(body, "xml") == {"code": 405, "msg": "x"}
    assert parse_reply(b"\n  " + DOC_SUBMIT_OK + b"\r\n\r\n", "xml")["code"] == 2


def test_smsid_is_read_as_the_voiceid() -> None:
    # ihuyi's field table names the id "smsid"; its examples say "voiceid".
    assert parse_reply(xml_reply(2, "提交成功", "77", field="smsid"), "xml")["voiceid"] == "77"


@pytest.mark.parametrize(
    "declared, encoding",
    [("utf-8", "gbk"), ("UTF-8", "gb18030"), ("gbk", "utf-8"), ("gb2312", "utf-8"), ("gbk", "gbk")],
)
def test_mislabelled_encoding(declared: str, encoding: str) -> None:
    body = xml_reply(405, "用户名或密码不正确", "0", declared=declared, encoding=encoding)
    assert parse_reply(body, "xml") == {"code": 405, "msg": "用户名或密码不正确", "voiceid": "0"}


def test_json_in_gbk() -> None:
    body = json.dumps({"code": 4051, "msg": "剩余条数不足", "voiceid": "0"}, ensure_ascii=False).encode("gbk")
    assert parse_reply(body, "json") == {"code": 4051, "msg": "剩余条数不足", "voiceid": "0"}


def test_mislabelled_encoding_through_the_client(server: Server, make_client: Callable[..., IhuyiClient]) -> None:
    server.behaviour = respond(xml_reply(4030, "手机号码已被列入黑名单", "0", encoding="gbk"))
    with pytest.raises(PermanentError) as caught:
        make_client().submit(MOBILE, CONTENT)
    assert (caught.value.code, caught.value.msg) == (4030, "手机号码已被列入黑名单")


def test_json_replies() -> None:
    assert parse_reply(b'{"code": 2, "msg": "\\u63d0\\u4ea4\\u6210\\u529f", "voiceid": "60495654"}', "json") == {
        "code": 2,
        "msg": "提交成功",
        "voiceid": "60495654",
    }
    assert parse_reply(b'{"code":"405","msg":"x","voiceid":0}', "json") == {"code": 405, "msg": "x", "voiceid": "0"}
    assert parse_reply(b'{"code":2,"msg":"\xe6\x9f\xa5\xe8\xaf\xa2\xe6\x88\x90\xe5\x8a\x9f","num":"856"}', "json")["num"] == "856"


def test_every_truncation_of_the_documented_reply_is_transient() -> None:
    for end in range(len(DOC_SUBMIT_OK)):
        with pytest.raises(TransientError):
            parse_reply(DOC_SUBMIT_OK[:end], "xml")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   \n",
        b"<html><body>502 Bad Gateway</body></html>",
        b"<SubmitResult><msg>no code</msg></SubmitResult>",
        b"<SubmitResult><code></code></SubmitResult>",
        b"<SubmitResult><code>two</code></SubmitResult>",
        b"<SubmitResult><code>2.0</code></SubmitResult>",
        b"<SubmitResult><code>2_0</code></SubmitResult>",
        "<SubmitResult><code>２</code></SubmitResult>".encode(),  # a Unicode digit, not ASCII
        "<SubmitResult><code>٢</code></SubmitResult>".encode(),
        b"<SubmitResult><code>2</code><msg>x</SubmitResult>",
        b"<SubmitResult><code>2</code></SubmitResult><extra/>",
        b'{"code": 2}',  # JSON where XML was asked for
    ],
)
def test_unreadable_xml_is_transient(body: bytes) -> None:
    with pytest.raises(TransientError) as caught:
        parse_reply(body, "xml")
    assert caught.value.code is None


@pytest.mark.parametrize(
    "body",
    [b"", b"[2]", b"null", b'"2"', b'{"msg": "x"}', b'{"code": "2x"}', b'{"code": true}', b'{"code": 2.0}',
     b'{"code": null}', b'{"code": 2', b"[" * 50_000, DOC_SUBMIT_OK],
)
def test_unreadable_json_is_transient(body: bytes) -> None:
    with pytest.raises(TransientError):
        parse_reply(body, "json")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<SubmitResult><code>2</code><msg>&lol9;</msg><voiceid>1</voiceid></SubmitResult>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<SubmitResult><code>2</code><msg>&x;</msg></SubmitResult>"""
BARE_DOCTYPE = b'<!DOCTYPE SubmitResult SYSTEM "http://127.0.0.1:1/x.dtd"><SubmitResult><code>2</code></SubmitResult>'


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL_ENTITY, BARE_DOCTYPE])
def test_dtds_and_entities_are_refused_quickly(body: bytes) -> None:
    started = time.monotonic()
    with pytest.raises(TransientError):
        parse_reply(body, "xml")
    assert time.monotonic() - started < 0.5


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=300), reply_format=st.sampled_from(["xml", "json"]))
def test_parse_reply_returns_an_int_code_or_raises_transient(body: bytes, reply_format: str) -> None:
    try:
        reply = parse_reply(body, reply_format)
    except TransientError:
        return
    assert type(reply["code"]) is int and isinstance(reply["msg"], str)


@settings(max_examples=50, deadline=None)
@given(code=st.integers(min_value=0, max_value=999_999), ns=st.sampled_from(NAMESPACES))
def test_any_code_of_up_to_six_digits_round_trips(code: int, ns: str | None) -> None:
    assert parse_reply(xml_reply(code, "m", ns=ns), "xml")["code"] == code
    assert parse_reply(json_reply(code, "m"), "json")["code"] == code
    assert parse_reply(json_reply(str(code), "m"), "json")["code"] == code


HUGE = "9" * 5000  # past int()'s 4,300-digit limit


@pytest.mark.parametrize(
    "body, reply_format",
    [
        (xml_reply(HUGE, "m"), "xml"),
        (json_reply(HUGE, "m"), "json"),  # a string of digits
        (xml_reply(-1, "m"), "xml"),
        (json_reply(-1, "m"), "json"),
        (xml_reply(1_000_000, "m"), "xml"),
        (json_reply(1_000_000, "m"), "json"),
        (xml_reply("-0", "m"), "xml"),
        (json_reply("-2", "m"), "json"),
    ],
    ids=["xml-huge", "json-huge-string", "xml-negative", "json-negative", "xml-seven-digits",
         "json-seven-digits", "xml-minus-zero", "json-negative-string"],
)
def test_codes_outside_0_to_999999_are_transient(body: bytes, reply_format: str) -> None:
    with pytest.raises(TransientError, match=rf"^unparseable ihuyi {reply_format} reply \(") as caught:
        parse_reply(body, reply_format)
    assert caught.value.sent is True and caught.value.code is None


def test_an_absurd_voiceid_is_cut() -> None:
    assert parse_reply(xml_reply(2, "提交成功", "7" * 5000), "xml")["voiceid"] == "7" * 64
    assert parse_reply(json_reply(2, "提交成功", "7" * 5000), "json")["voiceid"] == "7" * 64


def test_an_absurd_balance_is_transient(server: Server, make_client: Callable[..., IhuyiClient]) -> None:
    server.behaviour = respond(xml_reply(2, "查询成功", HUGE, root="GetNumResult", field="num"))
    with pytest.raises(TransientError, match="num is not a number"):
        make_client().get_num()


# --- HTTP behaviour against the real server --------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 404, 403, 429])
def test_http_errors_are_transient(server: Server, make_client: Callable[..., IhuyiClient], status: int) -> None:
    server.behaviour = respond(DOC_SUBMIT_OK, status)  # a well-formed body is still not trusted
    with pytest.raises(TransientError, match=f"HTTP {status}"):
        make_client().submit(MOBILE, CONTENT)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed(
    server: Server, other_host: Server, make_client: Callable[..., IhuyiClient], status: int
) -> None:
    other_host.behaviour = respond(DOC_SUBMIT_OK)
    target = other_host.url.replace("127.0.0.1", "localhost") + "?method=Submit"
    server.behaviour = respond(b"", status, {"Location": target})
    with pytest.raises(TransientError, match="unexpected redirect") as caught:
        make_client().submit(MOBILE, CONTENT)
    assert len(server.seen) == 1
    assert other_host.seen == []
    assert "localhost" not in str(caught.value)


def test_oversize_reply_is_capped(server: Server, make_client: Callable[..., IhuyiClient]) -> None:
    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()
        chunk = b"<!--" + b"x" * 65_536 + b"-->"
        for _ in range(1_000):  # ~64 MB unless the client stops reading
            handler.wfile.write(chunk)

    server.behaviour = endless
    started = time.monotonic()
    with pytest.raises(TransientError, match="larger than 1024 bytes"):
        make_client(max_reply_bytes=1024).submit(MOBILE, CONTENT)
    assert time.monotonic() - started < 2


def test_reply_of_exactly_the_cap_is_read(server: Server, make_client: Callable[..., IhuyiClient]) -> None:
    server.behaviour = respond(DOC_SUBMIT_OK)
    assert make_client(max_reply_bytes=len(DOC_SUBMIT_OK)).submit(MOBILE, CONTENT).voiceid == "60495654"


def test_read_timeout_is_transient(server: Server, make_client: Callable[..., IhuyiClient]) -> None:
    def slow(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(1)
        respond(DOC_SUBMIT_OK)(handler)

    server.behaviour = slow
    started = time.monotonic()
    with pytest.raises(TransientError, match="ReadTimeout"):
        make_client(read_timeout=0.2).submit(MOBILE, CONTENT)
    assert time.monotonic() - started < 0.9


def test_slow_body_after_headers_hits_the_read_timeout(server: Server, make_client: Callable[..., IhuyiClient]) -> None:
    def stall(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(DOC_SUBMIT_OK)))
        handler.end_headers()
        handler.wfile.write(DOC_SUBMIT_OK[:20])
        time.sleep(1)

    server.behaviour = stall
    with pytest.raises(TransientError):
        make_client(read_timeout=0.2).submit(MOBILE, CONTENT)


def _close_without_reply(handler: BaseHTTPRequestHandler) -> None:
    handler.close_connection = True


def _reset_without_reply(handler: BaseHTTPRequestHandler) -> None:
    # SO_LINGER 0: close() sends RST, the client sees "connection reset by peer".
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.connection.close()


@pytest.mark.parametrize("behaviour", [_close_without_reply, _reset_without_reply])
def test_connection_dropped_without_reply_is_transient(
    server: Server, make_client: Callable[..., IhuyiClient], behaviour: Behaviour
) -> None:
    server.behaviour = behaviour
    with pytest.raises(TransientError, match="ConnectionError"):
        make_client().submit(MOBILE, CONTENT)


def test_connection_refused_is_transient(session: Session) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = IhuyiClient(f"http://127.0.0.1:{port}/", APIID, APIKEY, session=session)
    with pytest.raises(TransientError, match=r"ihuyi GetNum to 127\.0\.0\.1 failed: ConnectionError"):
        client.get_num()


class RecordingSession(Session):
    """A real Session that remembers the keyword arguments and responses of each request."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, object]] = []
        self.responses: list[object] = []

    def post(self, url: str, fields: dict[str, str], **kwargs: float) -> object:
        self.calls.append(kwargs)
        response = super().post(url, fields, **kwargs)
        self.responses.append(response)
        return response


@pytest.mark.parametrize(
    "behaviour", [respond(DOC_SUBMIT_OK), respond(DOC_SUBMIT_405), respond(b"x" * 5000), respond(b"", 500)]
)
def test_timeouts_no_redirects_and_response_always_closed(
    server: Server, make_client: Callable[..., IhuyiClient], behaviour: Behaviour
) -> None:
    server.behaviour = behaviour
    with RecordingSession() as session:
        try:
            make_client(session=session, max_reply_bytes=4096).submit(MOBILE, CONTENT)
        except IhuyiError:
            pass
        (call,) = session.calls
        assert call == {"connect_timeout": 3.05, "read_timeout": 10.0}
        (response,) = session.responses
        assert response.isclosed() and response.connection is None  # read or closed, and back in the pool


# --- secrets never leak -------------------------------------------------------------------

SECRET_KEY = "K3y-ShouldNeverLeak-0f9e8d7c"
SECRET_MOBILE = "13912345678"
SECRET_CONTENT = "918273"


@pytest.mark.parametrize(
    "behaviour",
    [
        respond(b"", 500),
        respond(b"", 302, {"Location": "http://127.0.0.1:1/?k=" + SECRET_KEY}),
        respond(b"<SubmitResult><code>x"),
        respond(xml_reply(0, "提交失败", "0")),
        respond(xml_reply(405, "用户名或密码不正确", "0")),
        respond(xml_reply(4030, f"号码{SECRET_MOBILE}已被列入黑名单({SECRET_CONTENT})", "0")),
        respond(b"x" * 100_000),
        _reset_without_reply,
    ],
)
@pytest.mark.parametrize("password_mode", ["dynamic", "apikey"])
def test_secrets_never_in_errors_logs_or_repr(
    server: Server,
    session: Session,
    caplog: pytest.LogCaptureFixture,
    behaviour: Behaviour,
    password_mode: str,
) -> None:
    server.behaviour = behaviour
    client = IhuyiClient(server.url, APIID, SECRET_KEY, password_mode=password_mode, session=session)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(IhuyiError) as caught:
        client.submit(SECRET_MOBILE, SECRET_CONTENT)
    exc = caught.value
    exposed = [str(exc), repr(exc), exc.msg, repr(client), caplog.text]
    # No chained exception shows in a traceback: a requests exception carries the form body.
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    for text in exposed:
        for secret in (SECRET_KEY, SECRET_MOBILE, SECRET_CONTENT):
            assert secret not in text
    assert repr(client) == f"IhuyiClient(api_url={server.url!r}, apiid='cf_demo', password_mode={password_mode!r})"


ODD_KEY = "K3y/with+plus&eq=ShouldNeverLeak"  # changed by form encoding


@pytest.mark.parametrize("password_mode", ["dynamic", "apikey"])
def test_msg_is_scrubbed_of_every_secret_however_encoded(
    server: Server, session: Session, password_mode: str
) -> None:
    def echo(handler: BaseHTTPRequestHandler) -> None:
        # A gateway echoing the form body it was sent (percent-encoded), and the APIKEY as is.
        sent = server.seen[-1].form
        raw = "&".join(f"{k}={requests.utils.quote(v, safe='')}" for k, v in sent.items())
        respond(xml_reply(4030, f"{raw} key={ODD_KEY} mobile={sent['mobile']}", "0").replace(b"&", b"&amp;"))(handler)

    server.behaviour = echo
    client = IhuyiClient(server.url, APIID, ODD_KEY, password_mode=password_mode, session=session)
    with pytest.raises(PermanentError) as caught:
        client.submit(SECRET_MOBILE, SECRET_CONTENT)
    password = server.seen[-1].form["password"]
    for secret in {ODD_KEY, password, requests.utils.quote(ODD_KEY, safe=""), SECRET_MOBILE, SECRET_CONTENT}:
        assert secret not in caught.value.msg
    assert "password=***" in caught.value.msg and "key=***" in caught.value.msg


def test_msg_masks_anything_like_a_mobile_and_is_capped(
    server: Server, make_client: Callable[..., IhuyiClient]
) -> None:
    server.behaviour = respond(xml_reply(4030, "号码13712345678,+8613612345678,8615912345678 已被列入黑名单 " + "x" * 1000, "0"))
    with pytest.raises(PermanentError) as caught:
        make_client().submit(MOBILE, CONTENT)
    assert caught.value.msg.startswith("号码***,***,*** 已被列入黑名单 xxx")
    assert len(caught.value.msg) == 200


# --- the shared session ---------------------------------------------------------------------


def test_shared_session_is_pooled_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    session = shared_session()
    assert shared_session() is session
    for prefix in ("http://", "https://"):
        pool = session.manager_for(prefix + "api.voice.ihuyi.com/").connection_from_url(prefix + "api.voice.ihuyi.com/")
        assert type(pool).__name__.startswith("Watched")  # cut at the deadline
        assert pool.pool.maxsize == 100
        assert pool.retries.total is False
    real_pid = transport.os.getpid()
    monkeypatch.setattr(transport.os, "getpid", lambda: real_pid + 1)  # as if forked
    child = shared_session()
    assert child is not session
    assert shared_session() is child


def test_the_environment_is_read_once_per_host_and_honoured(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    server.behaviour = respond(DOC_SUBMIT_OK)
    reads = []
    getproxies = transport.urllib.request.getproxies
    monkeypatch.setattr(transport.urllib.request, "getproxies", lambda: (reads.append(1), getproxies())[1])
    with new_session() as session:
        client = IhuyiClient(server.url, APIID, APIKEY, session=session)
        for _ in range(3):
            client.submit(MOBILE, CONTENT)
    assert len(reads) == 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed}")  # a proxy that is not there
    with new_session() as session, pytest.raises(TransientError, match="ProxyError"):
        IhuyiClient(server.url, APIID, APIKEY, session=session).submit(MOBILE, CONTENT)


def test_client_without_a_session_uses_the_shared_one(server: Server) -> None:
    server.behaviour = respond(DOC_SUBMIT_OK)
    client = IhuyiClient(server.url, APIID, APIKEY)
    assert client.submit(MOBILE, CONTENT).voiceid == "60495654"


# --- https ----------------------------------------------------------------------------------


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[Server]:
    """A Server speaking TLS with a self-signed certificate for 127.0.0.1 (no CA trusts it)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server = Server()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.behaviour = respond(DOC_SUBMIT_OK)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_https_checks_the_certificate(https_server: Server, session: Session) -> None:
    url = https_server.url.replace("http://", "https://")
    with pytest.raises(TransientError, match="SSLError"):
        IhuyiClient(url, APIID, APIKEY, session=session, connect_timeout=2, read_timeout=2).submit(MOBILE, CONTENT)
    assert https_server.seen == []  # nothing was sent to a server that could not prove who it is
