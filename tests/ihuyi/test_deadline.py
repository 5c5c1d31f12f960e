"""The client's total deadline and ``sent``, against the sandbox's hostile faults over real HTTP."""
from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests

from ihuyi.client import IhuyiClient
from ihuyi.exceptions import IhuyiError, PermanentError, TransientError
from ihuyi.sandbox import Sandbox
from ihuyi.transport import Session
from ihuyi.watchdog import WATCHDOG

APIID, APIKEY = "C12345678", "0123456789abcdef0123456789abcdef"
ODD_KEY = "K3y/with+plus&eq=ShouldNeverLeak"  # changed by form encoding
MOBILE, CONTENT = "13800138000", "4821"
DRIP, DRIP_HEADERS, HANG, SLOW = "19902600000", "19902600001", "19902700000", "19902300000"
HUGE_CODE, ECHO, CODE_0, HTTP500 = "19902800000", "19902900000", "19900000000", "19902100000"
#: How long after its deadline a call may still take to return.
SLACK = 0.5
Make = Callable[..., IhuyiClient]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    # A byte every 200 ms: a reply takes half a minute, longer than any deadline here.
    with Sandbox({APIID: APIKEY, "odd": ODD_KEY}, drip_ms=200, slow_ms=30_000, initial_balance=10_000) as box:
        yield box


@pytest.fixture(scope="module")
def header_dripper() -> Iterator[Sandbox]:
    with Sandbox({APIID: APIKEY}, drip_ms=200, drip_headers=True) as box:
        yield box


@pytest.fixture
def client(fresh_sandbox: Sandbox, session: Session) -> Make:
    def make(url: str = fresh_sandbox.url, **kwargs: object) -> IhuyiClient:
        return IhuyiClient(url, APIID, APIKEY, session=session, **kwargs)

    return make


def timed(call: Callable[[], object]) -> tuple[IhuyiError, float]:
    started = time.monotonic()
    with pytest.raises(IhuyiError) as caught:
        call()
    return caught.value, time.monotonic() - started


# -- the total deadline ---------------------------------------------------------------------


@pytest.mark.parametrize("mobile", [DRIP, HANG], ids=["body dripping", "silent after headers"])
def test_a_reply_still_arriving_is_abandoned_at_the_deadline(
    client: Make, fresh_sandbox: Sandbox, mobile: str
) -> None:
    exc, took = timed(lambda: client(total_timeout=1.0).submit(mobile, CONTENT))
    assert type(exc) is TransientError
    assert str(exc) == "ihuyi Submit to 127.0.0.1 failed: no complete reply by the 1 s deadline"
    assert exc.sent is True  # the sandbox placed the call
    assert 1.0 <= took < 1.0 + SLACK
    assert [c["reply"] for c in fresh_sandbox.calls()] == ["drip" if mobile == DRIP else "hang"]


def test_headers_dripping_are_abandoned_at_the_deadline(header_dripper: Sandbox, session: Session) -> None:
    client = IhuyiClient(header_dripper.url, APIID, APIKEY, total_timeout=1.0, session=session)
    exc, took = timed(lambda: client.submit(DRIP_HEADERS, CONTENT))
    assert type(exc) is TransientError and "1 s deadline" in str(exc) and exc.sent is True
    assert 1.0 <= took < 1.0 + SLACK


def test_connecting_is_abandoned_at_the_deadline(session: Session) -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, connect() hangs.
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        queued = socket.create_connection(("127.0.0.1", port))
        client = IhuyiClient(f"http://127.0.0.1:{port}/webservice/voice.php", APIID, APIKEY,
                             connect_timeout=30, total_timeout=1.0, session=session)
        try:
            exc, took = timed(lambda: client.submit(MOBILE, CONTENT))
        finally:
            queued.close()
    assert type(exc) is TransientError and "1 s deadline" in str(exc)
    assert exc.sent is False  # never connected: nothing was sent
    assert 1.0 <= took < 1.0 + SLACK


def test_the_default_total_is_connect_plus_read(client: Make) -> None:
    assert client(connect_timeout=0.25, read_timeout=0.75).total_timeout == 1.0
    exc, took = timed(lambda: client(connect_timeout=0.25, read_timeout=0.75).submit(DRIP, CONTENT))
    assert "1 s deadline" in str(exc) and 1.0 <= took < 1.0 + SLACK


@pytest.mark.parametrize("total, timeout", [(5.0, 0.5), (0.5, 5.0)], ids=["shortens", "never lengthens"])
def test_timeout_can_only_shorten_the_total(client: Make, total: float, timeout: float) -> None:
    exc, took = timed(lambda: client(total_timeout=total).submit(DRIP, CONTENT, timeout=timeout))
    assert "0.5 s deadline" in str(exc)
    assert 0.5 <= took < 0.5 + SLACK


@pytest.mark.parametrize("timeout", [0, -3.0])
def test_no_time_left_sends_nothing(client: Make, fresh_sandbox: Sandbox, timeout: float) -> None:
    exc, took = timed(lambda: client().submit(MOBILE, CONTENT, timeout=timeout))
    assert type(exc) is TransientError and exc.sent is False and "no time left" in str(exc)
    assert fresh_sandbox.calls(None) == []


@pytest.mark.parametrize("total", [0, -1.0, float("inf"), float("nan")])
def test_a_total_timeout_must_be_positive_and_finite(total: float) -> None:
    with pytest.raises(ValueError, match="total_timeout"):
        IhuyiClient("http://127.0.0.1:1/", APIID, APIKEY, total_timeout=total)


def test_a_session_that_cannot_cut_is_refused() -> None:
    with requests.Session() as plain, pytest.raises(ValueError, match="new_session"):
        IhuyiClient("http://127.0.0.1:1/", APIID, APIKEY, session=plain)  # type: ignore[arg-type]


# -- the watchdog leaks nothing -----------------------------------------------------------------


def test_a_cut_connection_is_not_reused_and_the_client_goes_on(client: Make, fresh_sandbox: Sandbox) -> None:
    quick = client(total_timeout=0.3)
    first = fresh_sandbox._connections
    quick.submit(MOBILE, CONTENT)
    quick.submit(MOBILE, CONTENT)
    assert fresh_sandbox._connections - first == 1  # kept alive between healthy calls
    with pytest.raises(TransientError, match="deadline"):
        quick.submit(DRIP, CONTENT)
    assert quick.submit(MOBILE, CONTENT).code == 2
    assert fresh_sandbox._connections - first == 2  # a fresh connection after the cut


def test_the_watchdog_is_empty_after_many_calls(client: Make, fresh_sandbox: Sandbox) -> None:
    quick = client(total_timeout=0.2)
    for i in range(60):
        mobile = DRIP if i % 20 == 0 else (HTTP500 if i % 3 else MOBILE)
        try:
            quick.submit(mobile, CONTENT)
        except TransientError:
            pass
    assert len(WATCHDOG) == 0
    assert [t.name for t in threading.enumerate()].count("ihuyi-watchdog") == 1  # one per process


# -- sent: could ihuyi have acted on it? --------------------------------------------------------


def test_connection_refused_was_not_sent(session: Session) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    client = IhuyiClient(f"http://127.0.0.1:{port}/", APIID, APIKEY, session=session)
    exc, _ = timed(lambda: client.submit(MOBILE, CONTENT))
    assert type(exc) is TransientError and str(exc).endswith("failed: ConnectionError")
    assert exc.sent is False


def test_a_name_that_does_not_resolve_was_not_sent(session: Session) -> None:
    exc, _ = timed(lambda: IhuyiClient("http://ihuyi.invalid/", APIID, APIKEY, session=session).submit(MOBILE, CONTENT))
    assert type(exc) is TransientError and exc.sent is False


def test_code_0_was_not_sent(client: Make) -> None:
    exc, _ = timed(lambda: client().submit(CODE_0, CONTENT))
    assert type(exc) is TransientError and exc.code == 0 and exc.sent is False


@pytest.mark.parametrize(
    "mobile, kwargs, reply",
    [(SLOW, {"read_timeout": 0.2}, "slow"), (HTTP500, {}, "http500"), (HANG, {"total_timeout": 0.3}, "hang"),
     ("19902200000", {}, "reset"), ("19902500000", {}, "truncated")],
    ids=["read timeout", "HTTP 500", "deadline cut", "reset", "truncated"],
)
def test_failures_after_sending_may_have_been_sent(
    client: Make, fresh_sandbox: Sandbox, mobile: str, kwargs: dict[str, float], reply: str
) -> None:
    exc, _ = timed(lambda: client(**kwargs).submit(mobile, CONTENT))
    assert type(exc) is TransientError and exc.sent is True
    assert [c["reply"] for c in fresh_sandbox.calls()] == [reply]


# -- replies that make no sense ---------------------------------------------------------------


@pytest.mark.parametrize("reply_format", ["xml", "json"])
def test_a_code_of_5000_digits_is_transient(client: Make, reply_format: str) -> None:
    exc, _ = timed(lambda: client(reply_format=reply_format).submit(HUGE_CODE, CONTENT))
    assert type(exc) is TransientError and exc.sent is True
    assert str(exc).startswith(f"unparseable ihuyi {reply_format} reply (")


@pytest.mark.parametrize("reply_format", ["xml", "json"])
@pytest.mark.parametrize("password_mode", ["apikey", "dynamic"])
@pytest.mark.parametrize("account, apikey", [(APIID, APIKEY), ("odd", ODD_KEY)], ids=["plain key", "odd key"])
def test_an_echoed_request_leaves_no_secret(
    fresh_sandbox: Sandbox, session: Session, account: str, apikey: str, password_mode: str, reply_format: str
) -> None:
    client = IhuyiClient(fresh_sandbox.url, account, apikey, password_mode=password_mode,
                         reply_format=reply_format, session=session)
    exc, _ = timed(lambda: client.submit(ECHO, CONTENT))
    assert type(exc) is PermanentError and exc.code == 9999
    assert exc.msg.startswith(f"account={account}&mobile=***&content=***&format={reply_format}&")
    assert exc.msg.endswith("password=***")
    for text in (exc.msg, str(exc), repr(exc)):
        assert apikey not in text and requests.utils.quote(apikey, safe="") not in text
        assert ECHO not in text and not re.search(r"[0-9a-f]{32}", text)


# -- TLS: the cut works on an SSL socket too ----------------------------------------------------


@pytest.fixture(scope="module")
def tls_front(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A TLS endpoint relaying each connection to the sandbox as bytes come: its URL and certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    backend = sandbox.url.split("/")[2].split(":")

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with source, sink:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass

    def accept() -> None:
        while True:
            try:
                raw, _ = listener.accept()
                front = context.wrap_socket(raw, server_side=True)
            except OSError:
                if listener.fileno() == -1:
                    return
                continue
            back = socket.create_connection((backend[0], int(backend[1])))
            threading.Thread(target=pump, args=(front, back), daemon=True).start()
            threading.Thread(target=pump, args=(back, front), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}/webservice/voice.php", cert
    listener.close()


@pytest.mark.parametrize("mobile", [DRIP, HANG], ids=["body dripping", "silent after headers"])
def test_the_deadline_cuts_a_tls_connection(tls_front: tuple[str, Path], fresh_sandbox: Sandbox, mobile: str) -> None:
    url, cert = tls_front
    with Session(ca_certs=str(cert)) as session:
        client = IhuyiClient(url, APIID, APIKEY, total_timeout=1.0, session=session)
        assert client.submit(MOBILE, CONTENT).code == 2
        exc, took = timed(lambda: client.submit(mobile, CONTENT))
        assert type(exc) is TransientError and "1 s deadline" in str(exc) and exc.sent is True
        assert 1.0 <= took < 1.0 + SLACK
        assert client.submit(MOBILE, CONTENT).code == 2
