"""Backoff for the durable outboxes (refunds, callbacks): when to try again after failures."""

from __future__ import annotations


def backoff_seconds(attempts: int, *, base: float, cap: float) -> float:
    """Exponential: base, 2*base, 4*base, ... capped at `cap` (attempts counts failures so far)."""
    if attempts <= 0:
        return 0.0
    return float(min(cap, base * 2 ** min(attempts - 1, 60)))
