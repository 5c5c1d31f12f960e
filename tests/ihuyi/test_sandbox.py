"""The ihuyi simulator, over real HTTP on loopback."""
from __future__ import annotations

import hashlib
import io
import json
import re
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from ihuyi.sandbox import PAGE_CALLS, Sandbox

APIID, APIKEY = "C12345678", "0123456789abcdef0123456789abcdef"
OTHER, OTHER_KEY = "C87654321", "fedcba9876543210fedcba9876543210"
MOBILE = "13800138000"
BALANCE = 5

SUCCESS_XML = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<SubmitResult xmlns="http://106.ihuyi.com/">\n'
    "<code>2</code>\n"
    "<msg>提交成功</msg>\n"
    "<voiceid>{}</voiceid>\n"
    "</SubmitResult>"
)


def md5(*parts: str) -> str:
    return hashlib.md5("".join(parts).encode()).hexdigest()


def now() -> str:
    return str(int(time.time()))


@pytest.fixture(scope="module")
def server():
    with Sandbox({APIID: APIKEY, OTHER: OTHER_KEY}, slow_ms=300, initial_balance=BALANCE) as sb:
        yield sb


@pytest.fixture
def sb(server: Sandbox) -> Sandbox:
    server.reset()
    return server


def submit(sb: Sandbox, mobile: str = MOBILE, content: str = "1234", *, account: str = APIID,
           apikey: str = APIKEY, password: str | None = None, stamp: str | None = None,
           fmt: str | None = None, http=requests, **kw) -> requests.Response:
    """A Submit with a dynamic password unless ``password`` is given."""
    stamp = now() if stamp is None else stamp
    form = {"account": account, "mobile": mobile, "content": content, "time": stamp,
            "password": md5(account, apikey, mobile, content, stamp) if password is None else password}
    if fmt:
        form["format"] = fmt
    return http.post(sb.url + "?method=Submit", data=form, timeout=kw.pop("timeout", 5), **kw)


def getnum(sb: Sandbox, fmt: str | None = None, account: str = APIID) -> requests.Response:
    stamp = now()
    params = {"method": "GetNum", "account": account, "time": stamp,
              "password": md5(account, APIKEY, stamp)}
    if fmt:
        params["format"] = fmt
    return requests.get(sb.url, params=params, timeout=5)


def code_of(reply: requests.Response) -> int:
    return int(ET.fromstring(reply.content).find("{http://106.ihuyi.com/}code").text)


def balance(sb: Sandbox) -> int:
    return int(getnum(sb, "json").json()["num"])


def control(sb: Sandbox, path: str, body: dict | None = None) -> requests.Response:
    base = sb.url.split("/webservice/")[0]
    if body is None and path == "calls":
        return requests.get(f"{base}/_sandbox/calls", timeout=5)
    return requests.post(f"{base}/_sandbox/{path}", data=json.dumps(body or {}), timeout=5)


# -- replies, byte for byte ---------------------------------------------------------------

def test_exact_success_bytes_xml_then_json():
    with Sandbox({APIID: APIKEY}) as fresh:
        xml = submit(fresh)
        js = submit(fresh, fmt="json")
    assert xml.status_code == 200
    assert xml.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert xml.content == SUCCESS_XML.format(60495654).encode()
    assert js.headers["Content-Type"] == "application/json"
    assert js.content == '{"code": 2, "msg": "提交成功", "voiceid": "60495655"}'.encode()


def test_exact_failure_bytes(sb):
    xml = submit(sb, password="wrong")
    assert xml.content == (
        '<?xml version="1.0" encoding="utf-8"?>\n<SubmitResult xmlns="http://106.ihuyi.com/">\n'
        "<code>405</code>\n<msg>用户名或密码不正确</msg>\n<voiceid>0</voiceid>\n</SubmitResult>"
    ).encode()
    assert submit(sb, password="wrong", fmt="json").json() == {
        "code": 405, "msg": "用户名或密码不正确", "voiceid": "0"}


def test_getnum_bytes_and_balance_decrement(sb):
    assert getnum(sb).content == (
        '<?xml version="1.0" encoding="utf-8"?>\n<GetNumResult xmlns="http://106.ihuyi.com/">\n'
        f"<code>2</code>\n<msg>查询成功</msg>\n<num>{BALANCE}</num>\n</GetNumResult>"
    ).encode()
    ids = [int(submit(sb, fmt="json").json()["voiceid"]) for _ in range(2)]
    assert ids[1] == ids[0] + 1
    assert getnum(sb, "json").json() == {"code": 2, "msg": "查询成功", "num": str(BALANCE - 2)}


def test_get_with_query_parameters(sb):
    stamp = now()
    reply = requests.get(sb.url, params={
        "method": "Submit", "account": APIID, "mobile": MOBILE, "content": "123456", "time": stamp,
        "password": md5(APIID, APIKEY, MOBILE, "123456", stamp)}, timeout=5)
    assert code_of(reply) == 2


# -- passwords ----------------------------------------------------------------------------

def test_apikey_password_accepted_without_time(sb):
    assert code_of(submit(sb, password=APIKEY, stamp="")) == 2


@pytest.mark.parametrize("case", ["wrong", "stale", "future", "absent time", "short time",
                                  "other account's key", "unknown account"])
def test_bad_passwords_are_405(sb, case):
    t = int(time.time())
    kw = {
        "wrong": {"password": md5("nonsense")},
        "stale": {"stamp": str(t - 601)},
        "future": {"stamp": str(t + 610)},  # a second may pass before the sandbox reads its clock
        "absent time": {"password": md5(APIID, APIKEY, MOBILE, "1234", ""), "stamp": ""},
        "short time": {"stamp": "123456789"},
        "other account's key": {"apikey": OTHER_KEY},
        "unknown account": {"account": "C00000000"},
    }[case]
    assert code_of(submit(sb, **kw)) == 405
    assert balance(sb) == BALANCE


def test_dynamic_password_within_the_window(sb):
    assert code_of(submit(sb, stamp=str(int(time.time()) - 590))) == 2


# -- validation ---------------------------------------------------------------------------

@pytest.mark.parametrize("kw, code", [
    ({"account": "", "password": ""}, 401),
    ({"password": ""}, 402),
    ({"mobile": ""}, 403),
    ({"content": ""}, 404),
    ({"mobile": "12800138000"}, 406),
    ({"mobile": "1380013800"}, 406),
    ({"mobile": "+8613800138000"}, 406),
    ({"content": "123"}, 4070),
    ({"content": "1234567"}, 4070),
    ({"content": "12a4"}, 4070),
    ({"content": "１２３４"}, 4070),
    ({"content": "你好世界"}, 4070),
])
def test_validation_codes(sb, kw, code):
    assert code_of(submit(sb, **kw)) == code
    assert balance(sb) == BALANCE


@pytest.mark.parametrize("code, msg", [(4081, "同一手机号码一分钟之内发送频率不能超过1条"), (4052, "访问ip与备案ip不符"),
                                       (4086, "发送失败，同一个手机号码发送频率太频繁")])
def test_documented_refusals_have_ihuyis_message(sb, code, msg):
    assert submit(sb, f"1990000{code:04d}", fmt="json").json() == {"code": code, "msg": msg, "voiceid": "0"}


def test_unknown_code_message(sb):
    assert submit(sb, "19900009999", fmt="json").json() == {
        "code": 9999, "msg": "未知错误", "voiceid": "0"}


# -- magic numbers ------------------------------------------------------------------------

@pytest.mark.parametrize("mobile, code", [
    ("19900000405", 405), ("19900004051", 4051), ("19900000000", 0), ("19900000408", 408),
    ("19900004030", 4030), ("19900009999", 9999), ("19900000002", 2), ("19900000400", 400), ("19900004052", 4052),
    *((f"1990000{code}", code) for code in range(4080, 4087)),
])
def test_fixed_code_numbers(sb, mobile, code):
    assert code_of(submit(sb, mobile)) == code
    assert code_of(submit(sb, mobile)) == code
    assert balance(sb) == BALANCE - (2 if code == 2 else 0)


def test_fault_then_success_counts_per_number(sb):
    replies = [code_of(submit(sb, "19901020000")) for _ in range(4)]
    assert replies == [0, 0, 2, 2]
    assert code_of(submit(sb, "19901020001")) == 0  # its own counter
    assert [c["reply"] for c in sb.calls()] == [0, 0, 2, 2, 0]
    assert balance(sb) == BALANCE - 2
    sb.reset()
    assert code_of(submit(sb, "19901020000")) == 0


def test_http500_then_success(sb):
    first = submit(sb, "19901110000")
    assert first.status_code == 500 and first.headers["Content-Type"].startswith("text/html")
    assert submit(sb, "19901110000").status_code == 200


def test_always_http500(sb):
    for _ in range(3):
        assert submit(sb, "19902100000").status_code == 500
    assert [c["reply"] for c in sb.calls()] == ["http500"] * 3


def test_reset_connection(sb):
    with pytest.raises(requests.ConnectionError):
        submit(sb, "19902200000")
    assert sb.calls()[-1]["reply"] == "reset"
    assert code_of(submit(sb)) == 2  # the server is fine afterwards


def test_garbage_body(sb):
    reply = submit(sb, "19902400000")
    assert reply.status_code == 200
    with pytest.raises(ET.ParseError):
        ET.fromstring(reply.content)
    with pytest.raises(ValueError):
        json.loads(reply.content)
    assert sb.calls()[-1]["reply"] == "garbage"


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_truncated_body(sb, fmt):
    reply = submit(sb, "19902500000", fmt=fmt)
    whole = (SUCCESS_XML.format(60495654) if fmt == "xml"
             else '{"code": 2, "msg": "提交成功", "voiceid": "60495654"}').encode()
    assert reply.status_code == 200
    assert reply.content == whole[: len(whole) // 2]
    with pytest.raises((ET.ParseError, ValueError)):
        ET.fromstring(reply.content) if fmt == "xml" else json.loads(reply.content)
    assert balance(sb) == BALANCE


def test_slow_reply_times_out_but_is_placed(sb):
    with pytest.raises(requests.Timeout):
        submit(sb, "19902300000", timeout=(1, 0.1))
    assert sb.calls()[-1]["reply"] == "slow"
    time.sleep(0.4)
    assert balance(sb) == BALANCE - 1


# -- account state ------------------------------------------------------------------------

def test_zero_balance_and_recovery(sb):
    sb.set_account(APIID, balance=1)
    assert code_of(submit(sb)) == 2
    assert code_of(submit(sb)) == 4051
    assert code_of(submit(sb, account=OTHER, apikey=OTHER_KEY)) == 2  # balances are per account
    sb.set_account(APIID, balance=1)
    assert code_of(submit(sb)) == 2


def test_zero_balance_and_recovery_over_http(sb):
    assert control(sb, "account", {"apiid": APIID, "balance": 0}).json() == {"ok": True}
    assert code_of(submit(sb)) == 4051
    assert getnum(sb, "json").json()["num"] == "0"
    control(sb, "account", {"apiid": APIID, "balance": 3})
    assert code_of(submit(sb)) == 2
    assert balance(sb) == 2


def test_frozen(sb):
    sb.set_account(APIID, frozen=True)
    assert code_of(submit(sb)) == 4050
    assert code_of(getnum(sb)) == 4050
    assert code_of(submit(sb, "19900000408")) == 4050  # before the magic numbers
    control(sb, "account", {"apiid": APIID, "frozen": False})
    assert code_of(submit(sb)) == 2


@pytest.mark.parametrize("forced", [408, 400, 4052])
def test_forced_code(sb, forced):
    sb.set_account(APIID, forced_code=forced)
    assert code_of(submit(sb)) == forced
    assert code_of(getnum(sb)) == (forced if forced in (400, 4052) else 2)  # the caller's IP is checked on every method
    sb.set_account(APIID, balance=3)  # leaves the forced code alone
    assert code_of(submit(sb)) == forced
    sb.set_account(APIID, forced_code=None)
    assert code_of(submit(sb)) == 2


def test_forced_code_over_http(sb):
    control(sb, "account", {"apiid": APIID, "forced_code": 408})
    control(sb, "account", {"apiid": APIID, "balance": 9})
    assert code_of(submit(sb)) == 408
    control(sb, "account", {"apiid": APIID, "forced_code": None})
    assert code_of(submit(sb)) == 2


def test_control_rejects_bad_requests(sb):
    assert control(sb, "account", {"apiid": "nobody", "balance": 1}).status_code == 404
    assert control(sb, "account", {"balance": 1}).status_code == 400
    assert control(sb, "account", {"apiid": APIID, "balance": "1"}).status_code == 400
    with pytest.raises(KeyError):
        sb.set_account("nobody", balance=1)
    base = sb.url.split("/webservice/")[0]
    assert requests.get(base + "/elsewhere", timeout=5).status_code == 404
    assert requests.get(sb.url + "?method=Nope", timeout=5).status_code == 404


def test_reset_restores_everything(sb):
    sb.set_account(APIID, balance=0, frozen=True, forced_code=408)
    submit(sb)
    assert control(sb, "reset").json() == {"ok": True}
    assert sb.calls() == []
    assert code_of(submit(sb)) == 2
    assert balance(sb) == BALANCE - 1


# -- the clock ----------------------------------------------------------------------------

def date_of(reply: requests.Response) -> float:
    return parsedate_to_datetime(reply.headers["Date"]).timestamp()


def test_replies_are_dated_by_the_sandboxs_clock(sb):
    assert abs(date_of(submit(sb)) - time.time()) <= 1.5
    assert abs(date_of(getnum(sb)) - time.time()) <= 1.5


def test_a_skewed_sandbox_refuses_the_dynamic_password_with_a_skewed_date(sb):
    sb.clock_offset = 3600.0
    try:
        refused = submit(sb)
        assert code_of(refused) == 405 and code_of(getnum(sb)) == 405
        assert abs(date_of(refused) - (time.time() + 3600)) <= 1.5
        assert code_of(submit(sb, stamp=str(int(time.time()) + 3600))) == 2  # a client on its clock gets through
        assert code_of(submit(sb, password=APIKEY, stamp="")) == 2  # the APIKEY has no time to be wrong
    finally:
        sb.clock_offset = 0.0


# -- recording ----------------------------------------------------------------------------

def test_calls_are_recorded(sb):
    before = time.time()
    submit(sb, content="8765")
    getnum(sb)
    submit(sb, "19900000405")
    after = time.time()
    calls = sb.calls()
    assert [(c["method"], c["account"], c["mobile"], c["content"], c["reply"]) for c in calls] == [
        ("Submit", APIID, MOBILE, "8765", 2), ("Submit", APIID, "19900000405", "1234", 405)]
    assert all(before <= c["at"] <= after for c in calls)
    assert [c["method"] for c in sb.calls(None)] == ["Submit", "GetNum", "Submit"]
    assert [c["method"] for c in sb.calls("GetNum")] == ["GetNum"]
    over_http = control(sb, "calls").json()
    assert over_http == calls
    base = sb.url.split("/webservice/")[0]
    assert len(requests.get(base + "/_sandbox/calls?method=all", timeout=5).json()) == 3


def test_a_body_cut_short_is_neither_handled_nor_recorded(sb):
    url = urlsplit(sb.url)
    with socket.create_connection((url.hostname, url.port), timeout=5) as conn:
        conn.sendall(f"POST {url.path}?method=Submit HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n"
                     f"Content-Type: application/x-www-form-urlencoded\r\n\r\naccount={APIID}&mobile=138".encode())
        conn.shutdown(socket.SHUT_WR)
        assert conn.recv(1024) == b""  # closed without a reply
    assert sb.calls(None) == []


# -- the phone ----------------------------------------------------------------------------

ROW = re.compile(r'<tr class="call rang-(yes|no)"><td>[0-9:]{8}</td><td class="mobile">(.*?)</td>'
                 r'<td class="digits">(.*?)</td><td class="outcome">(.*?)</td></tr>')


def phone_page(sb: Sandbox) -> requests.Response:
    return requests.get(sb.url.split("/webservice/")[0] + "/", timeout=5)


def test_the_phone_page_lists_each_submit_with_its_digits_newest_first(sb):
    empty = phone_page(sb)
    assert empty.status_code == 200 and empty.headers["Content-Type"] == "text/html; charset=utf-8"
    assert ROW.findall(empty.text) == [] and "No calls yet." in empty.text
    submit(sb, content="4821")
    getnum(sb)  # not a call: not on the phone
    submit(sb, "19900004051", "123456")
    submit(sb, "13900139000", "<b>&'\"")
    page = phone_page(sb).text
    assert '<meta http-equiv="refresh" content="2">' in page
    assert ROW.findall(page) == [
        ("no", "13900139000", "&lt;b&gt;&amp;&#x27;&quot;", "no call (code 4070 语音验证码内容必须为4-6位数字)"),
        ("no", "19900004051", "1 2 3 4 5 6", "no call (code 4051 剩余条数不足)"),
        ("yes", MOBILE, "4 8 2 1", "rang (code 2 提交成功)"),
    ]
    assert "<b>" not in page


def test_the_phone_page_escapes_everything_and_shows_the_newest_calls_only(sb):
    sb.set_account(APIID, balance=PAGE_CALLS + 10)
    submit(sb, "<script>alert(1)</script>", "1234", password=APIKEY)
    for n in range(PAGE_CALLS):
        submit(sb, f"138{n:08d}", "1234", password=APIKEY)
    rows = ROW.findall(phone_page(sb).text)
    assert len(rows) == PAGE_CALLS and rows[0][1] == f"138{PAGE_CALLS - 1:08d}" and rows[-1][1] == "13800000000"
    sb.reset()
    submit(sb, "<b>1</b>", "<i>", password=APIKEY)
    submit(sb, "<script>alert(1)</script>", "1234", password=APIKEY)
    assert [row[1:3] for row in ROW.findall(phone_page(sb).text)] == [
        ("&lt;script&gt;alert(1)&lt;/sc…", "1 2 3 4"),  # cut at 20 characters, then escaped
        ("&lt;b&gt;1&lt;/b&gt;", "&lt;i&gt;"),
    ]


def test_the_phone_console_has_a_line_for_each_submit():
    console = io.StringIO()
    with Sandbox({APIID: APIKEY}, phone=console, initial_balance=1) as phone:
        submit(phone, content="482159")
        getnum(phone)
        submit(phone, "13900139000", "1234")  # the balance is spent
        with pytest.raises(requests.ConnectionError):
            submit(phone, "19902200000", "1234")  # a connection reset: no reply
        submit(phone, "1380\x1b[2J", "1234")
    lines = console.getvalue().splitlines()
    assert [line[8:] for line in lines] == [
        f"  {MOBILE}  reads 4 8 2 1 5 9  rang (code 2 提交成功)",
        "  13900139000  reads 1 2 3 4      no call (code 4051 剩余条数不足)",
        "  19902200000  reads 1 2 3 4      no call (fault reset)",
        "  1380\\x1b[2J  reads 1 2 3 4      no call (code 406 手机格式不正确)",  # a terminal escape, shown escaped
    ]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", line[:8]) for line in lines)


# -- the server ---------------------------------------------------------------------------

def test_keep_alive_reuses_one_connection(sb):
    sb.set_account(APIID, balance=20)
    before = sb._connections
    with requests.Session() as session:
        for _ in range(20):
            assert code_of(submit(sb, password=APIKEY, http=session)) == 2
    assert sb._connections - before == 1


def test_latency():
    with Sandbox({APIID: APIKEY}, latency_ms=100) as slow:
        started = time.monotonic()
        assert code_of(submit(slow)) == 2
        assert time.monotonic() - started >= 0.1


def test_stop_drops_keep_alive_connections():
    with requests.Session() as session:
        sandbox = Sandbox({APIID: APIKEY}).start()
        url = sandbox.url
        assert code_of(submit(sandbox, http=session)) == 2
        sandbox.stop()
        with pytest.raises(requests.ConnectionError):
            session.post(url + "?method=Submit", data={"account": APIID}, timeout=5)


def test_serve_until_sigterm():
    script = ("from ihuyi.sandbox import serve; "
              f"serve({{{APIID!r}: {APIKEY!r}}}, '127.0.0.1', 0, 0, 15000, 7)")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        line = proc.stdout.readline()
        assert line.startswith("ihuyi sandbox listening on http://127.0.0.1:")
        url = line.split(" on ")[1].strip()
        assert url.endswith("/webservice/voice.php")
        reply = requests.post(url + "?method=Submit", data={
            "account": APIID, "password": APIKEY, "mobile": MOBILE, "content": "1234"}, timeout=5)
        assert code_of(reply) == 2
        assert proc.stdout.readline() == f"its phone: {url.removesuffix('/webservice/voice.php')}/ and a line here for every Submit\n"
        assert proc.stdout.readline()[8:] == f"  {MOBILE}  reads 1 2 3 4      rang (code 2 提交成功)\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        proc.kill()
