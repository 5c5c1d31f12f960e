"""The performance goals: each with the figure it was set from, the last run's and this run's.

"before" is the run the goals were set from (compare ratios first: a slower machine moves
every absolute figure, ours and the ceiling's alike); "last" is the previous run's (see
bench/__main__.py), ``-`` where no earlier run measured it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.harness import Row
from bench.perf import SENTRY_CPU_BOUND

#: A scenario's value of a metric, as shown ("-" when that run did not measure it).
Lookup = Callable[[str, str], str]


@dataclass(frozen=True)
class Goal:
    metric: str
    before: str
    goal: str
    measured: Callable[[Lookup], str]


def _both(scenario: str, metric: str) -> Callable[[Lookup], str]:
    return lambda value: f"{value(scenario + '/redis', metric)} / {value(scenario + '/rabbitmq', metric)}"


def _cpu_ratio(value: Lookup) -> str:
    """Ours ÷ the no-op's worker CPU per task, from the same throughput run."""
    ours, ceiling = value("throughput/redis", "ours worker CPU ms/task"), value("throughput/redis", "ceiling worker CPU ms/task")
    try:
        return f"{float(ours) / float(ceiling):.2f} ({ours} / {ceiling} ms)"
    except (ValueError, ZeroDivisionError):
        return "-"


def _sentry_ratio(value: Lookup) -> str:
    """The measured ratio, and beside it the one from CPU per send where the run has it: the
    measured one moves with everything else on the host."""
    measured, from_cpu = value("sentry/redis", "with Sentry / without"), value("sentry/redis", SENTRY_CPU_BOUND)
    return measured if from_cpu == "-" else f"{measured} (from CPU: {from_cpu})"


GOALS = (
    Goal("Procfile worker ÷ bare Celery default (prefork, a process per core), same host, Redis", "0.30", "≥ 0.8",
         lambda value: value("host/redis", "procfile / bare Celery default (median of rounds)")),
    Goal("ours ÷ same-pool ceiling, one process, Redis / RabbitMQ", "0.49 / 0.31", "≥ 0.7 / ≥ 0.6",
         _both("throughput", "ours / ceiling")),
    Goal("worker CPU per send ÷ no-op task CPU, same run, Redis", "1.9", "≤ 1.5", _cpu_ratio),
    Goal("worker Redis round trips per send, Redis / RabbitMQ broker", "5.3 / 4.2", "≤ 3 / ≤ 2",
         _both("cost", "worker Redis round trips/task")),
    Goal("throughput with SENTRY_DSN ÷ without, Redis", "0.72", "≥ 0.9",
         _sentry_ratio),
    Goal("enqueue→Submit p50 / p99 at 50/s, Redis (ms)", "4.8 / 8.9", "hold",
         lambda value: f"{value('latency/redis', 'enqueue->Submit p50 (ms)')} / {value('latency/redis', 'enqueue->Submit p99 (ms)')}"),
    Goal("Redis CPU per send, every role on one Redis, Redis broker (µs)", "490", "≤ 250",
         lambda value: value("cost/redis", "Redis CPU µs/task (every role on one Redis; bench/roles.py splits it)")),
    Goal("Redis commands per send, every role on one Redis, Redis broker", "52.5", "≤ 25",
         lambda value: value("cost/redis", "Redis server commands/task (all clients, incl. Lua-internal)")),
    Goal("ihuyi client on requests: CPU per Submit beyond urllib3's pools (ms)", "0.35", "≤ 0.2",
         lambda value: value("client", "requests' extra CPU ms per Submit (median of rounds)")),
    Goal("ours ÷ naive, one worker process, Redis / RabbitMQ", "15.5 / 15.1", "≥ 20", _both("throughput", "ours / naive")),
    Goal("SIGKILLed worker on Redis: last code sent after the kill (s); lost; duplicates / in flight", "122", "≤ 15; 0; ≤ in flight",
         lambda value: f"{value('recovery/redis', 'last code sent after the kill (s)')}; "
                       f"{value('recovery/redis', 'lost; duplicates / in flight at the kill')}"),
)


def _lookup(rows: list[Row]) -> Lookup:
    found = {(row.scenario, row.metric): row.value for row in rows}

    def value(scenario: str, metric: str) -> str:
        shown = found.get((scenario, metric), "-")
        return f"{shown:.2f}" if isinstance(shown, float) else str(shown)

    return value


def table(rows: list[Row], last: list[Row]) -> str:
    """A markdown table of GOALS for this run's ``rows`` beside the ``last`` run's (a later row of
    ``last`` for the same scenario and metric wins)."""
    now, before = _lookup(rows), _lookup(last)
    lines = ["| metric | before | last | now | goal |", "|---|---|---|---|---|"]
    lines += [f"| {g.metric} | {g.before} | {g.measured(before)} | {g.measured(now)} | {g.goal} |" for g in GOALS]
    return "\n".join(lines)
