"""Domain errors. Each carries a stable UPPER_SNAKE_CASE reason; the gRPC layer maps the classes
to status codes in one place (api/grpc/errors.py)."""

from __future__ import annotations

from dataclasses import dataclass


class DomainError(Exception):
    """Base of every error the service reports to its callers on purpose."""

    reason: str = "INTERNAL"

    def __init__(self, message: str, *, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata or {}


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


# Fields named in an InvalidArgument's message; its violations name them all. The message travels
# in a gRPC trailer (grpc-message, percent-encoded), which clients refuse beyond 8-16 KiB.
_FIELDS_IN_MESSAGE = 5


class InvalidArgument(DomainError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation]) -> None:
        fields = ", ".join(v.field for v in violations[:_FIELDS_IN_MESSAGE])
        if len(violations) > _FIELDS_IN_MESSAGE:
            fields += f" and {len(violations) - _FIELDS_IN_MESSAGE} more"
        super().__init__(f"invalid request: {fields}")
        self.violations = violations


class Unauthenticated(DomainError):
    reason = "UNAUTHENTICATED"


class OrderNotFound(DomainError):
    reason = "ORDER_NOT_FOUND"


class IdempotencyKeyReused(DomainError):
    reason = "IDEMPOTENCY_KEY_REUSED"


class IllegalTransition(DomainError):
    reason = "ILLEGAL_STATE_TRANSITION"


class OrderExpired(DomainError):
    reason = "ORDER_EXPIRED"


class BotNotConfigured(DomainError):
    reason = "BOT_NOT_CONFIGURED"


class TelegramRateLimited(DomainError):
    """Telegram answered 429; `retry_after` seconds come from its `parameters.retry_after`."""

    reason = "TELEGRAM_RATE_LIMITED"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, metadata={"retry_after": str(retry_after)})
        self.retry_after = retry_after


class TelegramRejected(DomainError):
    """Telegram answered 400 (or another 4xx): the request itself is wrong for Telegram."""

    reason = "TELEGRAM_REJECTED"


class TelegramUnavailable(DomainError):
    """Timeout, 5xx or network error: Telegram could not be reached; safe to retry."""

    reason = "TELEGRAM_UNAVAILABLE"


class CursorExpired(DomainError):
    """The cursor points before the retention horizon: events after it were pruned."""

    reason = "CURSOR_EXPIRED"


class ShuttingDown(DomainError):
    """This replica is stopping; resume on another one."""

    reason = "SHUTTING_DOWN"


# --- The Mini App edge (browser callers) --------------------------------------------------------


class ApplicationNotFound(DomainError):
    """No application has the id a browser named (X-App-Id)."""

    reason = "APP_NOT_FOUND"


class IdentityRefused(DomainError):
    """The browser's initData is missing, malformed, forged or stale; `reason` says which
    (INIT_DATA_MISSING, INIT_DATA_MALFORMED, INIT_DATA_INVALID, INIT_DATA_EXPIRED,
    INIT_DATA_FROM_FUTURE)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UserMismatch(DomainError):
    """The body names another user than the one the initData proves."""

    reason = "USER_MISMATCH"


class TelegramUserNotFound(DomainError):
    """The application's Mini App never saved this user (saveTgUser)."""

    reason = "USER_NOT_FOUND"


class OriginNotAllowed(DomainError):
    """The browser origin is not one of the application's Mini App origins."""

    reason = "ORIGIN_NOT_ALLOWED"


class RequestRejected(DomainError):
    """A browser request broke a rule about one field (the field is in `field`)."""

    def __init__(self, reason: str, field: str, message: str) -> None:
        super().__init__(message, metadata={"field": field})
        self.reason = reason
        self.field = field


class RateLimited(DomainError):
    """Too many requests from this user or application; retry after `retry_after` seconds."""

    reason = "RATE_LIMITED"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, metadata={"retry_after": str(retry_after)})
        self.retry_after = retry_after


# --- Fulfilment and refunds (AcknowledgeOrder, RetryRefund) -------------------------------------


class OrderNotPaid(DomainError):
    """The order was never paid (pending, failed, cancelled, expired): it has no goods to
    deliver."""

    reason = "ORDER_NOT_PAID"


class OrderRefunded(DomainError):
    """The order was refunded before its goods were delivered: there is nothing to deliver."""

    reason = "ORDER_REFUNDED"


class OrderAlreadyFulfilled(DomainError):
    """The order's delivery was acknowledged before, under another request id."""

    reason = "ORDER_ALREADY_FULFILLED"


class RefundNotFound(DomainError):
    """No refund of the application has this charge id."""

    reason = "REFUND_NOT_FOUND"


class RefundSucceeded(DomainError):
    """The refund succeeded: Telegram returned the Stars, there is nothing to send again."""

    reason = "REFUND_SUCCEEDED"


# --- Subscriptions (CancelSubscription, ResumeSubscription, refunding one period) ---------------


class SubscriptionNotEditable(DomainError):
    """The order's subscription cannot be cancelled or resumed: the order is not a subscription,
    its first payment has not started it, or it expired (the reason says which:
    domain/subscription.EditRefusal)."""

    reason = "SUBSCRIPTION_NOT_EDITABLE"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ChargeNotFound(DomainError):
    """The order has no charge with this id (RefundPayment's telegram_payment_charge_id)."""

    reason = "CHARGE_NOT_FOUND"
