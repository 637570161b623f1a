"""Authentication and tenant isolation."""

from __future__ import annotations

from uuid import UUID

import grpc
import pytest

from portex.payment.v1 import payment_pb2
from portex_pay.adapters.postgres.applications import ApplicationRepository
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import application_admin
from portex_pay.service.auth import ApiKeyAuthenticator, hash_api_key
from tests.conftest import DATA_KEYS, TestApp
from tests.integration.helpers import details, eventually, pay_request


async def _code(call) -> tuple[grpc.StatusCode, str | None]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    info = details(raised.value).get("ErrorInfo")
    return raised.value.code(), info.reason if info else None


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer ppk_unknownunknownunknownunknownunknown"),),
        (("authorization", "Basic dXNlcjpwYXNz"),),
        (("authorization", "Bearer "),),
    ],
)
async def test_missing_or_unknown_keys_are_unauthenticated(stub, metadata):
    assert await _code(stub.Pay(pay_request(), metadata=metadata)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    query = stub.QueryOrder(payment_pb2.QueryOrderRequest(tg_payment_id=1), metadata=metadata)
    assert (await _code(query))[0] == grpc.StatusCode.UNAUTHENTICATED


async def test_another_applications_order_is_not_found_exactly_like_a_missing_one(stub, make_app):
    owner, stranger = await make_app(), await make_app()
    order = await stub.Pay(pay_request(), metadata=owner.metadata)

    async def query(app: TestApp, tg_payment_id: int) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.QueryOrder(
                payment_pb2.QueryOrderRequest(tg_payment_id=tg_payment_id), metadata=app.metadata
            )
        return raised.value

    foreign = await query(stranger, order.tg_payment_id)
    missing = await query(stranger, 2**62 + 1)
    assert foreign.code() == missing.code() == grpc.StatusCode.NOT_FOUND
    assert details(foreign)["ErrorInfo"] == details(missing)["ErrorInfo"]
    assert (foreign.details() or "").replace(str(order.tg_payment_id), "N") == (
        missing.details() or ""
    ).replace(str(2**62 + 1), "N")


async def test_resume_never_shows_another_applications_orders(stub, make_app):
    owner, stranger = await make_app(), await make_app()
    await stub.Pay(pay_request(tg_use_id=99001), metadata=owner.metadata)
    resumed = await stub.ResumePayment(
        payment_pb2.ResumePaymentRequest(tg_use_id=99001), metadata=stranger.metadata
    )
    assert not resumed.has_pending_payment


async def test_rotated_keys_both_work_until_the_old_one_is_revoked(stub, service, make_app):
    app = await make_app()
    session = await new_session()
    try:
        admin = application_admin(
            service.pool, BotApiClient(session, "http://127.0.0.1:9", 1), data_keys=DATA_KEYS
        )
        new_key = await admin.rotate_key(UUID(app.id))
        new_metadata = (("authorization", f"Bearer {new_key}"),)
        for metadata in (app.metadata, new_metadata):
            await stub.ResumePayment(
                payment_pb2.ResumePaymentRequest(tg_use_id=1), metadata=metadata
            )
        old_key_id = await service.pool.fetchval(
            "SELECT id FROM api_keys WHERE key_hash = $1", hash_api_key(app.api_key)
        )
        await admin.revoke_key(UUID(app.id), old_key_id)
    finally:
        await session.close()

    # Revocation is honoured within the cache TTL (0.2 s in these tests).
    async def refused() -> bool:
        try:
            await stub.ResumePayment(
                payment_pb2.ResumePaymentRequest(tg_use_id=1), metadata=app.metadata
            )
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            return True
        return False

    await eventually(refused, timeout=2.0, interval=0.05, what="the revoked key refused")
    await stub.ResumePayment(payment_pb2.ResumePaymentRequest(tg_use_id=1), metadata=new_metadata)


async def test_keys_are_stored_only_as_hashes(service, app: TestApp):
    stored = await service.pool.fetch(
        "SELECT k.* FROM api_keys k WHERE application_id = $1::uuid", app.id
    )
    assert [bytes(r["key_hash"]) for r in stored] == [hash_api_key(app.api_key)]
    assert all(app.api_key not in str(dict(r)) for r in stored)


async def test_the_authenticator_caches_lookups_for_its_ttl(service, app: TestApp):
    now = [0.0]
    calls = []
    repository = ApplicationRepository(service.pool, DATA_KEYS)
    original = repository.find_by_key_hash

    async def counting(key_hash: bytes):
        calls.append(key_hash)
        return await original(key_hash)

    repository.find_by_key_hash = counting  # type: ignore[method-assign]
    authenticator = ApiKeyAuthenticator(repository, ttl=5.0, clock=lambda: now[0])
    header = f"Bearer {app.api_key}"
    for _ in range(3):
        assert str((await authenticator.authenticate(header)).id) == app.id
    assert len(calls) == 1
    now[0] = 5.1
    await authenticator.authenticate(header)
    assert len(calls) == 2


@pytest.mark.parametrize("rpc", ["CancelOrder", "RefundPayment", "ReportInvoiceClosed"])
async def test_another_application_cannot_change_an_order(stub, service, make_app, rpc):
    owner, stranger = await make_app(), await make_app()
    order = await stub.Pay(pay_request(), metadata=owner.metadata)
    requests = {
        "CancelOrder": payment_pb2.CancelOrderRequest(tg_payment_id=order.tg_payment_id),
        "RefundPayment": payment_pb2.RefundPaymentRequest(tg_payment_id=order.tg_payment_id),
        "ReportInvoiceClosed": payment_pb2.ReportInvoiceClosedRequest(
            tg_payment_id=order.tg_payment_id, status="paid"
        ),
    }
    code, reason = await _code(getattr(stub, rpc)(requests[rpc], metadata=stranger.metadata))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND")
    row = await service.pool.fetchrow(
        "SELECT state, client_report FROM orders WHERE tg_payment_id = $1", order.tg_payment_id
    )
    assert (row["state"], row["client_report"]) == ("pending", None)
