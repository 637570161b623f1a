"""When the Portex Pay clients retry a failed call, and how long they wait before doing so.

The decision is made by pure functions so that it can be read and tested on its own: a failed
attempt is retried only when its status code is UNAVAILABLE, the RPC is safe to repeat (the
reads; the writes that a repeat cannot do twice, such as RefundPayment or CancelOrder; Pay only
when it carries a ``request_id``, which the server de-duplicates on), the `RetryPolicy` allows
another attempt, and the wait still fits in the call's overall deadline. The wait grows
exponentially from `RetryPolicy.initial_backoff`, is capped at `RetryPolicy.max_backoff` and is
shortened by up to `RetryPolicy.jitter` of itself at random, so that clients that failed together
do not come back together. The same backoff spaces a watch's reconnections
(``portex_pay_client._watch``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import grpc  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "IDEMPOTENT_METHODS",
    "READ_ONLY_METHODS",
    "RETRYABLE_CODES",
    "RetryPolicy",
    "is_retry_safe",
    "retry_delay",
]

RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})
"""The only status codes that are ever retried; every other code reaches the caller at once."""

READ_ONLY_METHODS: frozenset[str] = frozenset(
    {
        "QueryOrder",
        "ResumePayment",
        "ListOrders",
        "ListRefunds",
        "ListEvents",
        "ListCatalogItems",
        "GetTelegramUser",
        "GetBotMessages",
        "ListStarTransactions",
        "GetStarBalance",
    }
)
"""RPCs (by their name in the proto service) that change nothing and so may always be repeated."""

IDEMPOTENT_METHODS: frozenset[str] = frozenset(
    {
        # The server keys these on what they change: a repeat finds the change made and answers
        # as the first call did (payment.proto says so for each).
        "RefundPayment",  # one refund per order: asking again returns the same refund
        "CancelOrder",  # cancelling a cancelled order is a no-op
        "AcknowledgeOrder",  # acknowledging again returns the order unchanged
        "RetryRefund",  # a refund already pending again is returned as it is
        "ReportInvoiceClosed",  # records the same report again
        "SetCatalogItem",  # replaces the item with the same fields
        "SetBotMessages",  # sets the same texts
        "CancelSubscription",  # cancelling a cancelled subscription returns the order unchanged
        "ResumeSubscription",  # resuming an active subscription returns the order unchanged
    }
)
"""RPCs that change something but that a repeat cannot change twice, so may be repeated.

DeleteCatalogItem is not among them: a repeat after a lost answer would report ``deleted=False``
for the item the first attempt deleted."""

IDEMPOTENT_WITH_REQUEST_ID: frozenset[str] = frozenset({"Pay"})
"""RPCs that the server de-duplicates on a non-empty ``request_id`` and only then may repeat."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a client retries a call that failed with UNAVAILABLE.

    The retry after the n-th failed attempt waits a random time in
    ``[b * (1 - jitter), b]`` with ``b = min(max_backoff, initial_backoff * multiplier**(n-1))``;
    with the defaults: about 0.1 s, 0.2 s, 0.4 s, for at most 4 attempts in all. The call's
    deadline bounds all attempts and waits together. ``RetryPolicy.disabled()`` never retries.
    """

    max_attempts: int = 4
    """Attempts in all, the first one included; 1 disables retries."""
    initial_backoff: float = 0.1
    """The longest wait before the first retry, in seconds."""
    max_backoff: float = 2.0
    """No wait is longer than this, in seconds."""
    multiplier: float = 2.0
    """Each retry's longest wait is this many times the previous one's (until `max_backoff`)."""
    jitter: float = 0.2
    """Up to this fraction of a wait is taken off at random (0 makes waits deterministic)."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff <= 0:
            raise ValueError("initial_backoff must be positive")
        if self.max_backoff < self.initial_backoff:
            raise ValueError("max_backoff must not be below initial_backoff")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """A policy that makes exactly one attempt."""
        return cls(max_attempts=1)

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based) before the next.

        ``rand`` returns a float in [0, 1); it is injectable to make the jitter deterministic.
        """
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        try:
            grown = self.initial_backoff * float(self.multiplier) ** (attempt - 1)
        except OverflowError:  # a watch that has failed for hours: long since at the cap
            grown = self.max_backoff
        ceiling = min(self.max_backoff, grown)
        return ceiling * (1.0 - self.jitter * rand())


def is_retry_safe(method: str, *, request_id: str = "") -> bool:
    """Whether repeating ``method`` (its proto name, e.g. ``"Pay"``) cannot do anything twice.

    The reads (`READ_ONLY_METHODS`) and the writes a repeat cannot do twice
    (`IDEMPOTENT_METHODS`) are safe. Pay is safe only with a non-empty ``request_id``: without one
    every call creates a new order. Any other method is treated as unsafe. (StreamInvoiceEvents is
    not retried as a call: `AsyncPaymentClient.watch` resumes it from its last cursor instead, see
    ``portex_pay_client._watch``.)
    """
    if method in READ_ONLY_METHODS or method in IDEMPOTENT_METHODS:
        return True
    return method in IDEMPOTENT_WITH_REQUEST_ID and request_id != ""


def retry_delay(
    policy: RetryPolicy,
    *,
    method: str,
    code: grpc.StatusCode,
    attempt: int,
    time_remaining: float,
    request_id: str = "",
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before retrying a failed attempt, or None when it must not be retried.

    ``attempt`` is the 1-based number of the attempt that just failed with ``code``;
    ``time_remaining`` is what is left of the call's overall deadline, in seconds. A server's
    ``retry_after`` (``google.rpc.RetryInfo``) lengthens the wait, never shortens it. No retry
    is planned whose wait would use up the rest of the deadline.
    """
    if code not in RETRYABLE_CODES:
        return None
    if not is_retry_safe(method, request_id=request_id):
        return None
    if attempt >= policy.max_attempts:
        return None
    delay = policy.backoff(attempt, rand)
    if retry_after is not None:
        delay = max(delay, retry_after)
    if delay >= time_remaining:
        return None
    return delay
