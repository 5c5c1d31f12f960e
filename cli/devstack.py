"""The parts of a development stack that ``make run`` and ``voicecode demo`` start, and stop after.

``make run`` runs honcho under ``voicecode with-embedded-redis``: the embedded Redis (when the
settings name no server for the state) is started before any process of ``Procfile.dev``, so
none of them races another to start it, and is shut down once honcho has stopped them all:
Ctrl-C leaves nothing running, and the next ``make run`` finds the data again in the
append-only file. A process that finds no embedded Redis still starts one itself (the CLI,
a worker run by hand), and that one keeps running, as before.

``voicecode demo`` brings up what is not already up (the embedded Redis, a sandbox where
``IHUYI_API_URL`` points on loopback, a worker for its account) and stops only what it started.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from config import Settings
from config.settings import ProducerSettings
from ihuyi.sandbox import Sandbox
from worker.stores import embedded
from worker.stores.connection import connect_state, resolve_urls
from worker.stores.registry import WorkerRegistry

#: How long a starting worker may take.
WORKER_START_SECONDS = 60.0


class StackError(Exception):
    """A part of the stack could not be had; the message says which and why."""


@contextmanager
def embedded_redis(settings: ProducerSettings | Settings, *, stop_if_found: bool) -> Iterator[Path | None]:
    """The embedded Redis up while the block runs, if the settings use it (else None, nothing done).

    Stopped at the end if it was started here, or ``stop_if_found``.
    """
    found = embedded.is_running(settings.state_dir)
    urls = resolve_urls(settings)  # starts it when the settings use it
    sock = embedded.socket_path(settings.state_dir)
    if urls.state != f"unix://{sock}":
        yield None
        return
    try:
        yield sock
    finally:
        if stop_if_found or not found:
            embedded.stop(settings.state_dir)


def with_embedded_redis(settings: ProducerSettings, command: Sequence[str]) -> int:
    """Run ``command`` with the embedded Redis up, then stop that Redis; ``command``'s exit status.

    ``command`` runs in a process group of its own: Ctrl-C reaches it once, from here, as do
    SIGTERM and SIGHUP, and the Redis is stopped only after it has ended.
    """
    with embedded_redis(settings, stop_if_found=True) as sock:
        if sock is not None:
            print(f"embedded Redis on {sock}, stopped when this ends", flush=True)
        child = subprocess.Popen(list(command), process_group=0)
        forward = lambda signum, _frame: child.send_signal(signum)  # noqa: E731
        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            status = child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if sock is not None:
            print(f"stopping the embedded Redis (its data stays in {settings.state_dir})", flush=True)
    return 128 - status if status < 0 else status


def is_loopback_http(url: str) -> bool:
    """True for a plain ``http://`` URL on this machine: where a sandbox can be started."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


@contextmanager
def sandbox_at(settings: Settings, found: bool) -> Iterator[None]:
    """A sandbox where ``IHUYI_API_URL`` points while the block runs: the one ``found`` there, else
    one started here (on loopback only), stopped at the end."""
    if found:
        yield
        return
    url = urlsplit(settings.api_url)
    refusal = f"the demo runs against the sandbox only, and {settings.api_url} is not one"
    if not is_loopback_http(settings.api_url):
        raise StackError(f"{refusal} (one is started for it only at a plain http:// URL on this machine: "
                         "point IHUYI_API_URL at one)")
    accounts = {account.apiid: account.apikey for account in settings.accounts.values()}
    try:
        sandbox = Sandbox(accounts, host=url.hostname or "127.0.0.1", port=url.port or 80).start()
    except OSError as exc:
        raise StackError(f"{refusal}, and none can be started there ({exc.strerror})") from None
    print(f"started a sandbox at {sandbox.url} for the demo", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        sandbox.stop()


@contextmanager
def worker_for(settings: Settings, account: str) -> Iterator[None]:
    """A worker serving ``account`` while the block runs: a live one, else one started here and stopped at the end."""
    registry = WorkerRegistry(connect_state(resolve_urls(settings).state))
    if account in registry.accounts():
        yield
        return
    with tempfile.TemporaryDirectory(prefix="voicecode-demo-") as tmp:
        log = Path(tmp) / "worker.log"
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--loglevel", "INFO", "--concurrency", "8",
             "--hostname", f"demo-{os.getpid()}@%h", "--without-gossip", "--without-mingle"],
            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            deadline = time.monotonic() + WORKER_START_SECONDS
            while account not in registry.accounts():
                if worker.poll() is not None or time.monotonic() > deadline:
                    tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:])
                    raise StackError(f"the worker started for the demo did not come up; its log ends:\n{tail}")
                time.sleep(0.1)
            print(f"started a worker for account {account!r} for the demo", file=sys.stderr, flush=True)
            yield
        finally:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
