"""Unit tests of the Python client's server-free parts: PortexPayError, retries, request building.

PortexPayError is built from real ``grpc.aio.AioRpcError`` values whose trailers carry a
``google.rpc.Status`` made with ``grpc_status.rpc_status``; the retry decision is tested as the
pure functions it is, and the retry loop with a fake clock, a fake sleep and fake attempts.
What needs a live server (metadata on the wire, real UNAVAILABLE, deadlines enforced by gRPC) is
left to the end-to-end tests.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2, duration_pb2, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from portex.payment.v1 import payment_pb2
from portex_pay_client import (
    DEFAULT_RETRY_POLICY,
    ERROR_DOMAIN,
    NOW,
    AsyncPaymentClient,
    CatalogItem,
    ListEventsRequest,
    ListRefundsRequest,
    PaymentClient,
    PayRequest,
    PortexPayError,
    QueryOrderRequest,
    Refund,
    RefundPaymentRequest,
    ResumePaymentRequest,
    RetryPolicy,
    SetCatalogItemRequest,
)
from portex_pay_client._calls import (
    ApiKey,
    build_list_star_transactions_request,
    build_named_request,
    build_pay_request,
    build_query_order_request,
    build_request,
    build_resume_payment_request,
    build_set_catalog_item_request,
    channel_options,
    resolve_timeout,
)
from portex_pay_client._watch import build_list_events_request
from portex_pay_client.retry import (
    RETRYABLE_CODES,
    SERVICE,
    is_retry_safe,
    retried_methods,
    service_config,
)

SECRET = "pk_live_very-secret-key"


# --- helpers -----------------------------------------------------------------------------------


def packed(message: Message) -> any_pb2.Any:
    container = any_pb2.Any()
    container.Pack(message)
    return container


def error_info(reason: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(
        reason=reason, domain=ERROR_DOMAIN, metadata={"field": "amount"}
    )


def bad_request(*violations: tuple[str, str]) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
            for field, description in violations
        ]
    )


def retry_info(seconds: int, nanos: int = 0) -> error_details_pb2.RetryInfo:
    return error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos)
    )


def aio_error(
    code: grpc.StatusCode,
    message: str,
    details: Sequence[Message] = (),
    *,
    trailers: Sequence[tuple[str, str | bytes]] | None = None,
) -> grpc.aio.AioRpcError:
    """A real AioRpcError whose trailers are what a grpc.aio server sends for such a status."""
    if trailers is None:
        status = status_pb2.Status(
            code=code.value[0], message=message, details=[packed(d) for d in details]
        )
        trailers = rpc_status.to_status(status).trailing_metadata
    return grpc.aio.AioRpcError(
        code=code,
        initial_metadata=grpc.aio.Metadata(),
        trailing_metadata=grpc.aio.Metadata(*trailers),
        details=message,
    )


class SyncCallError(grpc.RpcError, grpc.Call):  # type: ignore[misc, unused-ignore]
    """The shape of the error a blocking grpc stub raises: an RpcError that is also a Call."""

    def __init__(
        self, code: grpc.StatusCode, message: str, trailers: Sequence[tuple[str, Any]]
    ) -> None:
        super().__init__()
        self._code = code
        self._message = message
        self._trailers = tuple(trailers)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self) -> Any:
        return self._trailers

    def initial_metadata(self) -> tuple[tuple[str, Any], ...]:
        return ()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return False

    def cancel(self) -> bool:
        return False

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0


UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


# --- PortexPayError from a failed call --------------------------------------------------------


def test_error_exposes_everything_the_server_packed() -> None:
    rpc_error = aio_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "2 fields are invalid",
        [
            error_info("INVALID_FIELDS"),
            bad_request(
                ("amount", "must be positive"),
                ("title", "must be 1-32 characters"),
                ("amount", "must be at most 10000"),
            ),
            retry_info(1, 500_000_000),
        ],
    )

    err = PortexPayError.from_rpc_error(rpc_error)

    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.message == "2 fields are invalid"
    assert [type(d) for d in err.details] == [
        error_details_pb2.ErrorInfo,
        error_details_pb2.BadRequest,
        error_details_pb2.RetryInfo,
    ]
    assert err.reason == "INVALID_FIELDS"
    assert err.error_info is not None
    assert err.error_info.domain == ERROR_DOMAIN
    assert dict(err.error_info.metadata) == {"field": "amount"}
    assert err.field_violations == {
        "amount": "must be positive; must be at most 10000",
        "title": "must be 1-32 characters",
    }
    assert err.retry_after == pytest.approx(1.5)
    assert str(err) == "INVALID_ARGUMENT: 2 fields are invalid (reason=INVALID_FIELDS)"
    assert "INVALID_FIELDS" in repr(err)


def test_resource_exhausted_carries_retry_after() -> None:
    rpc_error = aio_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "Telegram rate limit",
        [error_info("TELEGRAM_RATE_LIMITED"), retry_info(3)],
    )

    err = PortexPayError.from_rpc_error(rpc_error)

    assert err.retry_after == 3.0
    assert err.field_violations == {}
    assert str(err) == "RESOURCE_EXHAUSTED: Telegram rate limit (reason=TELEGRAM_RATE_LIMITED)"


def test_error_without_details_trailer() -> None:
    err = PortexPayError.from_rpc_error(aio_error(UNAVAILABLE, "connection refused", trailers=()))

    assert err.code is UNAVAILABLE
    assert err.message == "connection refused"
    assert err.details == []
    assert err.error_info is None
    assert err.reason is None
    assert err.field_violations == {}
    assert err.retry_after is None
    assert str(err) == "UNAVAILABLE: connection refused"


def test_error_without_message_reads_code_and_reason() -> None:
    err = PortexPayError.from_rpc_error(
        aio_error(grpc.StatusCode.NOT_FOUND, "", [error_info("ORDER_NOT_FOUND")])
    )

    assert str(err) == "NOT_FOUND (reason=ORDER_NOT_FOUND)"


def test_status_details_that_contradict_the_call_are_ignored() -> None:
    status = status_pb2.Status(
        code=code_pb2.NOT_FOUND, message="other", details=[packed(error_info("X"))]
    )
    trailers = rpc_status.to_status(status).trailing_metadata

    err = PortexPayError.from_rpc_error(
        aio_error(grpc.StatusCode.INTERNAL, "boom", trailers=trailers)
    )

    assert (err.code, err.message, err.details) == (grpc.StatusCode.INTERNAL, "boom", [])


def test_undecodable_details_trailer_is_ignored() -> None:
    err = PortexPayError.from_rpc_error(
        aio_error(
            grpc.StatusCode.INTERNAL,
            "boom",
            trailers=[("grpc-status-details-bin", b"\xff\xff\xff not a status")],
        )
    )

    assert (err.code, err.message, err.details) == (grpc.StatusCode.INTERNAL, "boom", [])


def test_unknown_detail_types_stay_packed() -> None:
    unknown = any_pb2.Any(type_url="type.googleapis.com/acme.v1.Mystery", value=b"\x08\x01")
    status = status_pb2.Status(
        code=code_pb2.FAILED_PRECONDITION,
        message="Telegram said no",
        details=[unknown, packed(timestamp_pb2.Timestamp(seconds=5))],
    )
    trailers = rpc_status.to_status(status).trailing_metadata

    err = PortexPayError.from_rpc_error(
        aio_error(grpc.StatusCode.FAILED_PRECONDITION, "Telegram said no", trailers=trailers)
    )

    assert err.details[0] == unknown
    assert err.details[1] == timestamp_pb2.Timestamp(seconds=5)
    assert err.reason is None


def test_error_from_a_blocking_call() -> None:
    status = status_pb2.Status(
        code=code_pb2.ALREADY_EXISTS,
        message="request_id was used with other fields",
        details=[packed(error_info("IDEMPOTENCY_KEY_REUSED"))],
    )
    rpc_error = SyncCallError(
        grpc.StatusCode.ALREADY_EXISTS,
        "request_id was used with other fields",
        rpc_status.to_status(status).trailing_metadata,
    )

    err = PortexPayError.from_rpc_error(rpc_error)

    assert err.code is grpc.StatusCode.ALREADY_EXISTS
    assert err.reason == "IDEMPOTENCY_KEY_REUSED"


def test_bare_rpc_error_is_unknown() -> None:
    err = PortexPayError.from_rpc_error(grpc.RpcError("odd"))

    assert err.code is grpc.StatusCode.UNKNOWN
    assert err.details == []


def test_error_survives_pickling() -> None:
    err = PortexPayError(grpc.StatusCode.INVALID_ARGUMENT, "bad", [error_info("INVALID_FIELDS")])

    copy = pickle.loads(pickle.dumps(err))  # noqa: S301 (our own bytes)

    assert (copy.code, copy.message, copy.details) == (err.code, err.message, err.details)
    assert str(copy) == str(err)


# --- which calls are retried ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "safe"),
    [
        ("QueryOrder", True),
        ("ResumePayment", True),
        ("ListOrders", True),
        ("ListRefunds", True),
        ("ListEvents", True),
        ("ListStarTransactions", True),
        ("GetStarBalance", True),
        ("ListCatalogItems", True),
        ("GetTelegramUser", True),
        ("GetBotMessages", True),
        ("RefundPayment", True),
        ("CancelOrder", True),
        ("AcknowledgeOrder", True),
        ("RetryRefund", True),
        ("ReportInvoiceClosed", True),
        ("SetCatalogItem", True),
        ("SetBotMessages", True),
        ("CancelSubscription", True),
        ("ResumeSubscription", True),
        ("DeleteCatalogItem", False),
        ("Pay", True),  # the clients always send a request_id, which the server de-duplicates on
        ("StreamInvoiceEvents", False),
        ("SomethingNew", False),
    ],
)
def test_retry_safety(method: str, safe: bool) -> None:
    assert is_retry_safe(method) is safe


def _method_configs(policy: RetryPolicy) -> list[dict[str, Any]]:
    configs: list[dict[str, Any]] = json.loads(service_config(policy))["methodConfig"]
    return configs


def test_the_service_config_retries_exactly_the_calls_safe_to_repeat() -> None:
    """gRPC repeats what the service config names: every PaymentService RPC that is safe to
    repeat (Pay because the clients always give it a request_id), and nothing else."""
    rpcs = payment_pb2.DESCRIPTOR.services_by_name["PaymentService"].methods_by_name
    unary = {name for name, rpc in rpcs.items() if not rpc.server_streaming}
    safe = {name for name in unary if is_retry_safe(name)}
    retried, others = _method_configs(DEFAULT_RETRY_POLICY)
    assert {entry["method"] for entry in retried["name"]} == safe == set(retried_methods())
    assert {entry["service"] for entry in retried["name"]} == {SERVICE}
    assert "DeleteCatalogItem" in unary - safe  # a repeat would report deleted=False
    assert others == {"name": [{"service": SERVICE}], "waitForReady": False}  # sent once


def test_the_service_config_carries_the_policy() -> None:
    retried, _ = _method_configs(DEFAULT_RETRY_POLICY)
    assert retried["retryPolicy"] == {
        "maxAttempts": 4,
        "initialBackoff": "0.1s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2.0,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    assert frozenset({UNAVAILABLE}) == RETRYABLE_CODES
    patient, _ = _method_configs(
        RetryPolicy(max_attempts=1000, initial_backoff=0.05, max_backoff=0.25, wait_for_ready=True)
    )
    assert patient["retryPolicy"]["maxAttempts"] == 5  # gRPC's ceiling
    assert (patient["retryPolicy"]["initialBackoff"], patient["waitForReady"]) == ("0.05s", True)
    never, _ = _method_configs(RetryPolicy.disabled())
    assert "retryPolicy" not in never  # one attempt


def test_a_clients_channel_carries_the_service_config_and_the_callers_options_win() -> None:
    options = dict(channel_options(None, RetryPolicy(max_attempts=2)))
    assert options["grpc.enable_retries"] == 1
    assert json.loads(options["grpc.service_config"]) == json.loads(
        service_config(RetryPolicy(max_attempts=2))
    )
    own = dict(channel_options([("grpc.service_config", "{}")]))
    assert own["grpc.service_config"] == "{}"


def test_default_backoff_grows_from_a_tenth_of_a_second_to_two_seconds() -> None:
    policy = DEFAULT_RETRY_POLICY
    no_jitter = [policy.backoff(n, rand=lambda: 0.0) for n in range(1, 9)]
    assert no_jitter == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])

    full_jitter = [policy.backoff(n, rand=lambda: 0.999999) for n in range(1, 9)]
    for n, (low, high) in enumerate(zip(full_jitter, no_jitter, strict=True), start=1):
        assert 0 < low <= high <= policy.max_backoff, n
        assert low >= high * (1 - policy.jitter) - 1e-9, n
    # Growing: until the cap, the shortest wait of a retry exceeds the longest of the one before.
    for n in range(4):
        assert full_jitter[n + 1] > no_jitter[n]


def test_random_backoff_stays_within_its_bounds() -> None:
    policy = RetryPolicy()
    for attempt in range(1, 10):
        ceiling = min(
            policy.max_backoff, policy.initial_backoff * policy.multiplier ** (attempt - 1)
        )
        for _ in range(200):
            assert ceiling * (1 - policy.jitter) <= policy.backoff(attempt) <= ceiling


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"initial_backoff": 0.0},
        {"initial_backoff": 1.0, "max_backoff": 0.5},
        {"multiplier": 0.5},
        {"jitter": 1.0},
        {"jitter": -0.1},
    ],
)
def test_retry_policy_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


# --- requests, API key, timeouts, repr ----------------------------------------------------------


def test_pay_request_from_keyword_fields() -> None:
    request = build_pay_request(
        None,
        {
            "tg_use_id": 1,
            "amount": 5,
            "label": "x",
            "title": "t",
            "description": "d",
            "request_id": "key-1",
            "payload": None,
        },
    )

    assert request == PayRequest(
        tg_use_id=1, amount=5, label="x", title="t", description="d", request_id="key-1"
    )
    assert not request.HasField("payload")


def test_pay_request_given_whole() -> None:
    given = PayRequest(tg_use_id=1, amount=5, request_id="r-1")
    assert build_pay_request(given, {}) is given
    without_id = PayRequest(tg_use_id=1, amount=5)
    sent = build_pay_request(without_id, {})
    assert sent.request_id and without_id.request_id == ""  # a copy gets the client's id
    assert sent.tg_use_id == 1 and sent.amount == 5
    with pytest.raises(TypeError):
        build_pay_request(given, {"amount": 6})


def test_query_and_resume_requests() -> None:
    assert build_query_order_request(7) == QueryOrderRequest(tg_payment_id=7)
    given_query = QueryOrderRequest(tg_payment_id=8)
    assert build_query_order_request(given_query) is given_query
    assert build_resume_payment_request(42) == ResumePaymentRequest(tg_use_id=42)


def test_query_order_by_charge_id_and_exactly_one_lookup() -> None:
    assert build_query_order_request(telegram_payment_charge_id="stx1") == QueryOrderRequest(
        telegram_payment_charge_id="stx1"
    )
    for neither_or_both in ((None, None), (7, "stx1")):
        with pytest.raises(TypeError, match="exactly one"):
            build_query_order_request(*neither_or_both)


def test_named_requests_take_the_id_and_the_optional_fields() -> None:
    refund = build_named_request(
        RefundPaymentRequest, 9, "tg_payment_id", call="refund_payment", reason_code="FRAUDULENT"
    )
    assert refund == RefundPaymentRequest(tg_payment_id=9, reason_code=Refund.FRAUDULENT)
    unset = build_named_request(
        RefundPaymentRequest, 9, "tg_payment_id", call="refund_payment", reason_text=None
    )
    assert unset == RefundPaymentRequest(tg_payment_id=9)
    given = RefundPaymentRequest(tg_payment_id=9, reason_text="why")
    assert build_named_request(RefundPaymentRequest, given, "tg_payment_id", call="r") is given
    with pytest.raises(TypeError, match="either a RefundPaymentRequest or keyword fields"):
        build_named_request(
            RefundPaymentRequest, given, "tg_payment_id", call="r", reason_code="OTHER"
        )
    with pytest.raises(ValueError, match="NOPE"):
        build_named_request(RefundPaymentRequest, 9, "tg_payment_id", call="r", reason_code="NOPE")


def test_list_requests_convert_times_enum_names_and_refuse_one_string() -> None:
    start = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    refunds = build_request(
        ListRefundsRequest,
        None,
        {"state": "FAILED", "create_time_start": start, "tg_payment_id": None, "page_size": 5},
        call="list_refunds",
    )
    assert refunds.state == Refund.FAILED
    assert refunds.create_time_start.ToDatetime(tzinfo=UTC) == start
    assert not refunds.HasField("tg_payment_id")
    assert not refunds.HasField("create_time_end")
    assert refunds.page_size == 5

    ledger = build_list_star_transactions_request(None, {"partner_types": ("user", "fragment")})
    assert list(ledger.partner_types) == ["user", "fragment"]
    with pytest.raises(TypeError, match="partner_types must be a collection"):
        build_list_star_transactions_request(None, {"partner_types": "user"})
    with pytest.raises(TypeError, match="types must be a collection"):
        build_list_events_request(None, {"types": "order.paid"})
    events = build_list_events_request(None, {"start": "NOW", "tg_use_id": 0, "page_size": 3})
    assert events.start == NOW
    assert events.HasField("tg_use_id")
    assert build_list_events_request(None, {}) == ListEventsRequest()


def test_a_catalog_item_is_given_whole_or_by_its_fields() -> None:
    by_fields = build_set_catalog_item_request(
        None, {"key": "sword", "amount": 50, "title": None, "metadata": {"tier": "gold"}}
    )
    assert by_fields == SetCatalogItemRequest(
        item=CatalogItem(key="sword", amount=50, metadata={"tier": "gold"})
    )
    assert not by_fields.item.HasField("title")
    item = CatalogItem(key="shield", amount=7)
    assert build_set_catalog_item_request(item, {}) == SetCatalogItemRequest(item=item)
    request = SetCatalogItemRequest(item=item)
    assert build_set_catalog_item_request(request, {}) is request
    with pytest.raises(TypeError):
        build_set_catalog_item_request(item, {"amount": 8})


def test_api_key_goes_only_into_the_authorization_metadata() -> None:
    key = ApiKey(SECRET)

    assert key.metadata() == (("authorization", f"Bearer {SECRET}"),)
    assert SECRET not in repr(key)
    assert SECRET not in str(key)


@pytest.mark.parametrize("bad", ["", " sk_abc123", "sk_abc123\n", "sk_ключ", "sk_a\x00b"])
def test_unusable_api_key_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValueError) as caught:
        ApiKey(bad)
    if bad.strip():
        assert bad.strip() not in str(caught.value)


def test_per_call_timeout_overrides_the_default() -> None:
    assert resolve_timeout(10.0, None) == 10.0
    assert resolve_timeout(10.0, 2.5) == 2.5
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            resolve_timeout(10.0, bad)


def test_blocking_client_repr_hides_the_key() -> None:
    with PaymentClient("localhost:1", SECRET, timeout=3.0) as client:
        assert SECRET not in repr(client)
        assert repr(client) == "PaymentClient(target='localhost:1', timeout=3.0)"
        assert client.timeout == 3.0
        assert client.retry == DEFAULT_RETRY_POLICY
    with pytest.raises(ValueError):
        PaymentClient("localhost:1", SECRET, timeout=0)


async def test_async_client_repr_hides_the_key() -> None:
    async with AsyncPaymentClient("localhost:1", SECRET, retry=RetryPolicy.disabled()) as client:
        assert SECRET not in repr(client)
        assert client.timeout == 10.0
        assert client.retry == RetryPolicy.disabled()
