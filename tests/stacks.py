"""A stack on the local Redis for the operations tests (Sentry, Flower, demo, web-app example).

One backend is enough there: what they test sits above the broker. ``tests.conftest.stack``
runs the send path itself on every backend.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ihuyi.sandbox import Sandbox
from tests.conftest import require_servers
from tests.support import ROOT, Stack, base_env, make_backend


@contextmanager
def redis_stack(sandbox: Sandbox, **env: str) -> Iterator[Stack]:
    """A flushed Redis backend and the service's environment (plus ``env``); no worker started yet."""
    require_servers("redis")
    with tempfile.TemporaryDirectory(prefix="vc-", dir="/tmp") as tmp:
        backend = make_backend("redis", Path(tmp))
        backend.flush()
        stack = Stack(backend, base_env(sandbox.url, **backend.env, **env), Path(tmp))
        try:
            yield stack
        finally:
            stack.stop_workers()


def start(stack: Stack, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Run ``python *args`` in the stack's environment, output to ``<tmp>/<name>.log``."""
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env={**stack.env, **(env or {})},
                            stdout=(stack.tmp / f"{name}.log").open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(process: subprocess.Popen, timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
