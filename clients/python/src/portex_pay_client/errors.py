"""The one exception both Portex Pay clients raise, and how it is read from a failed RPC.

Every RPC failure reaches the caller as a `PortexPayError` carrying the gRPC status code, the
status message and the rich error details that the server packs into the
``grpc-status-details-bin`` trailer as a ``google.rpc.Status``: a ``google.rpc.ErrorInfo``
(domain ``pay.portex.dev``, a machine-readable UPPER_SNAKE_CASE reason), a
``google.rpc.BadRequest`` with one field violation per bad field, and a ``google.rpc.RetryInfo``
when the server knows how long to wait. The convenience properties `reason`,
`field_violations` and `retry_after` read those details; `details` holds all of them, unpacked
into their own message classes (detail types unknown to this process stay ``google.protobuf.Any``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

__all__ = ["ERROR_DOMAIN", "PortexPayError"]

ERROR_DOMAIN = "pay.portex.dev"
"""The ``google.rpc.ErrorInfo.domain`` of every error the Portex Pay server raises."""


class PortexPayError(Exception):
    """A failed Portex Pay RPC: its status code, message and unpacked ``google.rpc.Status`` details.

    Raised by every method of `PaymentClient` and `AsyncPaymentClient`, with the original
    ``grpc.RpcError`` as ``__cause__``. ``str(err)`` reads ``"CODE: message (reason=REASON)"``.
    """

    code: grpc.StatusCode
    """The gRPC status code, e.g. ``grpc.StatusCode.INVALID_ARGUMENT``."""
    message: str
    """The status message (gRPC's "details" string); empty when the server sent none."""
    details: list[Message]
    """The ``google.rpc.Status.details``, each unpacked into its own message class."""

    def __init__(
        self, code: grpc.StatusCode, message: str = "", details: Iterable[Message] = ()
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.details = list(details)

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> PortexPayError:
        """Reads the code, message and rich details of a failed call (sync or ``grpc.aio``).

        The details come from the ``grpc-status-details-bin`` trailer; when it is missing,
        undecodable or disagrees with the call's own code or message, `details` is empty.
        The result is not chained to ``error``: raise it ``from error``.
        """
        if not isinstance(error, (grpc.aio.AioRpcError, grpc.Call)):
            # A bare grpc.RpcError carries no status (grpc raises those only for misuse).
            return cls(grpc.StatusCode.UNKNOWN, str(error))
        code: grpc.StatusCode = error.code()
        message = error.details() or ""
        details: list[Message] = []
        try:
            status: Any = rpc_status.from_call(error)
        except (ValueError, DecodeError):
            status = None
        if status is not None:
            details = [_unpack(packed) for packed in status.details]
        return cls(code, message, details)

    @property
    def error_info(self) -> error_details_pb2.ErrorInfo | None:
        """The first ``google.rpc.ErrorInfo`` among the details, if any."""
        for detail in self.details:
            if isinstance(detail, error_details_pb2.ErrorInfo):
                return detail
        return None

    @property
    def reason(self) -> str | None:
        """``ErrorInfo.reason`` (e.g. ``"IDEMPOTENCY_KEY_REUSED"``), or None without ErrorInfo."""
        info = self.error_info
        return None if info is None else str(info.reason)

    @property
    def field_violations(self) -> dict[str, str]:
        """Field path to description, from every ``google.rpc.BadRequest`` among the details.

        Several violations of one field are joined with ``"; "``.
        """
        violations: dict[str, str] = {}
        for detail in self.details:
            if not isinstance(detail, error_details_pb2.BadRequest):
                continue
            for violation in detail.field_violations:
                field = str(violation.field)
                description = str(violation.description)
                if field in violations:
                    violations[field] = f"{violations[field]}; {description}"
                else:
                    violations[field] = description
        return violations

    @property
    def retry_after(self) -> float | None:
        """``RetryInfo.retry_delay`` in seconds, or None when the server sent no RetryInfo."""
        for detail in self.details:
            if isinstance(detail, error_details_pb2.RetryInfo):
                delay = detail.retry_delay
                return float(delay.seconds) + float(delay.nanos) / 1e9
        return None

    def __str__(self) -> str:
        text = str(self.code.name)
        if self.message:
            text = f"{text}: {self.message}"
        reason = self.reason
        if reason:
            text = f"{text} (reason={reason})"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code}, message={self.message!r}, "
            f"reason={self.reason!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message, self.details))


def _unpack(packed: any_pb2.Any) -> Message:
    """Unpacks one ``google.protobuf.Any`` into its own class, or returns it packed if unknown."""
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(packed.TypeName())
    except KeyError:
        return packed
    message: Message = message_factory.GetMessageClass(descriptor)()
    if not packed.Unpack(message):
        return packed
    return message
