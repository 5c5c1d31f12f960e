"""What every benchmark needs: a sandbox, a backend, worker processes, and measurements.

Built on the same real parts as the end-to-end tests (tests/support.py).
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ihuyi.sandbox import Sandbox
from tests import servers
from tests.support import Stack, base_env, make_backend


#: The benchmarks' Redis databases (this one and the next) on the private Redis of tests/servers.py.
BENCH_REDIS_DB = 14


@dataclass
class Row:
    scenario: str
    metric: str
    value: float | str
    goal: str = ""
    ok: bool | None = None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, scenario: str, metric: str, value: float | str, goal: str = "", ok: bool | None = None) -> None:
        self.rows.append(Row(scenario, metric, value, goal, ok))
        shown = f"{value:.1f}" if isinstance(value, float) else value
        print(f"  {scenario}: {metric} = {shown}" + (f"  (goal {goal}: {'ok' if ok else 'MISSED'})" if goal and ok is not None else f"  ({goal})" if goal else ""), flush=True)

    def table(self) -> str:
        lines = ["| scenario | metric | value | goal | met |", "|---|---|---|---|---|"]
        for r in self.rows:
            shown = f"{r.value:.1f}" if isinstance(r.value, float) else str(r.value)
            met = "" if r.ok is None else ("yes" if r.ok else "**no**")
            lines.append(f"| {r.scenario} | {r.metric} | {shown} | {r.goal} | {met} |")
        return "\n".join(lines)

    def write(self, path: Path, machine: dict[str, Any]) -> None:
        path.write_text(json.dumps({"machine": machine, "rows": [r.__dict__ for r in self.rows]}, indent=2))

    @classmethod
    def read(cls, path: Path) -> Report:
        """The report written to ``path`` by an earlier run; empty when there is none (or it is unreadable)."""
        try:
            return cls([Row(**row) for row in json.loads(path.read_text())["rows"]])
        except (OSError, ValueError, KeyError, TypeError):
            return cls()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def backend_available(name: str) -> bool:
    """Redis is a private ``redis-server`` (always there); RabbitMQ a vhost of this run's own, made with rabbitmqctl."""
    if name != "rabbitmq":
        return True
    try:
        servers.rabbitmq_vhost()
    except servers.Unavailable as exc:
        print(f"rabbitmq: {exc}")
        return False
    return True


@contextmanager
def bench_stack(backend_name: str, sandbox: Sandbox, accounts: dict[str, dict], **env: str) -> Iterator[Stack]:
    """A flushed backend and the environment for the service; workers are started by the caller."""
    with tempfile.TemporaryDirectory(prefix="vcb-", dir="/tmp") as tmp:
        backend = make_backend(backend_name, Path(tmp), redis_db=BENCH_REDIS_DB)
        backend.flush()
        stack = Stack(backend, base_env(sandbox.url, **backend.env, IHUYI_ACCOUNTS=json.dumps(accounts), **env), Path(tmp))
        try:
            yield stack
        finally:
            stack.stop_workers()
            backend.flush()


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
