"""``voicecode worker``: one Celery worker process per core, each with its pool of threads.

A threads pool holds one core at most (the GIL): on an N-core host one ``celery worker``
left N-1 idle. This starts ``WORKER_PROCESSES`` (default: the cores this process may run on)
``celery -A worker.app worker`` children, named ``w1@<host>``, ``w2@<host>``… (``-n NAME@HOST``
makes them ``w1.NAME@HOST``…), and stays in front of them:

- a stop signal is passed on once: SIGTERM as it is, SIGINT as SIGTERM the first time (a
  terminal's Ctrl-C reaches the children too, and two SIGINTs would be Celery's cold shutdown)
  and SIGQUIT the second; SIGQUIT, SIGHUP, SIGUSR1 and SIGUSR2 as they are. It returns once
  every child has ended, with the first non-zero exit status among them (else 0);
- a child that dies while nothing asked it to is logged and started again a second later,
  under the same name (what it held is given back by the others within seconds: each process
  keeps its own heartbeat, worker/stores/heartbeats.py); one that ends within
  ``START_SECONDS`` of its start never got going (a bad option, a broken install), so the
  rest are stopped and its status returned; one that exits with 0 was shut down on purpose
  (``celery control shutdown``) and is not replaced;
- each child is asked to get SIGTERM should this process itself be killed.

With one process it simply becomes ``celery worker`` (exec), as the Procfile ran before.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from subprocess import Popen

log = logging.getLogger("voicecode.worker")

#: A child that ends sooner than this after its start is not restarted: it would end again.
START_SECONDS = 10.0
#: How long after a child's death it is started again.
RESTART_DELAY_SECONDS = 1.0
_HOSTNAME_OPTIONS = ("-n", "--hostname")
_PR_SET_PDEATHSIG = 1


def celery_command(hostname: str | None, celery_args: Sequence[str]) -> list[str]:
    """The command of one worker process."""
    named = ["-n", hostname] if hostname else []
    return [sys.executable, "-m", "celery", "-A", "worker.app", "worker", *named, *celery_args]


def split_hostname(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """The ``-n``/``--hostname`` given among ``args`` (None if none), and the other arguments."""
    hostname, rest, it = None, [], iter(args)
    for arg in it:
        if arg in _HOSTNAME_OPTIONS:
            hostname = next(it, None)
        elif arg.startswith("--hostname="):
            hostname = arg.split("=", 1)[1]
        elif arg.startswith("-n") and len(arg) > 2 and not arg.startswith("--"):
            hostname = arg[2:]
        else:
            rest.append(arg)
    return hostname, rest


def child_hostname(index: int, hostname: str | None) -> str:
    """``w<index>@%h``, or ``w<index>.NAME@HOST`` for a given ``NAME@HOST``."""
    if not hostname:
        return f"w{index}@%h"
    name, at, host = hostname.partition("@")
    return f"w{index}.{name}{at}{host}"


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the launcher dies (Linux; elsewhere nothing)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class Child:
    index: int
    hostname: str
    process: Popen[bytes]
    started: float


def _signal(child: Child, signum: int) -> None:
    """Signal a child by pid: ``Popen.send_signal`` would reap one that has just exited, and the
    launcher's ``os.wait`` would then never see it end. Until that wait reaps it, its pid is not reused."""
    try:
        os.kill(child.process.pid, signum)
    except ProcessLookupError:
        pass


class Launcher:
    """N worker processes, started, watched and stopped together."""

    def __init__(self, processes: int, celery_args: Sequence[str]) -> None:
        self.processes = processes
        self.hostname, self.celery_args = split_hostname(celery_args)
        self.children: dict[int, Child] = {}  # by pid
        self.stopping = False
        self._interrupts = 0
        self.status = 0

    def start(self, index: int) -> Child:
        from celery.utils.nodenames import host_format

        hostname = child_hostname(index, self.hostname)
        process = Popen(celery_command(hostname, self.celery_args), preexec_fn=_die_with_parent)
        child = Child(index, host_format(hostname), process, time.monotonic())
        self.children[process.pid] = child
        if self.stopping:  # a stop signal came while it was being started: it did not reach this one
            _signal(child, signal.SIGTERM)
        return child

    def _signalled(self, signum: int, _frame: object) -> None:
        forward = signum
        if signum in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            self.stopping = True
        if signum == signal.SIGINT:
            self._interrupts += 1
            forward = signal.SIGTERM if self._interrupts == 1 else signal.SIGQUIT
        for child in list(self.children.values()):
            _signal(child, forward)

    def stop_all(self) -> None:
        self.stopping = True
        for child in list(self.children.values()):
            _signal(child, signal.SIGTERM)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(signum, self._signalled)
        for index in range(1, self.processes + 1):
            self.start(index)
        log.info("voicecode worker: %d worker processes: %s", self.processes,
                 ", ".join(f"{c.hostname} (pid {pid})" for pid, c in self.children.items()))
        return self.watch()

    def watch(self) -> int:
        """Wait for the children to end, replacing or stopping them as they do; the exit status."""
        while self.children:
            pid, wait_status = os.wait()  # a signal runs its handler and the wait goes on (PEP 475)
            child = self.children.pop(pid, None)
            if child is None:
                continue
            code = os.waitstatus_to_exitcode(wait_status)
            child.process.returncode = code
            self._ended(child, code)
        return self.status

    def _ended(self, child: Child, code: int) -> None:
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        if self.stopping:
            log.info("voicecode worker: %s (pid %d) stopped (%s)", child.hostname, child.process.pid, how)
            if code != 0 and self.status == 0:
                self.status = code if code > 0 else 128 - code
            return
        if code == 0:
            log.warning("voicecode worker: %s (pid %d) was shut down; not replaced", child.hostname, child.process.pid)
            return
        ran = time.monotonic() - child.started
        if ran < START_SECONDS:
            log.error("voicecode worker: %s (pid %d) ended %.1f s after its start (%s): stopping the others",
                      child.hostname, child.process.pid, ran, how)
            self.status = code if code > 0 else 128 - code
            self.stop_all()
            return
        log.error("voicecode worker: %s (pid %d) died (%s) after %.0f s; starting it again; its messages go back "
                  "to the queue once its heartbeat lapses", child.hostname, child.process.pid, how, ran)
        time.sleep(RESTART_DELAY_SECONDS)
        if not self.stopping:
            new = self.start(child.index)
            log.info("voicecode worker: %s started again (pid %d)", new.hostname, new.process.pid)


def run_workers(processes: int, celery_args: Sequence[str]) -> int:
    """Run ``processes`` worker processes until they end; with one, become it."""
    if processes <= 1:
        command = celery_command(None, celery_args)
        os.execv(command[0], command)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/launcher] %(message)s")
    return Launcher(processes, celery_args).run()
