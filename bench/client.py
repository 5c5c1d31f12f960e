"""The ihuyi client's own CPU per Submit: requests (what it uses) beside urllib3's pools directly.

``python -m bench --only client``: 1,000 Submits to an in-process sandbox from one thread,
per path, the two paths alternating round after round, the CPU of the calling thread only
(``time.thread_time``: the sandbox's threads are not counted). Both paths are the same
``ihuyi.transport.Session``, watched pools and all; the urllib3 path posts through the
adapter's pools itself, as the client did before it was on requests.
"""
from __future__ import annotations

import statistics
import time
from typing import Any

from urllib3 import BaseHTTPResponse, Timeout

from bench.harness import Report
from ihuyi.client import IhuyiClient
from ihuyi.sandbox import Sandbox
from ihuyi.transport import Session

APIID, APIKEY = "bench-apiid", "bench-S3CR3T-key"
CALLS, ROUNDS, WARM = 1000, 5, 200
#: CPU a Submit on requests may cost beyond one straight on urllib3's pools.
GOAL_MS = 0.2
_done = False


class Urllib3Session(Session):
    """The same session, posting through urllib3's pools directly (the client's former path)."""

    def post(self, url: str, fields: dict[str, str], *, connect_timeout: float, read_timeout: float) -> BaseHTTPResponse:
        return self.manager_for(url).request(
            "POST", url, fields=fields, encode_multipart=False, redirect=False, retries=False,
            timeout=Timeout(connect=connect_timeout, read=read_timeout), preload_content=False,
        )


def _cpu_ms_per_call(client: IhuyiClient, calls: int, first: int) -> float:
    started = time.thread_time()
    for i in range(first, first + calls):
        client.submit(f"138{i:08d}", "4821")
    return (time.thread_time() - started) * 1000 / calls


def measure(calls: int = CALLS, rounds: int = ROUNDS) -> dict[str, list[float]]:
    """CPU ms per Submit of each path, one figure per round."""
    figures: dict[str, list[float]] = {"urllib3": [], "requests": []}
    with Sandbox({APIID: APIKEY}, initial_balance=10**9) as sandbox, \
            Urllib3Session() as plain, Session() as on_requests:
        clients: dict[str, Any] = {
            "urllib3": IhuyiClient(sandbox.url, APIID, APIKEY, session=plain),
            "requests": IhuyiClient(sandbox.url, APIID, APIKEY, session=on_requests),
        }
        n = 0
        for client in clients.values():
            _cpu_ms_per_call(client, WARM, n)
            n += WARM
        for r in range(rounds):
            order = list(clients) if r % 2 == 0 else list(reversed(clients))
            for name in order:
                figures[name].append(_cpu_ms_per_call(clients[name], calls, n))
                n += calls
    return figures


def client(report: Report, broker: str) -> None:
    """Once per run, whatever the broker: no broker is involved."""
    global _done
    if _done:
        return
    _done = True
    figures = measure()
    extra = [b - a for a, b in zip(figures["urllib3"], figures["requests"])]
    print(f"\n  CPU ms per Submit, {CALLS} calls x {ROUNDS} rounds, one thread, sandbox in-process\n")
    print("  | path | min | median | max |\n  |---|---|---|---|")
    for name, values in [*figures.items(), ("requests - urllib3, same round", extra)]:
        print(f"  | {name} | {min(values):.3f} | {statistics.median(values):.3f} | {max(values):.3f} |")
    print()
    for name, values in figures.items():
        report.add("client", f"CPU ms per Submit on {name} (median of {ROUNDS} x {CALLS})",
                   f"{statistics.median(values):.3f}")
    median_extra = statistics.median(extra)
    report.add("client", "requests' extra CPU ms per Submit (median of rounds)", f"{median_extra:.3f}",
               f"<= {GOAL_MS}", median_extra <= GOAL_MS)
