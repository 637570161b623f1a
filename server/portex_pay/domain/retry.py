"""Backoff for the durable outboxes (refunds, callbacks), the background jobs and the worker
processes: when to try again after failures.

Callbacks keep trying for days, not hours: a merchant's receiver can be down over a weekend, and
Stripe and Adyen retry webhooks for three days and more. Their schedule is the exponential one
below with its own base and cap, and a delay drawn from [CALLBACK_JITTER * d, d] (so a receiver
back from an outage is not hit by every queued retry at once); `retry_span` is the least time the
whole schedule can take, which the defaults keep above three days.
"""

from __future__ import annotations

# A background task (service/worker.py) or a worker process (processes.py) that died is started
# again after 1 s, 2 s, 4 s, ... at most 30 s.
RESTART_BASE = 1.0
RESTART_CAP = 30.0
# Once it has run this long without dying, its backoff starts again (and a job that died
# FAILING_RESTARTS times within it is failing until it has run that long).
FAILING_WINDOW = 60.0


def backoff_seconds(attempts: int, *, base: float, cap: float) -> float:
    """Exponential: base, 2*base, 4*base, ... capped at `cap` (attempts counts failures so far)."""
    if attempts <= 0:
        return 0.0
    return float(min(cap, base * 2 ** min(attempts - 1, 60)))


# Callbacks: 1 s, 2 s, 4 s, ... 4.6 h, then every 6 h; 31 attempts span 3.1 to 4.1 days.
CALLBACK_BACKOFF_BASE = 1.0
CALLBACK_BACKOFF_CAP = 6 * 3600.0
CALLBACK_MAX_ATTEMPTS = 31
CALLBACK_JITTER = 0.75  # a delay is drawn from [CALLBACK_JITTER * d, d]


def retry_in(attempts: int, max_attempts: int, *, base: float, cap: float) -> float | None:
    """The delay (before jitter) after `attempts` failed attempts, or None when that was the
    last one allowed (the work is given up)."""
    if attempts >= max_attempts:
        return None
    return backoff_seconds(attempts, base=base, cap=cap)


def retry_span(max_attempts: int, *, base: float, cap: float, jitter: float = 1.0) -> float:
    """The least time from the first attempt to the last, each delay at `jitter` times its
    nominal value (1.0: the nominal span)."""
    delays = (retry_in(n, max_attempts, base=base, cap=cap) for n in range(1, max_attempts))
    return jitter * sum(delay for delay in delays if delay is not None)
