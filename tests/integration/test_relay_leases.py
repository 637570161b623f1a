"""The relay's webhook delivery across shutdowns, replicas, webhook changes and errors, on real
PostgreSQL and real HTTP (the app bot's webhook a plain aiohttp endpoint): no bot waits for a
delivery lease to lapse (22 webhook timeouts, 220 s at the default PORTEX_RELAY_WEBHOOK_TIMEOUT).

Each test runs its own replicas on a database of its own (`empty_db`), so that no other
replica's delivery worker takes the bot. The bounds (15 s) are far below any lease: they say
"without waiting for the lease", not how fast."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import asyncpg
from aiogram import Bot
from aiohttp import web

from portex_pay.adapters.postgres.relay import RelayRepository
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import PortexApp, application_admin
from portex_pay.service.ports import HttpAnswer, HttpPoster
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import DATA_KEYS, TestApp, create_test_app, free_port, make_settings
from tests.integration.helpers import eventually
from tests.integration.test_bot_relay import proxied

USER = 7001
SOON = 15.0  # seconds; the lease is 220 s (1,320 s where the webhook timeout is 60 s)


class Receiver:
    """The app bot's webhook: records the bytes of every POST; while `held`, answers none."""

    def __init__(self, *, held: bool) -> None:
        self.bodies: list[bytes] = []
        self.answering = asyncio.Event()
        if not held:
            self.answering.set()

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        await self.answering.wait()
        return web.json_response({})


@contextlib.asynccontextmanager
async def webhook(*, held: bool = False) -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver(held=held)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield receiver, f"http://127.0.0.1:{port}/hook"
    finally:
        receiver.answering.set()
        await runner.cleanup()


@contextlib.asynccontextmanager
async def replica(database_url: str, fake: FakeBotApi, **options: Any) -> AsyncIterator[PortexApp]:
    port = free_port()
    app = PortexApp(
        make_settings(database_url, fake.base_url, http_addr=f"127.0.0.1:{port}", **options)
    )
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def base_url(app: PortexApp) -> str:
    return f"http://127.0.0.1:{app.http_port}"


@contextlib.asynccontextmanager
async def bot_of(app: PortexApp, token: str) -> AsyncIterator[Bot]:
    """The app's bot, its Bot API URL pointed at this replica."""
    client = proxied(base_url(app), token)
    try:
        yield client
    finally:
        await client.session.close()


async def new_shop(app: PortexApp, fake: FakeBotApi) -> TestApp:
    """An application whose bot's updates Telegram sends to this replica's webhook."""
    session = await new_session()
    try:
        admin = application_admin(
            app.pool, BotApiClient(session, fake.base_url, 5.0), data_keys=DATA_KEYS
        )
        return await create_test_app(admin, fake, updates="webhook", public_url=base_url(app))
    finally:
        await session.close()


def bot_id(shop: TestApp) -> int:
    return int(shop.bot_token.partition(":")[0])


async def lease_of(database_url: str, shop: TestApp) -> tuple[str | None, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT lease_owner, lease_until FROM relay_bots WHERE bot_id = $1", bot_id(shop)
        )
    finally:
        await conn.close()
    assert row is not None
    return row["lease_owner"], row["lease_until"]


async def test_a_replica_stopped_mid_delivery_releases_its_lease(
    empty_db: str, fake_telegram: FakeBotApi
) -> None:
    """SIGTERM while the app bot's webhook is slow to answer, another replica, the webhook
    pointed elsewhere: the new webhook has the update at once, not when the lease lapses."""
    async with webhook(held=True) as (slow, slow_url):
        async with replica(empty_db, fake_telegram) as first:
            shop = await new_shop(first, fake_telegram)
            async with bot_of(first, shop.bot_token) as bot:
                await bot.set_webhook(slow_url)
            await fake_telegram.send_user_message(shop.bot_token, USER, "in flight")
            await eventually(lambda: slow.bodies, what="the POST to the slow webhook")
            assert (await lease_of(empty_db, shop))[1] is not None
        # Stopped while its POST waited for an answer: the lease went with it.
        assert await lease_of(empty_db, shop) == (None, None)
        async with (
            replica(empty_db, fake_telegram) as second,
            webhook() as (fast, fast_url),
            bot_of(second, shop.bot_token) as bot,
        ):
            await bot.set_webhook(fast_url)
            [body] = await eventually(lambda: fast.bodies, timeout=SOON, what="a delivery")
            assert body == slow.bodies[0]
            assert (await bot.get_webhook_info()).pending_update_count == 0


async def test_a_restarted_replica_delivers_to_the_same_webhook_at_once(
    empty_db: str, fake_telegram: FakeBotApi
) -> None:
    """An ordinary restart, no webhook change: the next replica delivers at once."""
    async with webhook(held=True) as (hook, url):
        async with replica(empty_db, fake_telegram) as first:
            shop = await new_shop(first, fake_telegram)
            async with bot_of(first, shop.bot_token) as bot:
                await bot.set_webhook(url)
            await fake_telegram.send_user_message(shop.bot_token, USER, "in flight")
            await eventually(lambda: hook.bodies, what="the POST to the slow webhook")
        hook.answering.set()  # the app bot is back to normal
        async with replica(empty_db, fake_telegram):
            await eventually(lambda: len(hook.bodies) == 2, timeout=SOON, what="a redelivery")
        assert hook.bodies[0] == hook.bodies[1]


async def test_set_webhook_while_a_lease_is_held_delivers_to_the_new_one_at_once(
    empty_db: str, fake_telegram: FakeBotApi
) -> None:
    """The replica holding the lease is the one told: its POST to the old webhook (which would
    wait a minute for an answer) is abandoned and the new webhook is delivered to at once."""
    async with (
        replica(empty_db, fake_telegram, relay_webhook_timeout=60.0) as app,
        webhook(held=True) as (old, old_url),
        webhook() as (new, new_url),
    ):
        shop = await new_shop(app, fake_telegram)
        async with bot_of(app, shop.bot_token) as bot:
            await bot.set_webhook(old_url)
            await fake_telegram.send_user_message(shop.bot_token, USER, "hello")
            await eventually(lambda: old.bodies, what="the POST to the old webhook")
            await bot.set_webhook(new_url)
            [body] = await eventually(lambda: new.bodies, timeout=SOON, what="a delivery")
            assert body == old.bodies[0]
            await eventually(lambda: _pending(bot, 0), what="the update confirmed")


async def test_set_webhook_through_another_replica_and_the_old_webhooks_late_answer(
    empty_db: str, fake_telegram: FakeBotApi
) -> None:
    """One replica is POSTing to the old webhook when another is told of the new one: the new
    one has the update at once, and the old one's late 2xx confirms nothing for it."""
    async with (
        replica(empty_db, fake_telegram, relay_webhook_timeout=60.0) as first,
        webhook(held=True) as (old, old_url),
        webhook(held=True) as (new, new_url),
    ):
        shop = await new_shop(first, fake_telegram)
        async with bot_of(first, shop.bot_token) as bot:
            await bot.set_webhook(old_url)
            await fake_telegram.send_user_message(shop.bot_token, USER, "hello")
            await eventually(lambda: old.bodies, what="the POST to the old webhook")
        async with (
            replica(empty_db, fake_telegram, relay_webhook_timeout=60.0) as second,
            bot_of(second, shop.bot_token) as bot,
        ):
            await bot.set_webhook(new_url)
            await eventually(lambda: new.bodies, timeout=SOON, what="a POST to the new webhook")
            old.answering.set()  # the old webhook answers 200 at last, to the first replica
            await asyncio.sleep(0.5)
            assert (await bot.get_webhook_info()).pending_update_count == 1
            new.answering.set()
            await eventually(lambda: _pending(bot, 0), what="the update confirmed")
        assert new.bodies == old.bodies


async def _pending(bot: Bot, count: int) -> bool:
    return (await bot.get_webhook_info()).pending_update_count == count


class BreaksOnce:
    """A webhook poster that raises something unexpected once (a bug), then works."""

    def __init__(self, poster: HttpPoster) -> None:
        self._poster = poster
        self.broke = False

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        timeout: float,
        read_limit: int = 0,
    ) -> HttpAnswer:
        if not self.broke:
            self.broke = True
            raise RuntimeError("a bug in the poster")
        return await self._poster.post(url, body, headers, timeout=timeout, read_limit=read_limit)


async def test_an_error_in_delivery_releases_the_lease(
    empty_db: str, fake_telegram: FakeBotApi
) -> None:
    async with replica(empty_db, fake_telegram) as app, webhook() as (hook, url):
        assert app.relay is not None and app.relay.webhook_poster is not None
        poster = BreaksOnce(app.relay.webhook_poster)
        app.relay.webhook_poster = poster
        shop = await new_shop(app, fake_telegram)
        async with bot_of(app, shop.bot_token) as bot:
            await bot.set_webhook(url)
            await fake_telegram.send_user_message(shop.bot_token, USER, "hello")
            await eventually(lambda: hook.bodies, timeout=SOON, what="a delivery after the error")
            assert poster.broke
            await eventually(lambda: _pending(bot, 0), what="the update confirmed")
        assert await lease_of(empty_db, shop) == (None, None)


async def test_a_lease_is_one_claim_and_a_webhook_change_voids_it(
    empty_db: str, fake_telegram: FakeBotApi
) -> None:
    """The store: only the claim a delivery holds confirms, fails or releases, even on the same
    replica and the same URL (a bot's code sets its webhook again on every start)."""
    async with replica(empty_db, fake_telegram, bot_proxy=False) as app:  # no delivery worker
        shop = await new_shop(app, fake_telegram)
        store = RelayRepository(app.pool, DATA_KEYS, "replica-a")
        bot = bot_id(shop)
        await store.enable(bot, uuid.UUID(shop.id))
        url = "http://127.0.0.1:9/hook"
        await store.set_webhook(bot, url, "s", drop_pending=False)
        assert (await store.keep(bot, 5, "message", b'{"update_id":5}')).kept
        [first] = await store.claim_deliveries(1, 220)
        assert await store.claim_deliveries(1, 220) == []  # leased
        await store.set_webhook(bot, url, "s", drop_pending=False)  # the same URL again
        [second] = await store.claim_deliveries(1, 220)  # at once, by the same replica
        assert second.lease != first.lease
        assert not await store.delivered(first, 5)  # the old delivery confirms nothing
        await store.delivery_failed(first, "Read timeout expired", 30)
        await store.release(first)  # ... and releases nothing
        assert await store.claim_deliveries(1, 220) == []
        assert await store.delivered(second, 5)
        await store.release(second)
        assert (await store.keep(bot, 6, "message", b'{"update_id":6}')).kept
        [third] = await store.claim_deliveries(1, 220)
        await RelayRepository(app.pool, DATA_KEYS, "replica-b").release_all()  # not its lease
        assert await store.claim_deliveries(1, 220) == []
        await store.release_all()  # shutdown of replica-a
        [fourth] = await store.claim_deliveries(1, 220)
        assert fourth.attempts == 0 and fourth.lease != third.lease


async def test_a_relay_turned_on_through_another_replica_keeps_what_arrives_here_next(
    empty_db: str, fake_telegram: FakeBotApi
) -> None:
    """A replica remembers a bot it found without a relay (its payments then cost no relay
    lookup); the bot's code turning the relay on through another replica makes it forget, so
    the updates that reach it afterwards are kept for the bot. Without that forgetting, no
    update sent after the relay was on would ever be kept here. (getWebhookInfo turns the relay
    on and reads the pending count without a notification of its own; getUpdates would send
    one, as a newer poll.)"""
    async with replica(empty_db, fake_telegram) as first:
        shop = await new_shop(first, fake_telegram)  # Telegram's webhook: the first replica
        await fake_telegram.send_user_message(shop.bot_token, USER, "before the relay")
        await fake_telegram.drain(shop.bot_token)  # handled there: no relay for the bot
        async with (
            replica(empty_db, fake_telegram) as second,
            bot_of(second, shop.bot_token) as bot,
        ):
            assert (await bot.get_webhook_info()).pending_update_count == 0  # the relay on

            async def kept_after() -> bool:
                # The first replica hears of the relay by a notification: until it has, an
                # update is handled as one that came just before; so send until one is kept.
                await fake_telegram.send_user_message(shop.bot_token, USER, "after the relay")
                await fake_telegram.drain(shop.bot_token)
                return (await bot.get_webhook_info()).pending_update_count > 0

            await eventually(kept_after, timeout=SOON, what="an update kept after the relay")
