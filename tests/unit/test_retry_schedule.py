"""The durable outboxes' retry schedule (domain/retry.py), as pure functions: callbacks keep
trying for over three days by default, as Stripe and Adyen do."""

from __future__ import annotations

import pytest

from portex_pay.config import Settings
from portex_pay.domain.retry import (
    CALLBACK_BACKOFF_BASE,
    CALLBACK_BACKOFF_CAP,
    CALLBACK_JITTER,
    CALLBACK_MAX_ATTEMPTS,
    retry_in,
    retry_span,
)

DAY = 86_400.0
SCHEDULE = {"base": CALLBACK_BACKOFF_BASE, "cap": CALLBACK_BACKOFF_CAP}


def test_the_default_callback_schedule_spans_over_three_days_even_at_the_least_jitter() -> None:
    attempts = Settings().callback.max_attempts
    assert attempts == CALLBACK_MAX_ATTEMPTS
    least = retry_span(attempts, **SCHEDULE, jitter=CALLBACK_JITTER)
    most = retry_span(attempts, **SCHEDULE)
    assert 3 * DAY <= least < most < 5 * DAY


def test_callback_delays_double_from_one_second_up_to_six_hours() -> None:
    delays = [retry_in(n, CALLBACK_MAX_ATTEMPTS, **SCHEDULE) for n in range(1, 18)]
    assert delays[:5] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert delays[14] == 16_384.0  # 4.6 h: the last doubling below the cap
    assert delays[15:] == [6 * 3600.0, 6 * 3600.0]


def test_the_last_allowed_attempt_gives_up() -> None:
    assert retry_in(CALLBACK_MAX_ATTEMPTS - 1, CALLBACK_MAX_ATTEMPTS, **SCHEDULE) == 6 * 3600.0
    assert retry_in(CALLBACK_MAX_ATTEMPTS, CALLBACK_MAX_ATTEMPTS, **SCHEDULE) is None
    assert retry_in(1, 1, **SCHEDULE) is None


@pytest.mark.parametrize(
    ("max_attempts", "span"),
    [(1, 0.0), (2, 1.0), (3, 3.0), (4, 7.0)],
)
def test_the_span_is_the_sum_of_the_delays_between_attempts(max_attempts: int, span: float) -> None:
    assert retry_span(max_attempts, **SCHEDULE) == span
    assert retry_span(max_attempts, **SCHEDULE, jitter=0.5) == span / 2
