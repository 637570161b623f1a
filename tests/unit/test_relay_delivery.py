"""The relay's webhook delivery (RelayService.deliver_step) on an in-memory RelayStore: a
delivery lease is released however a round ends (delivered, failed, stopped by a webhook change,
broken by an error, cancelled by shutdown), a webhook change voids it and abandons a POST to the
old webhook, and a release that fails never hides what ended the delivery."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from uuid import uuid4

import pytest

from portex_pay.domain.application import Application, Bot
from portex_pay.service.outage import StoreUnavailable
from portex_pay.service.ports import HttpAnswer
from portex_pay.service.relay import RelayService
from portex_pay.service.worker import PeriodicWorker
from tests.unit.fakes import FakeTelegram, InMemoryRelay

BOT = Bot(777, "777:token", "shop_bot")
APPLICATION = Application(id=uuid4(), name="shop", bot=BOT)
OLD, NEW = "https://bot.example/old", "https://bot.example/new"
TIMEOUT = 10.0


class Webhooks:
    """The HttpPoster port: the app bot's webhooks. Each POST is recorded; `hold` keeps POSTs
    to a URL waiting until `answer(url)`; `errors` are raised by the next POSTs."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, bytes]] = []
        self.abandoned: list[str] = []
        self.errors: list[BaseException] = []
        self.held: set[str] = set()
        self._gates: dict[str, asyncio.Event] = {}
        self.arrived = asyncio.Event()

    def hold(self, url: str) -> None:
        self.held.add(url)
        self._gates[url] = asyncio.Event()

    def answer(self, url: str) -> None:
        self.held.discard(url)
        self._gates[url].set()

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        timeout: float,
        read_limit: int = 0,
    ) -> HttpAnswer:
        self.posts.append((url, body))
        self.arrived.set()
        if self.errors:
            raise self.errors.pop(0)
        if url in self.held:
            try:
                await self._gates[url].wait()
            except asyncio.CancelledError:
                self.abandoned.append(url)
                raise
        return HttpAnswer(200, "", b"")


async def no_application(bot_id: int) -> Application | None:
    return None


def relay(
    store: InMemoryRelay, webhooks: Webhooks, wake_delivery: Callable[[], None] = lambda: None
) -> RelayService:
    return RelayService(
        store,
        FakeTelegram(),
        no_application,
        default_updates_mode="webhook",
        webhook_timeout=TIMEOUT,
        webhook_poster=webhooks,
        wake_delivery=wake_delivery,
    )


async def bot_with_webhook(store: InMemoryRelay, *update_ids: int, url: str = OLD) -> None:
    await store.enable(BOT.id, APPLICATION.id)
    await store.set_webhook(BOT.id, url, "s", drop_pending=False)
    for update_id in update_ids:
        raw = b'{"update_id":%d,"message":{}}' % update_id
        assert (await store.keep(BOT.id, update_id, "message", raw)).kept


async def posting(webhooks: Webhooks) -> None:
    """Waits until a POST has arrived."""
    async with asyncio.timeout(5):
        await webhooks.arrived.wait()
    webhooks.arrived.clear()


@pytest.fixture
def store() -> InMemoryRelay:
    return InMemoryRelay()


@pytest.fixture
def webhooks() -> Webhooks:
    return Webhooks()


async def test_a_round_delivers_in_order_and_releases_its_lease(
    store: InMemoryRelay, webhooks: Webhooks
) -> None:
    await bot_with_webhook(store, 5, 6)
    assert await relay(store, webhooks).deliver_step() == 2
    assert [body for _, body in webhooks.posts] == [
        b'{"update_id":5,"message":{}}',
        b'{"update_id":6,"message":{}}',
    ]
    assert not store.leased(BOT.id) and store.rows[BOT.id].lease_owner is None


async def test_an_unexpected_error_in_delivery_releases_the_lease_and_backs_off(
    store: InMemoryRelay, webhooks: Webhooks
) -> None:
    await bot_with_webhook(store, 5)
    webhooks.errors.append(RuntimeError("a bug in the poster"))
    service = relay(store, webhooks)
    assert await service.deliver_step() == 0
    assert not store.leased(BOT.id)
    row = store.rows[BOT.id]
    assert row.attempts == 1 and row.last_error == "Internal error" and row.next_attempt_at > 0
    store.now = row.next_attempt_at  # the backoff is over
    assert await service.deliver_step() == 1


async def test_a_failed_post_releases_the_lease(store: InMemoryRelay, webhooks: Webhooks) -> None:
    await bot_with_webhook(store, 5)
    webhooks.errors.append(TimeoutError())  # not a PostFailed: the poster broke its contract
    await relay(store, webhooks).deliver_step()
    assert store.rows[BOT.id].lease_owner is None


async def test_a_release_that_fails_hides_nothing_and_is_retried_next_round(
    store: InMemoryRelay, webhooks: Webhooks
) -> None:
    await bot_with_webhook(store, 5)
    webhooks.errors.append(RuntimeError("a bug in the poster"))
    store.release_errors.append(StoreUnavailable("connection refused"))
    service = relay(store, webhooks)
    assert await service.deliver_step() == 0  # neither error escapes the round
    assert store.rows[BOT.id].lease_owner is not None  # still named on the bot
    store.now = store.rows[BOT.id].next_attempt_at
    assert await service.deliver_step() == 1  # the next round frees it first, then delivers
    assert store.rows[BOT.id].lease_owner is None


async def test_shutdown_during_a_post_releases_the_lease(
    store: InMemoryRelay, webhooks: Webhooks
) -> None:
    await bot_with_webhook(store, 5)
    webhooks.hold(OLD)
    step = asyncio.create_task(relay(store, webhooks).deliver_step())
    await posting(webhooks)
    assert store.leased(BOT.id)
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step
    assert webhooks.abandoned == [OLD]
    assert store.rows[BOT.id].lease_owner is None
    assert store.updates[BOT.id]  # not confirmed: the next replica delivers it


async def test_a_second_cancel_during_the_release_does_not_stop_it(
    store: InMemoryRelay, webhooks: Webhooks
) -> None:
    """PortexApp.stop() cancels its tasks again until they end: the delivery's own release
    (shielded) goes on regardless."""
    await bot_with_webhook(store, 5)
    webhooks.hold(OLD)
    step = asyncio.create_task(relay(store, webhooks).deliver_step())
    await posting(webhooks)

    async def release_nothing() -> None:  # only the delivery's own release can free the bot
        pass

    store.release_all = release_nothing  # type: ignore[method-assign]
    store.release_gate = asyncio.Event()  # the database is slow to answer the release
    step.cancel()
    await asyncio.sleep(0.01)
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step
    assert store.rows[BOT.id].lease_owner is not None  # the release is still waiting
    store.release_gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert store.rows[BOT.id].lease_owner is None


async def test_the_worker_stopped_mid_delivery_leaves_no_lease(
    store: InMemoryRelay, webhooks: Webhooks
) -> None:
    await bot_with_webhook(store, 5)
    webhooks.hold(OLD)
    worker = PeriodicWorker("relay-webhooks", relay(store, webhooks).deliver_step, idle=0.05)
    task = asyncio.create_task(worker.run())
    await posting(webhooks)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert store.rows[BOT.id].lease_owner is None


async def test_a_claim_cut_short_by_shutdown_is_released_too(
    store: InMemoryRelay, webhooks: Webhooks
) -> None:
    """Cancelled while claiming: the leases may be taken in the database, never read here."""
    await bot_with_webhook(store, 5)
    claimed = asyncio.Event()
    claim = store.claim_deliveries

    async def claim_then_hang(limit: int, lease_seconds: float) -> list:  # type: ignore[type-arg]
        await claim(limit, lease_seconds)
        claimed.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    store.claim_deliveries = claim_then_hang  # type: ignore[method-assign]
    step = asyncio.create_task(relay(store, webhooks).deliver_step())
    await claimed.wait()
    assert store.leased(BOT.id)
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step
    assert store.rows[BOT.id].lease_owner is None


async def test_set_webhook_here_abandons_the_post_to_the_old_one_and_delivers_at_once(
    store: InMemoryRelay, webhooks: Webhooks
) -> None:
    await bot_with_webhook(store, 5)
    webhooks.hold(OLD)
    woken: list[bool] = []
    service = relay(store, webhooks, lambda: woken.append(True))
    step = asyncio.create_task(service.deliver_step())
    await posting(webhooks)
    await service.set_webhook(APPLICATION, {"url": NEW})
    assert await asyncio.wait_for(step, 5) == 0  # the POST to the old webhook is abandoned
    assert webhooks.abandoned == [OLD] and woken
    assert await service.deliver_step() == 1  # no lease to wait for
    assert webhooks.posts[-1][0] == NEW and not store.updates[BOT.id]


async def test_a_post_in_flight_to_the_old_webhook_confirms_nothing(
    store: InMemoryRelay, webhooks: Webhooks
) -> None:
    """The webhook is changed through another replica: this one's POST goes on, and the old
    webhook's 2xx must not confirm the update the new webhook has not had."""
    await bot_with_webhook(store, 5)
    webhooks.hold(OLD)
    service = relay(store, webhooks)
    step = asyncio.create_task(service.deliver_step())
    await posting(webhooks)
    await store.set_webhook(BOT.id, NEW, "s", drop_pending=False)  # another replica did it
    assert not store.leased(BOT.id)  # whoever delivers next need not wait
    webhooks.answer(OLD)
    assert await asyncio.wait_for(step, 5) == 0
    assert 5 in store.updates[BOT.id]  # not confirmed by the old webhook's answer
    assert await service.deliver_step() == 1
    assert webhooks.posts[-1][0] == NEW


class WorkerWakesFirst(InMemoryRelay):
    """This replica's delivery worker wakes on the change's own notification and claims the bot
    before `RelayService.set_webhook` has returned (the gap between the commit and the return,
    wide under load)."""

    def __init__(self, webhooks: Webhooks) -> None:
        super().__init__()
        self.webhooks = webhooks
        self.service: RelayService | None = None
        self.step: asyncio.Task[int] | None = None

    async def set_webhook(
        self, bot_id: int, url: str | None, secret: str | None, *, drop_pending: bool
    ) -> None:
        await super().set_webhook(bot_id, url, secret, drop_pending=drop_pending)
        if self.service is not None:
            self.step = asyncio.create_task(self.service.deliver_step())
            await posting(self.webhooks)


async def test_a_post_to_the_new_webhook_claimed_before_set_webhook_returns_is_kept(
    webhooks: Webhooks,
) -> None:
    """Abandoning it once sent would deliver the update twice (a flaky integration test,
    test_set_webhook_through_another_replica_and_the_old_webhooks_late_answer, caught it)."""
    store = WorkerWakesFirst(webhooks)
    await bot_with_webhook(store, 5)
    webhooks.hold(NEW)
    service = store.service = relay(store, webhooks)
    await service.set_webhook(APPLICATION, {"url": NEW, "secret_token": "s"})
    assert store.step is not None and not store.step.done()
    webhooks.answer(NEW)
    assert await asyncio.wait_for(store.step, 5) == 1
    assert webhooks.posts == [(NEW, b'{"update_id":5,"message":{}}')] and not webhooks.abandoned
    assert not store.updates[BOT.id]
