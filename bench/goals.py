"""The performance goals, each with the figure it was set from and what this run measured.

"before" is the run the goals were set from (another machine, so compare the ratios first:
a slower machine moves every absolute figure, ours and the ceiling's alike).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.harness import Report


@dataclass(frozen=True)
class Goal:
    metric: str
    before: str
    goal: str
    measured: Callable[[Callable[[str, str], str]], str]


def _both(scenario: str, metric: str) -> Callable[[Callable[[str, str], str]], str]:
    return lambda value: f"{value(scenario + '/redis', metric)} / {value(scenario + '/rabbitmq', metric)}"


GOALS = (
    Goal("ours ÷ ceiling (no-op task, same broker, pool, acks, events), Redis / RabbitMQ", "0.29 / 0.21", "≥ 0.6",
         _both("throughput", "ours / ceiling")),
    Goal("ours ÷ naive, one worker process, Redis / RabbitMQ", "15.5 / 15.1", "≥ 20", _both("throughput", "ours / naive")),
    Goal("worker CPU per task, Redis (ms)", "2.7", "≤ 1.7",
         lambda value: f"{value('cost/redis', 'worker CPU ms/task')} (ceiling {value('throughput/redis', 'ceiling worker CPU ms/task')})"),
    Goal("worker Redis round trips per task", "8.7", "≤ 3", lambda value: value("cost/redis", "worker Redis round trips/task")),
    Goal("throughput with SENTRY_DSN set ÷ without, Redis", "~0.6", "≥ 0.9",
         lambda value: value("sentry/redis", "with Sentry / without")),
    Goal("enqueue→Submit p50 / p99 at 50/s, Redis (ms)", "8.0 / 13.8", "≤ 5 / ≤ 20",
         lambda value: f"{value('latency/redis', 'enqueue->Submit p50 (ms)')} / {value('latency/redis', 'enqueue->Submit p99 (ms)')}"),
    Goal("SIGKILLed worker on Redis: last code sent after the kill (s); lost; duplicates / in flight", "122", "≤ 15; 0; ≤ in flight",
         lambda value: f"{value('recovery/redis', 'last code sent after the kill (s)')}; "
                       f"{value('recovery/redis', 'lost; duplicates / in flight at the kill')}"),
)


def table(report: Report) -> str:
    """A markdown table of GOALS; "-" where this run did not measure it."""
    found = {(row.scenario, row.metric): row.value for row in report.rows}

    def value(scenario: str, metric: str) -> str:
        shown = found.get((scenario, metric), "-")
        return f"{shown:.2f}" if isinstance(shown, float) else str(shown)

    lines = ["| metric | before | now | goal |", "|---|---|---|---|"]
    lines += [f"| {g.metric} | {g.before} | {g.measured(value)} | {g.goal} |" for g in GOALS]
    return "\n".join(lines)
