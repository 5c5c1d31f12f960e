"""The measurement behind the Sentry ratio: it does a send's Sentry work, through the real SDK."""
from __future__ import annotations

from bench import sentry_cpu
from tests.sentry_receiver import SentryReceiver
from tests.support import wait_for


def test_a_measured_send_reports_its_outcome_and_samples_transactions():
    with SentryReceiver() as receiver:
        on = sentry_cpu.measure(receiver.dsn, runs=300)
        wait_for(lambda: len(receiver.logs()) >= sentry_cpu.WARM + 300, timeout=10)
        assert {log["attributes"]["outcome"] for log in receiver.logs()} == {"submitted"}
        assert 0 < len(receiver.transactions()) < sentry_cpu.WARM + 300  # sampled at the default rate
    off = sentry_cpu.measure("", runs=300)
    assert on["traces_sample_rate"] == off["traces_sample_rate"] > 0
    assert on["process_us"] > off["process_us"]
