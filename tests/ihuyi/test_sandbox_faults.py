"""The sandbox's hostile faults (6 drip, 7 hang, 8 huge code, 9 echo), read off a raw socket."""
from __future__ import annotations

import re
import socket
import time
import xml.etree.ElementTree as ET
from typing import Iterator
from urllib.parse import urlencode, urlsplit

import pytest
import requests

from ihuyi.sandbox import Sandbox
from tests.support import wait_for

APIID, APIKEY = "C12345678", "0123456789abcdef0123456789abcdef"
BALANCE = 50
NS = "{http://106.ihuyi.com/}"


def form(mobile: str, fmt: str = "xml") -> dict[str, str]:
    return {"account": APIID, "password": APIKEY, "mobile": mobile, "content": "1234", "format": fmt}


def success(fmt: str = "xml") -> bytes:
    """The bytes of the sandbox's first success reply."""
    with Sandbox({APIID: APIKEY}) as fresh:
        return requests.post(fresh.url + "?method=Submit", data=form("13800138000", fmt), timeout=5).content


def send(sb: Sandbox, mobile: str) -> socket.socket:
    """A Submit on a raw socket, to watch its reply arrive."""
    url, body = urlsplit(sb.url), urlencode(form(mobile))
    conn = socket.create_connection((url.hostname, url.port), timeout=5)
    conn.sendall(f"POST {url.path}?method=Submit HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                 f"Content-Type: application/x-www-form-urlencoded\r\n\r\n{body}".encode())
    return conn


def received(conn: socket.socket, seconds: float, upto: int | None = None) -> bytes:
    """What arrives within ``seconds``: less if the peer closes or ``upto`` bytes came."""
    data, until = b"", time.monotonic() + seconds
    while (left := until - time.monotonic()) > 0 and (upto is None or len(data) < upto):
        conn.settimeout(left)
        try:
            chunk = conn.recv(4096)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


def head_and_rest(conn: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        assert chunk, "closed before the headers ended"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def balance(sb: Sandbox) -> int:
    return int(requests.post(sb.url + "?method=GetNum", data={**form(""), "format": "json"}, timeout=5).json()["num"])


@pytest.fixture(scope="module")
def server() -> Iterator[Sandbox]:
    with Sandbox({APIID: APIKEY}, drip_ms=100, slow_ms=600, initial_balance=BALANCE) as box:
        yield box


@pytest.fixture
def sb(server: Sandbox) -> Sandbox:
    server.reset()
    return server


def test_drip_sends_the_headers_then_the_body_a_byte_every_drip_ms(sb: Sandbox) -> None:
    with send(sb, "19902600000") as conn:
        head, rest = head_and_rest(conn)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert f"Content-Length: {len(success())}".encode() in head.split(b"\r\n")
        assert len(rest + received(conn, 0.45)) <= 5  # at most one byte per 100 ms
    assert [c["reply"] for c in sb.calls()] == ["drip"]
    assert balance(sb) == BALANCE - 1  # the call is placed


def test_drip_headers_drips_from_the_status_line_on() -> None:
    with Sandbox({APIID: APIKEY}, drip_ms=100, drip_headers=True) as slow, send(slow, "19902600000") as conn:
        first = received(conn, 0.45)
        assert 1 <= len(first) <= 5 and b"HTTP/1.1 200 OK\r\n".startswith(first)


@pytest.mark.parametrize("drip_headers", [False, True])
@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_a_drip_ends_in_the_whole_reply(drip_headers: bool, fmt: str) -> None:
    with Sandbox({APIID: APIKEY}, drip_ms=1, drip_headers=drip_headers) as fast:
        reply = requests.post(fast.url + "?method=Submit", data=form("19902600000", fmt), timeout=5)
    assert reply.status_code == 200 and reply.content == success(fmt)


def test_hang_sends_the_headers_then_nothing_for_slow_ms(sb: Sandbox) -> None:
    started = time.monotonic()
    length = len(success())
    with send(sb, "19902700000") as conn:
        head, rest = head_and_rest(conn)
        assert f"Content-Length: {length}".encode() in head.split(b"\r\n")
        assert rest + received(conn, 0.3) == b""
        body = received(conn, 2, upto=length)
    assert time.monotonic() - started >= 0.6
    assert len(body) == length and ET.fromstring(body).find(NS + "code").text == "2"
    assert [c["reply"] for c in sb.calls()] == ["hang"]
    assert balance(sb) == BALANCE - 1


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_huge_code(sb: Sandbox, fmt: str) -> None:
    reply = requests.post(sb.url + "?method=Submit", data=form("19902800000", fmt), timeout=5)
    assert reply.status_code == 200
    if fmt == "xml":
        assert ET.fromstring(reply.content).find(NS + "code").text == "9" * 5000
    else:  # too long for json.loads (int()'s 4,300-digit limit): read the text
        assert re.fullmatch(r'\{"code": (9{5000}), "msg": "未知错误", "voiceid": "0"\}', reply.text)
    assert [c["reply"] for c in sb.calls()] == ["huge_code"]
    assert balance(sb) == BALANCE


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_echo_answers_9999_with_the_raw_request(sb: Sandbox, fmt: str) -> None:
    sent = urlencode({**form("19902900000", fmt), "note": "<&>"})  # XML-special characters too
    reply = requests.post(sb.url + "?method=Submit", data=sent, timeout=5,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    if fmt == "xml":
        root = ET.fromstring(reply.content)
        assert (root.find(NS + "code").text, root.find(NS + "msg").text) == ("9999", sent)
    else:
        assert reply.json() == {"code": 9999, "msg": sent, "voiceid": "0"}
    assert f"password={APIKEY}" in sent
    assert [c["reply"] for c in sb.calls()] == ["echo"]


def test_echo_of_a_get_is_its_query(sb: Sandbox) -> None:
    reply = requests.get(sb.url, params={"method": "Submit", **form("19902900000", "json")}, timeout=5)
    assert reply.json()["msg"] == urlsplit(reply.url).query


@pytest.mark.parametrize("fault, name", [(8, "huge_code"), (9, "echo")])
def test_new_faults_then_success(sb: Sandbox, fault: int, name: str) -> None:
    mobile = f"19901{fault}10000"
    for _ in range(2):
        requests.post(sb.url + "?method=Submit", data=form(mobile), timeout=5)
    assert [c["reply"] for c in sb.calls()] == [name, 2]


@pytest.mark.parametrize("mobile", ["19902600000", "19902700000"], ids=["drip", "hang"])
def test_stop_ends_a_reply_in_progress_at_once(mobile: str) -> None:
    sandbox = Sandbox({APIID: APIKEY}, drip_ms=60_000, slow_ms=60_000).start()
    with send(sandbox, mobile) as conn:
        head_and_rest(conn)
        started = time.monotonic()
        sandbox.stop()
        assert time.monotonic() - started < 1
        assert received(conn, 2) == b"" and time.monotonic() - started < 1
    wait_for(lambda: not sandbox._open, 1, what="the reply's thread to end")
