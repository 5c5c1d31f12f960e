"""The whole host: the Procfile's worker against one ``celery worker`` process and bare Celery's default.

``python -m bench --only host``: side by side in one run, ``ROUNDS`` rounds in turn, each with
the same tasks queued before the workers start, counted from the moment every worker process
is ready to the last result:

- ``procfile``: the Procfile's ``worker:`` line (``voicecode worker``: WORKER_PROCESSES, by
  default one process per core, each with its threads pool);
- ``one process``: ``celery -A worker.app worker``, the line the Procfile had before;
- ``bare Celery``: a no-op task on Celery's default worker (prefork, one process per core).
"""
from __future__ import annotations

import statistics
import time

from bench.harness import Report, wait_until
from bench.perf import Env, Run, enqueue_ours, enqueue_ref, fresh_mobiles, n_tasks, perf_stack, procfile_worker, producer
from config.settings import usable_cores

ROUNDS = 3


def _rate(env_: Env, run: Run, command: str, processes: int, tasks: int) -> tuple[float, float, int]:
    """Tasks/s and worker CPU ms/task from all ``processes`` ready to the last result, and how many were done."""
    # perf_stack runs one process per worker started; the Procfile's line as shipped runs one per core.
    proc = run.start(command, {"WORKER_PROCESSES": str(processes)}, wait=False)
    ready = wait_until(lambda: proc.log.read_text(errors="replace").count(" ready.") >= processes
                       or proc.process.poll() is not None, 90, 0.02)
    if not ready or proc.process.poll() is not None:
        raise RuntimeError(f"{command} did not start:\n{proc.log.read_text(errors='replace')[-3000:]}")
    started, done0, cpu0 = time.monotonic(), env_.results_count(), proc.cpu_seconds()
    wait_until(lambda: env_.results_count() >= tasks, tasks / 20 + 60, 0.02)
    took, done, cpu = time.monotonic() - started, env_.results_count(), proc.cpu_seconds()
    run.stop()
    return (done - done0) / took, (cpu - cpu0) * 1000 / max(done - done0, 1), done


def host(report: Report, broker: str) -> None:
    tasks = min(n_tasks(), 2000)
    cores = usable_cores()
    name = f"host/{broker}"
    rates: dict[str, list[float]] = {"procfile": [], "one process": [], "bare Celery": []}
    cpus: dict[str, list[float]] = {k: [] for k in rates}
    with perf_stack(broker) as (env_, sandbox, run):
        for _ in range(ROUNDS):
            for label in rates:
                env_.reset()
                sandbox.reset()
                if label == "bare Celery":
                    enqueue_ref(producer(env_), "ref.noop", tasks)
                    command, processes = "celery -A bench.reference worker --loglevel INFO --pool prefork", 1
                else:
                    enqueue_ours(producer(env_), fresh_mobiles(tasks))
                    command = procfile_worker() if label == "procfile" else "celery -A worker.app worker --loglevel INFO"
                    processes = cores if label == "procfile" else 1
                rate, cpu, done = _rate(env_, run, command, processes, tasks)
                if done < tasks:
                    report.add(name, f"{label} completed", f"{done} of {tasks}", str(tasks), False)
                rates[label].append(rate)
                cpus[label].append(cpu)
    print(f"\n  {tasks} tasks, ihuyi at 100 ms, {cores} cores, {ROUNDS} rounds: tasks/s min / median / max\n")
    for label, values in rates.items():
        print(f"  | {label} | {min(values):.0f} | {statistics.median(values):.0f} | {max(values):.0f} |"
              f" CPU ms/task median {statistics.median(cpus[label]):.2f} |")
    print()
    for label, values in rates.items():
        report.add(name, f"{label} tasks/s (median of {ROUNDS})", statistics.median(values))
    ratio = [p / b for p, b in zip(rates["procfile"], rates["bare Celery"])]
    gain = [p / o for p, o in zip(rates["procfile"], rates["one process"])]
    report.add(name, "procfile / one process (median of rounds)", statistics.median(gain))
    report.add(name, "procfile / bare Celery default (median of rounds)", statistics.median(ratio), ">= 0.8",
               statistics.median(ratio) >= 0.8)
