"""How long a send waits, holds and may be late: each bound derived from what it must stay
under, and the orders that must hold checked when the module loads.

The lease of an attempt (worker/stores/__init__.py) covers the Submit plus a margin; a
process's heartbeat (worker/stores/heartbeats.py) lapses only after the whole process stood
still for ``TTL_SECONDS - BEAT_SECONDS``. A Submit made within :data:`CLAIM_AFTER_SECONDS` of
the gate needs no second look at the request's record; the longest hold for a slot plus the
latest use of it stays under that, so a send on time is one round trip before its Submit.
"""
from __future__ import annotations

from config.settings import Rate
from worker.stores import LEASE_MARGIN_SECONDS
from worker.stores.heartbeats import BEAT_SECONDS, TTL_SECONDS

#: How often a request another worker is sending is looked at again.
BUSY_POLL_SECONDS = 1.0
#: A Submit this soon after the gate goes without a second look at the request's record: its
#: lease cannot have passed to another worker by then (a quarter of the time this process's
#: heartbeat takes to lapse, and less than the lease's margin over the Submit). The time left
#: before the code's deadline is counted here from the gate's answer.
CLAIM_AFTER_SECONDS = (TTL_SECONDS - BEAT_SECONDS) / 4
#: A rate-limit wait up to this long is spent in the worker thread; a longer one parks the task.
MAX_HOLD_SECONDS = 0.5
#: A Submit about to go later than its slot by more than a quarter of the account's interval
#: (at least MIN_LATE_SECONDS, at most MAX_LATE_SECONDS) uses the slot late, as the account's
#: GCRA allows (worker/stores/gate_late.lua): a thread that woke late on a busy
#: worker. Above 5/s it is MIN_LATE_SECONDS, so a loaded worker's scheduling jitter costs no
#: round trip.
MIN_LATE_SECONDS, MAX_LATE_SECONDS = 0.05, 0.2
#: How late a parked task, back through the mover and the queue, may use the slot it
#: reserved: as late as a thread may; later, it reserves a new one.
PARKED_LATE_SECONDS = MAX_LATE_SECONDS
#: A send this host cannot make (its account paused here only, no fallback) goes back to the
#: queue after this delay, for another host...
HAND_BACK_DELAY = 0.5
#: ... for this long after its first attempt at most; then it is dead-lettered. One host alone
#: (or every host paused) so dead-letters its sends this much later than a pool-wide pause.
HAND_BACK_SECONDS = 10.0

assert 0 < MIN_LATE_SECONDS <= MAX_LATE_SECONDS
assert MAX_HOLD_SECONDS + MAX_LATE_SECONDS < CLAIM_AFTER_SECONDS, "a send on time would need a claim"
assert CLAIM_AFTER_SECONDS < TTL_SECONDS - BEAT_SECONDS, "a lease could pass on while unclaimed"
assert CLAIM_AFTER_SECONDS < LEASE_MARGIN_SECONDS, "an unclaimed Submit could outlast its lease"
assert HAND_BACK_DELAY < HAND_BACK_SECONDS


def late_allowance(rate: Rate) -> float:
    """How late a Submit may use a slot of ``rate``: see MIN_LATE_SECONDS."""
    return min(MAX_LATE_SECONDS, max(MIN_LATE_SECONDS, rate.period / rate.limit / 4))
