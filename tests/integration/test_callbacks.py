"""Order callbacks from the outbox: real gRPC Pay, real PostgreSQL, a real HTTP receiver.

The dispatcher is driven by calling `step()` directly, so every test decides exactly when a batch
runs; nothing waits on timers. The receiver is an aiohttp server on a loopback port whose answers
each test scripts per path.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
import standardwebhooks
import standardwebhooks.webhooks
import structlog
from aiohttp import web

from portex_pay.adapters.http_guard import HttpPoster
from portex_pay.adapters.postgres.applications import ApplicationRepository
from portex_pay.adapters.postgres.callbacks import CallbackRepository
from portex_pay.app import PortexApp
from portex_pay.domain.callbacks import standard_webhooks_secret, verify_callback
from portex_pay.domain.order import SDK_STATUS, OrderState
from portex_pay.service.auth import new_secret
from portex_pay.service.callbacks import CallbackDispatcher
from tests.conftest import DATA_KEYS, TestApp, free_port, stored_secret
from tests.integration.helpers import pay_request

ORDER_KEYS = {
    "tg_payment_id",
    "application_id",
    "tg_use_id",
    "amount",
    "label",
    "title",
    "description",
    "payload",
    "status",
    "status_description",
    "state",
    "tg_payment_url",
    "metadata",
    "fulfilled_time",
}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded

    @property
    def event_id(self) -> int:
        return int(self.json["event_id"])


class Receiver:
    """A callback receiver. `script(path, *answers)`: status codes, or "hang" (answers only
    when the test ends) or "redirect"; the last answer repeats. Unscripted paths answer 200."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._scripts: dict[str, list[int | str]] = {}
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._release.set()  # lets hanging handlers finish, so cleanup does not wait for them
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def script(self, path: str, *answers: int | str) -> None:
        self._scripts[path] = list(answers)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        self.received.append(Received(path, dict(request.headers), await request.read()))
        answers = self._scripts.get(path) or [200]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if answer == "hang":
            await self._release.wait()
            return web.Response(status=200)
        if answer == "redirect":
            return web.Response(status=302, headers={"Location": self.url("landing")})
        assert isinstance(answer, int)
        return web.Response(status=answer)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest.fixture(autouse=True)
async def _park_other_deliveries(service: PortexApp) -> None:
    """Deliveries left by earlier tests (other files use callback URLs such as
    https://game.example/cb) would be claimed by the dispatchers these tests drive; they are
    parked out of reach, so each test sees only its own."""
    await service.pool.execute(
        "UPDATE callback_deliveries SET next_attempt_at = 'infinity' WHERE state = 'pending'"
    )


@pytest.fixture
async def make_dispatcher(service: PortexApp) -> AsyncIterator[Callable[..., CallbackDispatcher]]:
    session = aiohttp.ClientSession()

    def make(repository: CallbackRepository | None = None, **options: Any) -> CallbackDispatcher:
        options = {"timeout": 2.0, "base_backoff": 60.0, **options}
        return CallbackDispatcher(
            repository or CallbackRepository(service.pool, DATA_KEYS),
            HttpPoster(session),
            **options,
        )

    try:
        yield make
    finally:
        await session.close()


async def drain(dispatcher: CallbackDispatcher, max_steps: int = 20) -> int:
    """Steps until a step finds nothing due; returns how many deliveries were attempted."""
    attempted = 0
    for _ in range(max_steps):
        handled = await dispatcher.step()
        if handled == 0:
            return attempted
        attempted += handled
    raise AssertionError(f"still finding work after {max_steps} steps")


async def pay(stub: Any, app: TestApp, callback_url: str | None = None) -> int:
    request = pay_request(callback_url=callback_url) if callback_url else pay_request()
    response = await stub.Pay(request, metadata=app.metadata)
    return int(response.tg_payment_id)


async def event_ids(pool: asyncpg.Pool, tg_payment_id: int) -> list[int]:
    rows = await pool.fetch(
        "SELECT id FROM events WHERE tg_payment_id = $1 ORDER BY id", tg_payment_id
    )
    return [row["id"] for row in rows]


async def delivery(pool: asyncpg.Pool, event_id: int) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT *, next_attempt_at - now() AS due_in FROM callback_deliveries WHERE event_id = $1",
        event_id,
    )
    assert row is not None
    return row


async def make_due(pool: asyncpg.Pool, event_id: int) -> None:
    """Ends a backoff (or a lease) early, as the passing of time would."""
    await pool.execute(
        "UPDATE callback_deliveries SET next_attempt_at = now() WHERE event_id = $1", event_id
    )


async def test_a_callback_carries_the_orders_metadata(
    stub, app: TestApp, receiver: Receiver, make_dispatcher
):
    receiver.script("meta", 200)
    request = pay_request(callback_url=receiver.url("meta"), metadata={"sku": "G-1", "ключ": "да"})
    await stub.Pay(request, metadata=app.metadata)
    assert await drain(make_dispatcher()) == 2
    bodies = [r.json["order"] for r in receiver.at("meta")]
    assert [body["metadata"] for body in bodies] == [{"sku": "G-1", "ключ": "да"}] * 2


async def test_callbacks_arrive_signed_once_per_event_in_order(
    stub, app: TestApp, service: PortexApp, receiver: Receiver, make_dispatcher
):
    receiver.script("ok", 200)
    paid = await stub.Pay(pay_request(callback_url=receiver.url("ok")), metadata=app.metadata)
    ids = await event_ids(service.pool, paid.tg_payment_id)
    assert len(ids) == 2

    assert await drain(make_dispatcher()) == 2

    received = receiver.at("ok")
    assert [r.event_id for r in received] == ids
    assert [r.json["type"] for r in received] == ["order.created", "order.invoice_created"]
    secret = await stored_secret(service.pool, app.id, "signing_secret")
    events = {
        row["id"]: row
        for row in await service.pool.fetch(
            "SELECT id, occurred_at FROM events WHERE id = ANY($1::bigint[])", ids
        )
    }
    for request in received:
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["Portex-Event-Id"] == str(request.event_id)
        signature = request.headers["Portex-Signature"]
        assert verify_callback(secret, signature, request.body, now=time.time())
        assert not verify_callback(secret + "x", signature, request.body, now=time.time())
        assert not verify_callback(secret, signature, request.body + b" ", now=time.time())

        body = request.json
        assert set(body) == {"event_id", "type", "occurred_at", "tg_payment_id", "order"}
        assert body["event_id"] == str(request.event_id)
        assert body["tg_payment_id"] == paid.tg_payment_id
        occurred = datetime.fromisoformat(body["occurred_at"])
        assert occurred == events[request.event_id]["occurred_at"]
        order = body["order"]
        assert set(order) == ORDER_KEYS
        assert order["tg_payment_id"] == paid.tg_payment_id
        assert order["application_id"] == app.id
        assert (order["tg_use_id"], order["amount"], order["label"]) == (4242, 5, "item")
        assert (order["title"], order["description"], order["payload"]) == (
            "Book",
            "Magic book",
            "",
        )
        assert (order["status"], order["status_description"], order["state"]) == (
            *SDK_STATUS[OrderState.PENDING],
            "pending",
        )
    created, invoiced = (r.json["order"] for r in received)
    assert created["tg_payment_url"] == ""  # the link did not exist yet
    assert invoiced["tg_payment_url"] == paid.tg_payment_url

    for event_id in ids:
        row = await delivery(service.pool, event_id)
        assert (row["state"], row["attempts"], row["last_status"]) == ("delivered", 1, 200)
        assert row["delivered_at"] is not None and row["last_error"] is None
    assert await make_dispatcher().step() == 0


async def test_a_failed_delivery_is_retried_after_backoff_with_the_same_event_id(
    stub, app: TestApp, service: PortexApp, receiver: Receiver, make_dispatcher
):
    receiver.script("flaky", 500, 200)
    first, second = await event_ids(service.pool, await pay(stub, app, receiver.url("flaky")))
    dispatcher = make_dispatcher(base_backoff=60.0)

    assert await dispatcher.step() == 1
    row = await delivery(service.pool, first)
    assert (row["state"], row["attempts"], row["last_status"], row["last_error"]) == (
        "pending",
        1,
        500,
        "HTTP 500",
    )
    # Backing off (60 s, less at most a quarter of jitter); meanwhile the order's next event
    # waits behind it, so the receiver never sees them out of order.
    assert 44 <= row["due_in"].total_seconds() <= 60
    assert await dispatcher.step() == 0

    await make_due(service.pool, first)
    assert await drain(dispatcher) == 2

    received = receiver.at("flaky")
    assert [r.event_id for r in received] == [first, first, second]
    retried, original = received[1], received[0]
    assert retried.headers["Portex-Event-Id"] == original.headers["Portex-Event-Id"] == str(first)
    assert retried.body == original.body  # the same body; only the signature's t may change
    row = await delivery(service.pool, first)
    assert (row["state"], row["attempts"], row["last_status"], row["last_error"]) == (
        "delivered",
        2,
        200,
        None,
    )


async def test_real_deliveries_and_their_retries_verify_with_the_standard_webhooks_library(
    stub, app: TestApp, service: PortexApp, receiver: Receiver, make_dispatcher
):
    """A receiver using the `standardwebhooks` library with the `whsec_` form of the signing
    secret accepts every attempt; a retry carries the same `webhook-id`."""
    receiver.script("std", 500, 200)
    first, second = await event_ids(service.pool, await pay(stub, app, receiver.url("std")))
    dispatcher = make_dispatcher()
    assert await dispatcher.step() == 1
    await make_due(service.pool, first)
    assert await drain(dispatcher) == 2

    received = receiver.at("std")
    assert [r.event_id for r in received] == [first, first, second]
    secret = await stored_secret(service.pool, app.id, "signing_secret")
    webhook = standardwebhooks.Webhook(standard_webhooks_secret(secret))
    for request in received:
        assert webhook.verify(request.body, request.headers) == request.json
        assert request.headers["webhook-id"] == str(request.event_id)
        assert len(request.headers["webhook-signature"].split(" ")) == 1  # no rotation
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(standard_webhooks_secret(secret + "x")).verify(
            received[0].body, received[0].headers
        )


async def test_a_rotated_secret_signs_beside_the_new_one_until_its_overlap_ends(
    stub, app: TestApp, make_app, service: PortexApp, receiver: Receiver, make_dispatcher
):
    """After rotate-signing-secret, a receiver holding either secret verifies every delivery
    (both headers) until the overlap ends; then only the new secret does. Another application's
    deliveries are untouched by the rotation."""
    other = await make_app()
    applications = ApplicationRepository(service.pool, DATA_KEYS)
    old = await applications.signing_secret(uuid.UUID(app.id))
    other_secret = await applications.signing_secret(uuid.UUID(other.id))
    assert old is not None and other_secret is not None
    new = new_secret()
    until = await applications.rotate_signing_secret(uuid.UUID(app.id), new, timedelta(hours=24))
    assert until is not None
    assert timedelta(hours=23) < until - datetime.now(UTC) <= timedelta(hours=24)
    assert await applications.signing_secret(uuid.UUID(app.id)) == new
    missing = uuid.uuid4()
    assert await applications.rotate_signing_secret(missing, new_secret(), timedelta(0)) is None

    await pay(stub, app, receiver.url("overlap"))
    await pay(stub, other, receiver.url("untouched"))
    dispatcher = make_dispatcher()
    assert await dispatcher.step() == 2
    for secret in (new, old):
        verify_both(receiver.at("overlap")[0], secret)
    assert len(receiver.at("overlap")[0].headers["webhook-signature"].split(" ")) == 2
    (untouched,) = receiver.at("untouched")
    verify_both(untouched, other_secret)
    assert len(untouched.headers["webhook-signature"].split(" ")) == 1

    # The overlap ends (as the passing of time would end it): the old secret no longer signs.
    await service.pool.execute(
        "UPDATE applications SET previous_signing_secret_until = now() WHERE id = $1",
        uuid.UUID(app.id),
    )
    assert await drain(dispatcher) == 2  # each order's second event
    after = receiver.at("overlap")[1]
    verify_both(after, new)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(standard_webhooks_secret(old)).verify(after.body, after.headers)
    assert not verify_callback(old, after.headers["Portex-Signature"], after.body, time.time())


def verify_both(request: Received, secret: str) -> None:
    """Both the Standard Webhooks and the Portex-Signature headers verify with `secret`."""
    webhook = standardwebhooks.Webhook(standard_webhooks_secret(secret))
    assert webhook.verify(request.body, request.headers) == request.json
    assert verify_callback(secret, request.headers["Portex-Signature"], request.body, time.time())


class TimedRepository(CallbackRepository):
    """Records when each outcome was written, to see which delivery finished when."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool, DATA_KEYS)
        self.settled: dict[int, float] = {}

    async def mark_delivered(self, event_id: int, status: int) -> None:
        await super().mark_delivered(event_id, status)
        self.settled[event_id] = time.monotonic()

    async def mark_failed_attempt(
        self, event_id: int, *, error: str, status: int | None, retry_in: float | None
    ) -> None:
        await super().mark_failed_attempt(event_id, error=error, status=status, retry_in=retry_in)
        self.settled[event_id] = time.monotonic()


async def test_a_hanging_receiver_times_out_without_holding_up_the_batch(
    stub, app: TestApp, service: PortexApp, receiver: Receiver, make_dispatcher
):
    receiver.script("slow", "hang")
    slow_event = (await event_ids(service.pool, await pay(stub, app, receiver.url("slow"))))[0]
    fast_event = (await event_ids(service.pool, await pay(stub, app, receiver.url("fast"))))[0]
    timeout = 1.5
    repository = TimedRepository(service.pool)
    dispatcher = make_dispatcher(repository, timeout=timeout)

    started = time.monotonic()
    assert await dispatcher.step() == 2  # both orders' first events, in one batch
    elapsed = time.monotonic() - started

    assert repository.settled[fast_event] - started < 1.0 < timeout
    assert repository.settled[slow_event] - started >= timeout * 0.95
    assert elapsed < timeout + 1.0
    assert [r.event_id for r in receiver.at("fast")] == [fast_event]
    slow = await delivery(service.pool, slow_event)
    assert (slow["state"], slow["attempts"], slow["last_error"]) == ("pending", 1, "timed out")
    assert slow["last_status"] is None
    assert (await delivery(service.pool, fast_event))["state"] == "delivered"


async def test_a_delivery_is_given_up_after_max_attempts(
    stub, app: TestApp, service: PortexApp, receiver: Receiver, make_dispatcher
):
    receiver.script("down", 503)
    first, second = await event_ids(service.pool, await pay(stub, app, receiver.url("down")))
    # No backoff: each failed attempt is due again at once.
    dispatcher = make_dispatcher(max_attempts=3, base_backoff=0.0)

    with structlog.testing.capture_logs() as logs:
        assert await drain(dispatcher) == 6

    assert [r.event_id for r in receiver.at("down")] == [first] * 3 + [second] * 3
    for event_id in (first, second):
        row = await delivery(service.pool, event_id)
        assert (row["state"], row["attempts"], row["last_status"]) == ("failed", 3, 503)
    assert await dispatcher.step() == 0  # given up rows are no longer claimed
    failures = [entry for entry in logs if entry["event"] == "callback delivery failed"]
    assert [(f["event_id"], f["attempt"], f["gave_up"]) for f in failures] == [
        (first, 1, False),
        (first, 2, False),
        (first, 3, True),
        (second, 1, False),
        (second, 2, False),
        (second, 3, True),
    ]
    assert all(f["status"] == 503 and f["host"] == "127.0.0.1" for f in failures)


async def test_redirects_are_not_followed(
    stub, app: TestApp, service: PortexApp, receiver: Receiver, make_dispatcher
):
    receiver.script("moved", "redirect")
    first = (await event_ids(service.pool, await pay(stub, app, receiver.url("moved"))))[0]
    assert await make_dispatcher().step() == 1
    row = await delivery(service.pool, first)
    assert (row["state"], row["last_status"], row["last_error"]) == ("pending", 302, "HTTP 302")
    assert receiver.at("landing") == []


async def test_an_unreachable_receiver_is_a_failed_attempt_and_its_url_is_not_logged(
    stub, app: TestApp, service: PortexApp, make_dispatcher
):
    url = f"http://127.0.0.1:{free_port()}/cb?token=receiver-own-secret"
    first = (await event_ids(service.pool, await pay(stub, app, url)))[0]
    with structlog.testing.capture_logs() as logs:
        assert await make_dispatcher().step() == 1
    row = await delivery(service.pool, first)
    assert (row["state"], row["attempts"], row["last_status"]) == ("pending", 1, None)
    assert row["last_error"] and "receiver-own-secret" not in row["last_error"]
    assert len(logs) == 1 and "receiver-own-secret" not in repr(logs)
    secret = await stored_secret(service.pool, app.id, "signing_secret")
    assert secret not in repr(logs)


async def test_a_claim_is_leased_and_concurrent_claims_are_disjoint(
    stub, app: TestApp, service: PortexApp, receiver: Receiver
):
    firsts = [
        (await event_ids(service.pool, await pay(stub, app, receiver.url("lease"))))[0]
        for _ in range(6)
    ]
    one, two = (
        CallbackRepository(service.pool, DATA_KEYS),
        CallbackRepository(service.pool, DATA_KEYS),
    )

    a, b = await asyncio.gather(one.claim_due(4, 60.0), two.claim_due(4, 60.0))
    claimed = [c.event_id for c in a] + [c.event_id for c in b]
    # Only the head of each order is claimable; every head exactly once between the two.
    assert sorted(claimed) == sorted(firsts)
    assert "signing_secret" not in repr(a[0]) and a[0].signing_secret not in repr(a)
    # Leased: not claimable again while the lease lasts ...
    assert await one.claim_due(10, 60.0) == []
    # ... and claimable again once it ends (a dispatcher that died mid-delivery).
    await make_due(service.pool, firsts[0])
    assert [c.event_id for c in await two.claim_due(10, 60.0)] == [firsts[0]]


async def test_two_dispatchers_deliver_each_event_once(
    stub, app: TestApp, service: PortexApp, receiver: Receiver, make_dispatcher
):
    orders = [await pay(stub, app, receiver.url("shared")) for _ in range(8)]
    expected = sorted([e for order in orders for e in await event_ids(service.pool, order)])
    a = make_dispatcher(concurrency=3)
    b = make_dispatcher(concurrency=3)

    attempted = 0
    for _ in range(50):
        # Both steps overlap: claims race, and each delivers while the other claims.
        counts = await asyncio.gather(a.step(), b.step())
        attempted += sum(counts)
        if not any(counts):
            break
    assert attempted == len(expected) == 16
    assert sorted(r.event_id for r in receiver.at("shared")) == expected
    rows = await service.pool.fetch(
        "SELECT state, attempts FROM callback_deliveries WHERE event_id = ANY($1::bigint[])",
        expected,
    )
    assert {(row["state"], row["attempts"]) for row in rows} == {("delivered", 1)}
    for order in orders:  # in event order per order, though two dispatchers shared the work
        ids = await event_ids(service.pool, order)
        assert [r.event_id for r in receiver.at("shared") if r.event_id in ids] == ids


async def test_orders_without_a_callback_url_have_no_deliveries(
    stub, app: TestApp, service: PortexApp
):
    order = await pay(stub, app)
    ids = await event_ids(service.pool, order)
    assert len(ids) == 2
    count = await service.pool.fetchval(
        "SELECT count(*) FROM callback_deliveries WHERE event_id = ANY($1::bigint[])", ids
    )
    assert count == 0
