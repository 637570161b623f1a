"""Metadata over real gRPC and PostgreSQL (issue 18): given to Pay, it is stored and returned on
the Order, in every event of the order (ListEvents and the stream) and searchable with ListOrders;
it is part of what makes a Pay retry the same request; Stripe's limits answer INVALID_ARGUMENT
with one field violation per bad entry (all of them fit in the status); catalog items carry it
too (callbacks: test_callbacks.py; the Mini App edge: test_edge.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import grpc
import pytest

from portex.payment.v1 import payment_pb2
from portex_pay.app import PortexApp
from tests.conftest import TestApp
from tests.integration.helpers import details, pay_request

METADATA = {"sku": "GEM-100", "campaign": "winter", "gift card": "да ✨", "empty": ""}


async def failure(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    return [(v.field, v.description) for v in details(error)["BadRequest"].field_violations]


async def test_metadata_is_stored_returned_and_listed(stub, app: TestApp):
    created = await stub.Pay(pay_request(metadata=METADATA), metadata=app.metadata)
    assert dict(created.order.metadata) == METADATA
    queried = await stub.QueryOrder(
        payment_pb2.QueryOrderRequest(tg_payment_id=created.tg_payment_id), metadata=app.metadata
    )
    assert dict(queried.metadata) == METADATA
    listed = await stub.ListOrders(
        payment_pb2.ListOrdersRequest(
            filter='metadata."gift card" = "да ✨" AND metadata.sku = "GEM-100"'
        ),
        metadata=app.metadata,
    )
    assert [o.tg_payment_id for o in listed.orders] == [created.tg_payment_id]
    plain = await stub.Pay(pay_request(), metadata=app.metadata)
    assert dict(plain.order.metadata) == {}


async def test_every_event_of_the_order_carries_its_metadata(stub, app: TestApp):
    created = await stub.Pay(pay_request(metadata=METADATA), metadata=app.metadata)
    page = await stub.ListEvents(
        payment_pb2.ListEventsRequest(
            tg_payment_id=created.tg_payment_id, start=payment_pb2.RETENTION_START
        ),
        metadata=app.metadata,
    )
    assert [e.type for e in page.events] == ["order.created", "order.invoice_created"]
    assert [dict(e.order.metadata) for e in page.events] == [METADATA, METADATA]
    stream = stub.StreamInvoiceEvents(
        payment_pb2.StreamInvoiceEventsRequest(
            tg_payment_id=created.tg_payment_id, start=payment_pb2.RETENTION_START
        ),
        metadata=app.metadata,
    )
    try:
        first = await stream.read()
        while first.heartbeat:
            first = await stream.read()
    finally:
        stream.cancel()
    assert (first.type, dict(first.order.metadata)) == ("order.created", METADATA)


async def test_metadata_is_part_of_what_makes_a_retry_the_same_request(stub, app: TestApp):
    request = pay_request(metadata={"a": "1", "b": "2"})
    first = await stub.Pay(request, metadata=app.metadata)
    reordered = pay_request(request_id=request.request_id, metadata={"b": "2", "a": "1"})
    again = await stub.Pay(reordered, metadata=app.metadata)
    assert again.tg_payment_id == first.tg_payment_id
    changed = pay_request(request_id=request.request_id, metadata={"a": "1", "b": "3"})
    error = await failure(stub.Pay(changed, metadata=app.metadata))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(error)["ErrorInfo"].reason == "IDEMPOTENCY_KEY_REUSED"
    dropped = pay_request(request_id=request.request_id)
    assert (await failure(stub.Pay(dropped, metadata=app.metadata))).code() == (
        grpc.StatusCode.ALREADY_EXISTS
    )


async def test_a_retry_without_metadata_matches_a_key_stored_before_metadata_existed(
    stub, service: PortexApp, app: TestApp
):
    """The fingerprint a key stored before this change holds (no metadata in it) is the one a
    retry without metadata computes: the retry finds its order."""
    request = pay_request()
    first = await stub.Pay(request, metadata=app.metadata)
    stored = await service.pool.fetchval(
        "SELECT request_hash FROM idempotency_keys WHERE request_id = $1", request.request_id
    )
    again = await stub.Pay(request, metadata=app.metadata)
    assert again.tg_payment_id == first.tg_payment_id
    assert stored == await service.pool.fetchval(
        "SELECT request_hash FROM idempotency_keys WHERE request_id = $1", request.request_id
    )


async def test_each_bad_entry_is_one_field_violation(stub, service: PortexApp, app: TestApp):
    request = pay_request(
        tg_use_id=0,
        metadata={"sku": "v" * 501, "": "x", "ok": "fine", "tab\tkey": "x", "k" * 41: "x"},
    )
    error = await failure(stub.Pay(request, metadata=app.metadata))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(violations(error)) == sorted(
        [
            ("tg_use_id", "must be a positive Telegram user id"),
            ("metadata[sku]", "the value must be at most 500 characters"),
            ("metadata[]", "the key must be 1-40 characters"),
            (
                "metadata[tab\\u0009key]",
                "the key must be a single line without control characters (found U+0009 at "
                "index 3)",
            ),
            ("metadata[" + "k" * 40 + "…]", "the key must be 1-40 characters"),
        ]
    )
    count = await service.pool.fetchval(
        "SELECT count(*) FROM orders WHERE application_id = $1::uuid", app.id
    )
    assert count == 0


async def test_too_many_keys_is_one_violation_and_the_limits_themselves_pass(stub, app: TestApp):
    many = {f"key{n}": "v" for n in range(51)}
    error = await failure(stub.Pay(pay_request(metadata=many), metadata=app.metadata))
    assert violations(error) == [("metadata", "must have at most 50 keys (found 51)")]
    largest = {f"{n:02d}" + "k" * 38: "v" * 500 for n in range(50)}
    created = await stub.Pay(pay_request(metadata=largest), metadata=app.metadata)
    assert dict(created.order.metadata) == largest


@pytest.mark.parametrize("key", ["\u0416" * 60, "\x01" * 60, "\u0416" * 40])
async def test_fifty_bad_entries_with_the_longest_keys_reach_the_caller_intact(
    stub, app: TestApp, key: str
):
    """The status fits gRPC's trailer limit (clients refuse trailers past 8-16 KiB with
    RESOURCE_EXHAUSTED): ten bad entries are named, the rest counted."""
    worst = {f"{n:02d}" + key: "\x01" * 600 for n in range(50)}
    error = await failure(stub.Pay(pay_request(metadata=worst), metadata=app.metadata))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(error)
    assert len(found) == 11
    assert found[-1] == ("metadata", "40 more entries break these rules (not named here)")
    # As sent: the message percent-encoded, the binary details in base64.
    binary = sum(len(v) for k, v in error.trailing_metadata() or () if k.endswith("-bin"))
    assert len(quote(error.details() or "", safe=" ")) + binary * 4 // 3 < 8192


async def test_catalog_items_carry_metadata_named_under_item(stub, app: TestApp):
    item = payment_pb2.CatalogItem(key="gems", amount=5, metadata={"sku": "GEM-100"})
    stored = await stub.SetCatalogItem(
        payment_pb2.SetCatalogItemRequest(item=item), metadata=app.metadata
    )
    assert dict(stored.metadata) == {"sku": "GEM-100"}
    listed = await stub.ListCatalogItems(
        payment_pb2.ListCatalogItemsRequest(), metadata=app.metadata
    )
    assert [dict(i.metadata) for i in listed.items] == [{"sku": "GEM-100"}]
    bad = payment_pb2.CatalogItem(key="gems", amount=5, metadata={"sku": "\x00"})
    error = await failure(
        stub.SetCatalogItem(payment_pb2.SetCatalogItemRequest(item=bad), metadata=app.metadata)
    )
    assert violations(error) == [
        (
            "item.metadata[sku]",
            "the value must be a single line without control characters (found U+0000 at index 0)",
        )
    ]
    # Replacing an item replaces its metadata.
    await stub.SetCatalogItem(
        payment_pb2.SetCatalogItemRequest(item=payment_pb2.CatalogItem(key="gems", amount=5)),
        metadata=app.metadata,
    )
    listed = await stub.ListCatalogItems(
        payment_pb2.ListCatalogItemsRequest(), metadata=app.metadata
    )
    assert [dict(i.metadata) for i in listed.items] == [{}]
