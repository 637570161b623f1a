"""Backoff for the durable outboxes (refunds, callbacks), the background jobs and the worker
processes: when to try again after failures."""

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
