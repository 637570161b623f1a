"""When the Portex Pay clients retry a failed call, and how long they wait before doing so.

A unary call is retried by gRPC itself, from the channel's service config (`service_config`,
gRFC A6 ``retryPolicy``), never by a loop of ours: a failed attempt is retried only when its
status code is UNAVAILABLE, the RPC is safe to repeat (the reads; the writes that a repeat cannot
do twice, such as RefundPayment or CancelOrder; Pay, which the clients always send with a
``request_id`` the server de-duplicates on), and the policy allows another attempt; gRPC keeps
every attempt and wait within the call's one deadline, and honours a server's pushback
(``grpc-retry-pushback-ms``). The wait before retry n is about
``min(max_backoff, initial_backoff * multiplier**(n-1))``, jittered by gRPC. The same policy
type, with its own jitter, spaces a watch's reconnections (``portex_pay_client._watch``), which
resume from a cursor instead of repeating a call.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

import grpc  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "IDEMPOTENT_METHODS",
    "READ_ONLY_METHODS",
    "RETRIED_METHODS",
    "RETRYABLE_CODES",
    "SERVICE",
    "RetryPolicy",
    "is_retry_safe",
    "retried_methods",
    "service_config",
]

SERVICE = "portex.payment.v1.PaymentService"
"""The gRPC service the clients call, as its methods are named in a service config."""

GRPC_MAX_ATTEMPTS = 5
"""gRPC's own ceiling on attempts per call (gRFC A6): a larger `RetryPolicy.max_attempts` is
treated as this many for unary calls."""

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

RETRIED_METHODS: frozenset[str] = READ_ONLY_METHODS | IDEMPOTENT_METHODS | {"Pay"}
"""The RPCs that are safe to repeat and so are retried on UNAVAILABLE: the reads
(`READ_ONLY_METHODS`), the writes a repeat cannot do twice (`IDEMPOTENT_METHODS`), and Pay, which
the server de-duplicates on its ``request_id`` and which the clients always send with one (a UUID
of their own when the caller gives none). The one list both `is_retry_safe` and the service config
(`service_config`) read."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a client retries a call that failed with UNAVAILABLE.

    The retry after the n-th failed attempt waits up to
    ``b = min(max_backoff, initial_backoff * multiplier**(n-1))``: with the defaults about 0.1 s,
    0.2 s, 0.4 s, for at most 4 attempts in all. A client turns it into its channel's service
    config (`service_config`), and gRPC retries unary calls by it within each call's one deadline;
    a watch waits by `backoff` between reconnections. ``RetryPolicy.disabled()`` never retries.
    """

    max_attempts: int = 4
    """Attempts in all, the first one included; 1 disables retries. gRPC retries a unary call
    at most `GRPC_MAX_ATTEMPTS` (5) times in all, whatever this says."""
    initial_backoff: float = 0.1
    """The longest wait before the first retry, in seconds."""
    max_backoff: float = 2.0
    """No wait is longer than this, in seconds."""
    multiplier: float = 2.0
    """Each retry's longest wait is this many times the previous one's (until `max_backoff`)."""
    jitter: float = 0.2
    """A watch's reconnections: up to this fraction of a wait is taken off at random (0 makes
    waits deterministic). gRPC's retries of unary calls wait a random time in [0, wait]."""
    wait_for_ready: bool = False
    """Unary calls wait, within their deadline, for a server to accept the connection instead of
    failing at once with UNAVAILABLE while nothing listens (gRPC's wait-for-ready), e.g. for a
    client started before its server."""

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


def is_retry_safe(method: str) -> bool:
    """Whether repeating ``method`` (its proto name, e.g. ``"Pay"``) through a Portex Pay client
    cannot do anything twice, i.e. whether it is in `RETRIED_METHODS`.

    Pay is safe because the clients always fill in its ``request_id``. Any other method is treated
    as unsafe. (StreamInvoiceEvents is not retried as a call: `AsyncPaymentClient.watch` resumes
    it from its last cursor instead, see ``portex_pay_client._watch``.)
    """
    return method in RETRIED_METHODS


def retried_methods() -> list[str]:
    """`RETRIED_METHODS`, sorted: the RPCs gRPC may repeat."""
    return sorted(RETRIED_METHODS)


def _seconds(value: float) -> str:
    """A protobuf Duration in JSON: seconds with up to nanosecond digits, then ``s``."""
    return f"{value:.9f}".rstrip("0").rstrip(".") + "s"


def service_config(policy: RetryPolicy) -> str:
    """The channel's service config (JSON, for the ``grpc.service_config`` channel option) that
    makes gRPC retry UNAVAILABLE on `retried_methods` as ``policy`` says; every other method
    (DeleteCatalogItem, the streams) is sent once. ``wait_for_ready`` applies to every method."""
    retried: dict[str, object] = {
        "name": [{"service": SERVICE, "method": method} for method in retried_methods()],
        "waitForReady": policy.wait_for_ready,
    }
    attempts = min(policy.max_attempts, GRPC_MAX_ATTEMPTS)
    if attempts > 1:
        retried["retryPolicy"] = {
            "maxAttempts": attempts,
            "initialBackoff": _seconds(policy.initial_backoff),
            "maxBackoff": _seconds(policy.max_backoff),
            "backoffMultiplier": policy.multiplier,
            "retryableStatusCodes": sorted(code.name for code in RETRYABLE_CODES),
        }
    others = {"name": [{"service": SERVICE}], "waitForReady": policy.wait_for_ready}
    return json.dumps({"methodConfig": [retried, others]}, separators=(",", ":"))
