"""``voicecode sandbox calls``: the sandbox's phone in the terminal, read from its control API."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import requests

from ihuyi.sandbox import PATH, Sandbox
from tests.servers import free_port
from tests.support import ROOT

APIID, APIKEY = "cli-apiid", "cli-apikey-0123456789"
ENV = {"PATH": os.environ["PATH"], "VOICECODE_ENV_FILE": os.devnull}


def voicecode(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env={**ENV, **env},
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def phone():
    with Sandbox({APIID: APIKEY}, initial_balance=1) as sandbox:
        yield sandbox


def call(sandbox: Sandbox, mobile: str, content: str) -> None:
    requests.post(sandbox.url, params={"method": "Submit"}, timeout=5,
                  data={"account": APIID, "password": APIKEY, "mobile": mobile, "content": content})


def test_prints_each_submit_with_its_digits_oldest_first(phone):
    call(phone, "13800138000", "482159")
    call(phone, "13900139000", "1234")  # the balance of 1 is spent: not called
    done = voicecode("sandbox", "calls", "--url", phone.url.removesuffix(PATH) + "/")
    assert done.returncode == 0 and done.stderr == ""
    lines = done.stdout.splitlines()
    assert [line[8:] for line in lines] == [
        "  13800138000  reads 4 8 2 1 5 9  rang (code 2 提交成功)",
        "  13900139000  reads 1 2 3 4      no call (code 4051 剩余条数不足)",
    ]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", line[:8]) for line in lines)


def test_the_url_defaults_to_the_host_of_ihuyi_api_url(phone):
    assert voicecode("sandbox", "calls", IHUYI_API_URL=phone.url).stdout == (
        f"no calls yet at {phone.url.removesuffix(PATH)}\n")
    call(phone, "13800138000", "4821")
    assert "13800138000  reads 4 8 2 1" in voicecode("sandbox", "calls", IHUYI_API_URL=phone.url).stdout


def test_no_sandbox_is_one_line_on_stderr():
    url = f"http://127.0.0.1:{free_port()}"
    done = voicecode("sandbox", "calls", "--url", url)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"voicecode: no ihuyi sandbox answers at {url} (start one with `voicecode sandbox` or `make run`)\n"
    # ihuyi itself (https) is never asked, but the default sandbox (which `make run` may have up)
    https = voicecode("sandbox", "calls", IHUYI_API_URL="https://api.voice.ihuyi.com/webservice/voice.php")
    assert "ihuyi.com" not in https.stdout + https.stderr
    assert https.returncode == 0 or "no ihuyi sandbox answers at http://127.0.0.1:8099 " in https.stderr
