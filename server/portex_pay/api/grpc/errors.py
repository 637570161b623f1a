"""Domain errors become gRPC statuses here, and only here (AIP-193).

Every error carries a google.rpc.ErrorInfo (reason, domain, metadata); invalid input also carries a
google.rpc.BadRequest with one field violation per bad field, and a rate limit (Telegram's, or
ours per application) a google.rpc.RetryInfo built from its `retry_after`.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from portex_pay.domain import errors
from portex_pay.service.outage import is_unavailable

ERROR_DOMAIN = "pay.portex.dev"

_CODES: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.OrderNotFound: grpc.StatusCode.NOT_FOUND,
    errors.IdempotencyKeyReused: grpc.StatusCode.ALREADY_EXISTS,
    errors.IllegalTransition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.OrderExpired: grpc.StatusCode.FAILED_PRECONDITION,
    errors.BotNotConfigured: grpc.StatusCode.FAILED_PRECONDITION,
    errors.TelegramRateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.TelegramRejected: grpc.StatusCode.FAILED_PRECONDITION,
    errors.TelegramUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.CursorExpired: grpc.StatusCode.OUT_OF_RANGE,
    errors.ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    errors.ApplicationNotFound: grpc.StatusCode.NOT_FOUND,
    errors.TelegramUserNotFound: grpc.StatusCode.NOT_FOUND,
    errors.IdentityRefused: grpc.StatusCode.UNAUTHENTICATED,
    errors.UserMismatch: grpc.StatusCode.PERMISSION_DENIED,
    errors.OriginNotAllowed: grpc.StatusCode.PERMISSION_DENIED,
    errors.RequestRejected: grpc.StatusCode.INVALID_ARGUMENT,
    errors.RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.OrderNotPaid: grpc.StatusCode.FAILED_PRECONDITION,
    errors.OrderRefunded: grpc.StatusCode.FAILED_PRECONDITION,
    errors.OrderAlreadyFulfilled: grpc.StatusCode.ALREADY_EXISTS,
    errors.RefundNotFound: grpc.StatusCode.NOT_FOUND,
    errors.RefundSucceeded: grpc.StatusCode.FAILED_PRECONDITION,
    errors.SubscriptionNotEditable: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ChargeNotFound: grpc.StatusCode.NOT_FOUND,
}


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_code_for(error: errors.DomainError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def to_status(error: errors.DomainError) -> grpc.Status:
    code = status_code_for(error)
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
            )
        )
    ]
    if isinstance(error, errors.InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    if isinstance(error, errors.TelegramRateLimited | errors.RateLimited):
        details.append(
            _pack(
                error_details_pb2.RetryInfo(
                    retry_delay=duration_pb2.Duration(seconds=error.retry_after)
                )
            )
        )
    status = status_pb2.Status(
        code=getattr(code_pb2, code.name), message=error.message, details=details
    )
    result: grpc.Status = rpc_status.to_status(status)
    return result


def is_database_outage(error: BaseException) -> bool:
    """PostgreSQL cannot do the work now (as opposed to a bug): the caller may retry."""
    return is_unavailable(error)


def undecodable_status(type_name: str) -> grpc.Status:
    """The status for request bytes that are not the RPC's request message."""
    status = status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT,
        message=f"request is not a valid {type_name}",
        details=[
            _pack(error_details_pb2.ErrorInfo(reason="INVALID_ARGUMENT", domain=ERROR_DOMAIN))
        ],
    )
    result: grpc.Status = rpc_status.to_status(status)
    return result


def unexpected_status(error: BaseException) -> grpc.Status:
    """The status for an exception that is not a domain error."""
    if is_database_outage(error):
        code, reason, message = code_pb2.UNAVAILABLE, "DATABASE_UNAVAILABLE", "database unavailable"
    else:
        code, reason, message = code_pb2.INTERNAL, "INTERNAL", "internal error"
    status = status_pb2.Status(
        code=code,
        message=message,
        details=[_pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))],
    )
    result: grpc.Status = rpc_status.to_status(status)
    return result
