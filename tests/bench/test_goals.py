"""The goals table: this run's figure beside the last one measured, and the run recorded with the code."""
from __future__ import annotations

from bench import goals
from bench.__main__ import RECORDED
from bench.harness import Report, Row
from bench.perf import SENTRY_CPU_BOUND

ROUND_TRIPS = ("cost/redis", "worker Redis round trips/task")
SENTRY = ("sentry/redis", "with Sentry / without")


def line_of(table: str, start: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {start}"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_last_figure_is_this_machines_previous_run_else_the_recorded_one():
    recorded = [Row(*ROUND_TRIPS, 2.33), Row(*SENTRY, 0.93)]
    previous = [Row(*ROUND_TRIPS, 2.5)]
    table = goals.table([Row(*ROUND_TRIPS, 2.4)], recorded + previous)
    assert line_of(table, "worker Redis round trips")[2:4] == ["2.50 / -", "2.40 / -"]
    assert line_of(table, "throughput with SENTRY_DSN")[2:4] == ["0.93", "-"]


def test_the_recorded_run_measured_every_goal():
    """A fresh clone has no run of its own: the recorded one fills the whole "last" column."""
    rows = Report.read(RECORDED).rows
    assert rows, f"{RECORDED} is missing or unreadable"
    table = goals.table([], rows)
    missing = [line_of(table, goal.metric)[0] for goal in goals.GOALS
               if "-" in line_of(table, goal.metric)[2].replace(";", " ").split()]
    assert missing == []


def test_the_sentry_ratio_shows_the_one_from_cpu_per_send_beside_it():
    table = goals.table([Row(*SENTRY, 0.82), Row("sentry/redis", SENTRY_CPU_BOUND, 0.91)], [Row(*SENTRY, 0.86)])
    assert line_of(table, "throughput with SENTRY_DSN")[2:4] == ["0.86", "0.82 (from CPU: 0.91)"]
