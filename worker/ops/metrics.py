"""The pool's metrics in the Prometheus text format, and a tiny HTTP server answering ``GET /metrics``.

Counters live in the shared state Redis (worker/stores/metrics.py) because every worker
process on every host adds to them; a per-process ``prometheus_client`` registry would
see one process only. So :class:`PoolCollector` is a custom collector: on each scrape it
reads one snapshot of the counters, asks the given callables for the gauges (dead letters
waiting, paused accounts, last balances) and yields metric families, which
``prometheus_client`` renders. Only configured account names, known statuses and
documented ihuyi codes become label values: never a number, a code or a secret.

The server is separate from Flower and the workers so that a scrape never waits on them.
It answers 401 without the right basic auth (when one is set), 404 anywhere but
``/metrics``, and never logs request lines. ``voicecode metrics`` runs it (:func:`run`), with
the pool's counters and the gauges read from the stores (:func:`pool_collector`).
"""
from __future__ import annotations

import base64
import binascii
import hmac
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from config import Settings
from worker.stores import Stores
from worker.stores.deadletters import INDEX as DEAD_LETTERS
from worker.stores.guards import Guards, shown_range
from worker.stores.metrics import BUCKETS, MetricsStore

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class PoolCollector:
    """Yields the pool-wide metric families; ``render()`` is the text a scrape gets.

    ``dead_letters`` returns how many dead letters are waiting, ``paused`` each account's
    pool-wide pause ({account: paused?}), ``paused_hosts`` on how many hosts each is paused
    ({account: hosts}), ``balances`` each account's last known balance ({account: calls left,
    or None when never read}), ``budgets`` the accounts with a daily budget ({account: (used
    today, budget)}), ``blocked_ranges`` the ranges refused now ({range: seconds left}).
    Accounts the store does not know are left out.
    """

    def __init__(self, store: MetricsStore, dead_letters: Callable[[], int],
                 paused: Callable[[], Mapping[str, bool]], balances: Callable[[], Mapping[str, int | None]],
                 *, paused_hosts: Callable[[], Mapping[str, int]] = dict,
                 budgets: Callable[[], Mapping[str, tuple[int, int]]] = dict,
                 blocked_ranges: Callable[[], Mapping[str, float]] = dict) -> None:
        self._store = store
        self._budgets = budgets
        self._blocked_ranges = blocked_ranges
        self._dead_letters = dead_letters
        self._paused = paused
        self._paused_hosts = paused_hosts
        self._balances = balances

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4) of every metric."""
        return generate_latest(self).decode("utf-8")

    def collect(self) -> Iterator[Metric]:
        snapshot = self._store.snapshot()

        outcomes = CounterMetricFamily("voicecode_outcomes", "Final outcomes of sends, pool-wide.",
                                       labels=["account", "status", "ihuyi_code"])
        for labels, count in sorted(snapshot.outcomes.items()):
            outcomes.add_metric(labels, count)
        yield outcomes

        submit = HistogramMetricFamily("voicecode_submit_seconds", "Duration of ihuyi Submit calls, pool-wide.",
                                       labels=["account"])
        for account, histogram in sorted(snapshot.submit.items()):
            buckets = [(floatToGoString(bound), count) for bound, count in zip(BUCKETS, histogram.cumulative)]
            submit.add_metric([account], buckets, sum_value=histogram.sum)
        yield submit

        waits = CounterMetricFamily("voicecode_rate_limit_waits", "Waits for a rate-limit token, pool-wide.",
                                    labels=["account"])
        waited = CounterMetricFamily("voicecode_rate_limit_wait_seconds",
                                     "Time spent waiting for rate-limit tokens, pool-wide.", labels=["account"])
        for account, wait in sorted(snapshot.rate_limit_waits.items()):
            waits.add_metric([account], wait.count)
            waited.add_metric([account], wait.seconds)
        yield waits
        yield waited

        yield GaugeMetricFamily("voicecode_dead_letters", "Dead letters waiting for a person.",
                                value=self._dead_letters())

        paused = GaugeMetricFamily("voicecode_account_paused", "1 while the account is paused pool-wide.",
                                   labels=["account"])
        for account, is_paused in self._known(self._paused()):
            paused.add_metric([account], 1 if is_paused else 0)
        yield paused

        hosts = GaugeMetricFamily("voicecode_account_paused_hosts",
                                  "Hosts the account is paused on (their IP refused, or their clock skewed); "
                                  "the others send.", labels=["account"])
        for account, count in self._known(self._paused_hosts()):
            hosts.add_metric([account], count)
        yield hosts

        balance = GaugeMetricFamily("voicecode_balance", "Calls left on the account at the last GetNum.",
                                    labels=["account"])
        for account, calls in self._known(self._balances()):
            if calls is not None:
                balance.add_metric([account], calls)
        yield balance

        budget = GaugeMetricFamily("voicecode_account_daily_budget", "Requests the account may take per UTC day.",
                                   labels=["account"])
        used = GaugeMetricFamily("voicecode_account_budget_used", "Requests the account took today (UTC).",
                                 labels=["account"])
        for account, (today, limit) in self._known(self._budgets()):
            budget.add_metric([account], limit)
            used.add_metric([account], today)
        yield budget
        yield used

        blocked = self._blocked_ranges()
        yield GaugeMetricFamily("voicecode_ranges_blocked", "Number ranges (first 7 digits) refused now, "
                                "their numbers called too widely.", value=len(blocked))
        left = GaugeMetricFamily("voicecode_range_block_seconds", "Seconds left of a range's block.",
                                 labels=["range"])
        for name, seconds in sorted(blocked.items()):
            left.add_metric([shown_range(name)], seconds)
        yield left

    def _known(self, values: Mapping[str, Any]) -> list[tuple[str, Any]]:
        return sorted((account, value) for account, value in values.items() if account in self._store.accounts)


class _Handler(BaseHTTPRequestHandler):
    server_version = "voicecode-metrics"
    sys_version = ""
    timeout = 10  # a client that stops sending gives up its thread

    def __init__(self, *args: Any, render: Callable[[], str], credentials: list[bytes] | None, **kwargs: Any) -> None:
        self._render = render
        self._credentials = credentials
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        if self._credentials is not None and not self._authorized(self._credentials):
            self._reply(401, b"unauthorized\n", {"WWW-Authenticate": 'Basic realm="voicecode metrics"'})
        elif urlsplit(self.path).path != "/metrics":
            self._reply(404, b"not found\n")
        else:
            try:
                body = self._render().encode("utf-8")
            except Exception:  # Redis unreachable, say: the scrape fails, the server stays
                log.exception("rendering metrics failed")
                self._reply(500, b"metrics unavailable\n")
            else:
                self._reply(200, body, {"Content-Type": CONTENT_TYPE})

    def log_message(self, format: str, *args: Any) -> None:
        """Request lines are not logged."""

    def _authorized(self, credentials: list[bytes]) -> bool:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except binascii.Error:
            return False
        # Every pair compared, so the time taken does not say which one came close.
        matches = [hmac.compare_digest(given, pair) for pair in credentials]
        return scheme.lower() == "basic" and any(matches)

    def _reply(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def make_server(address: str, port: int, render: Callable[[], str], basic_auth: str | None) -> ThreadingHTTPServer:
    """A bound, not yet serving, metrics server; ``basic_auth`` is ``user:password`` (several
    separated by commas, as ``FLOWER_BASIC_AUTH``) or None (open)."""
    pairs = None if basic_auth is None else basic_auth.split(",")
    if pairs is not None and not all(":" in pair for pair in pairs):
        raise ValueError("basic auth must be user:password")
    credentials = None if pairs is None else [pair.encode("utf-8") for pair in pairs]
    return ThreadingHTTPServer((address, port), partial(_Handler, render=render, credentials=credentials))


def pool_collector(settings: Settings, stores: Stores) -> PoolCollector:
    """The pool's metrics: the counters the workers keep, the gauges read from the stores on each scrape."""
    names = list(settings.accounts)
    states = stores.accounts
    guards = Guards(stores.redis)
    return PoolCollector(
        MetricsStore(stores.redis, accounts=names),
        dead_letters=lambda: stores.redis.zcard(DEAD_LETTERS),
        paused=lambda: {s.name: s.paused is not None for s in states.snapshot(names)},
        paused_hosts=lambda: {s.name: len(s.host_pauses) for s in states.snapshot(names)},
        balances=lambda: {s.name: s.balance for s in states.snapshot(names)},
        budgets=lambda: _budgets(settings, guards),
        blocked_ranges=guards.blocked_ranges,
    )


def _budgets(settings: Settings, guards: Guards) -> dict[str, tuple[int, int]]:
    """{account: (used today, daily budget)} for the accounts with a budget."""
    budgets = {name: a.daily_budget for name, a in settings.accounts.items() if a.daily_budget}
    return {name: (used, budgets[name]) for name, used in guards.budget_use(budgets).items()}


def run(settings: Settings, basic_auth: str, address: str, port: int) -> None:
    """``voicecode metrics``: serve the pool's metrics on ``address:port`` until SIGINT or SIGTERM."""
    collector = pool_collector(settings, Stores.connect(settings))
    with make_server(address, port, collector.render, basic_auth) as server:
        def stop(*_: object) -> None:
            # serve_forever() runs in this thread, and shutdown() waits for it: ask from another.
            threading.Thread(target=server.shutdown).start()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop)
        host, bound = server.server_address[:2]
        print(f"voicecode metrics on http://{host}:{bound}/metrics", flush=True)
        server.serve_forever()
