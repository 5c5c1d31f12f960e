"""Backoff: full jitter inside an exponentially growing, capped window."""
from __future__ import annotations

import random

from worker.sending.retry import RECORD_SUBMITTED, STATE_STORE, full_jitter


def test_window_doubles_and_is_capped():
    top = [full_jitter(n, 1.0, 30.0, rng=lambda: 1.0) for n in range(1, 8)]
    assert top == [1, 2, 4, 8, 16, 30, 30]
    assert full_jitter(3, 1.0, 30.0, rng=lambda: 0.0) == 0


def test_delays_are_spread_over_the_window():
    rng = random.Random(7)
    delays = [full_jitter(4, 1.0, 30.0, rng=rng.random) for _ in range(1000)]
    assert 0 <= min(delays) < 0.5 and 7.5 < max(delays) <= 8


def test_the_record_of_an_accepted_submit_is_retried_without_jitter_up_to_its_cap():
    assert [RECORD_SUBMITTED.delay(n) for n in range(1, 7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0]


def test_the_state_store_backoff_stays_under_its_cap():
    assert all(0 <= STATE_STORE.delay(n) <= 5.0 for n in range(1, 20))
