"""The ``voicecode`` command line refuses bad arguments with one line, before it touches anything."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import ROOT

# No account and no broker: an argument is refused before the settings are even read.
ENV = {"PATH": os.environ["PATH"], "VOICECODE_ENV_FILE": os.devnull}


def voicecode(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, line", [
    (["send", "13800138000", "4821", "--wait", "-1"], "argument --wait: must be from 0.01 to 86400, got '-1'"),
    (["send", "13800138000", "4821", "--wait", "0"], "argument --wait: must be from 0.01 to 86400, got '0'"),
    (["send", "13800138000", "4821", "--wait", "nan"], "argument --wait: expected a finite number, got 'nan'"),
    (["send", "13800138000", "4821", "--wait", "inf"], "argument --wait: expected a finite number, got 'inf'"),
    (["send", "13800138000", "4821", "--ttl", "0"], "argument --ttl: must be from 1 to 86400, got '0'"),
    (["send", "13800138000", "4821", "--ttl", "-5"], "argument --ttl: must be from 1 to 86400, got '-5'"),
    (["send", "13800138000", "4821", "--ttl", "86401"], "argument --ttl: must be from 1 to 86400, got '86401'"),
    (["send", "13800138000", "4821", "--ttl", "1.5"], "argument --ttl: expected an integer, got '1.5'"),
    (["flower", "--port", "0"], "argument --port: must be from 1 to 65535, got '0'"),
    (["flower", "--port", "65536"], "argument --port: must be from 1 to 65535, got '65536'"),
    (["flower", "--address", "local host"], "argument --address: expected an IP address or a host name, got 'local host'"),
    (["sandbox", "--port", "70000"], "argument --port: must be from 1 to 65535, got '70000'"),
    (["sandbox", "--latency-ms", "-1"], "argument --latency-ms: must be from 0 to 600000, got '-1'"),
    (["demo", "--timeout", "nan"], "argument --timeout: expected a finite number, got 'nan'"),
    (["send", "13800138000"], "the following arguments are required: code"),
])
def test_bad_arguments_are_refused_with_one_line(args, line):
    done = voicecode(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"voicecode: {line}\n"


def test_help_still_prints_usage():
    done = voicecode("send", "--help")
    assert done.returncode == 0 and "--wait SECONDS" in done.stdout and done.stderr == ""
