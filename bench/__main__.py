"""``python -m bench [--only NAME ...] [--brokers redis rabbitmq]``: run, print a table, write bench/results.json.

The goals table shows each goal's figure from this run beside the last: the previous run's on
this machine (bench/results.json, not committed) where it measured that figure, else the one
recorded with the code (bench/recorded.json: the run docs/performance.md reports).
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from bench import client, goals, host, limits, perf, recovery, roles
from bench.harness import Report, backend_available

RECORDED = Path(__file__).parent / "recorded.json"

SCENARIOS = {
    "accuracy": limits.accuracy,
    "fairness": limits.fairness,
    "throughput": perf.throughput,
    "latency": perf.latency,
    "cost": perf.cost,
    "sentry": perf.sentry,
    "scale": perf.scale,
    "recovery": recovery.recovery,
    "roles": roles.roles,
    "client": client.client,
    "host": host.host,
}


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": str(os.cpu_count()), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=sorted(SCENARIOS))
    parser.add_argument("--brokers", nargs="*", default=["redis", "rabbitmq"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results.json")
    parser.add_argument("--tasks", type=int, help="tasks per throughput/scale run (default 5000; VCBENCH_TASKS)")
    args = parser.parse_args()
    if args.tasks:
        os.environ["VCBENCH_TASKS"] = str(args.tasks)
    report = Report()
    for broker in args.brokers:
        if not backend_available(broker):
            print(f"skipping {broker}: server unreachable")
            continue
        for name in args.only:
            print(f"{name} on {broker} …", flush=True)
            SCENARIOS[name](report, broker)
    info = machine()
    print(f"\nMachine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['date']}\n")
    print(report.table())
    print("\nAgainst the performance goals (before: the figures the goals were set from; last: the previous "
          f"run's, from {args.out.name}, else the recorded run's, from {RECORDED.name}):\n")
    print(goals.table(report.rows, Report.read(RECORDED).rows + Report.read(args.out).rows))
    report.write(args.out, info)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
