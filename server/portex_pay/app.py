"""The composition root: settings -> pool -> adapters -> services -> servers.

`wire(settings, pool, bot_api)` builds every service on its adapters, with no I/O (the CLI
reuses it). `PortexApp(settings).start()` connects, migrates, wires, and begins serving gRPC
(PaymentService, health, reflection) and HTTP on one event loop, with its background tasks
(health probe, pruners, outbox workers, pollers, the relay's webhook delivery) owned, named and
supervised: a task that dies of an unexpected error is logged with its traceback and started
again after a backoff (service/worker.supervise), rather than stopping the process, because each
task's work is durable in PostgreSQL and a restart resumes it.

`stop()` shuts down in this order: the event streams end at once (UNAVAILABLE, so their clients
resume on another replica); the background tasks are cancelled (within `shutdown_grace`); health
goes NOT_SERVING and the gRPC server stops accepting RPCs while in-flight ones get
`shutdown_grace` seconds; then the HTTP server, the HTTP sessions and the pool are closed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import grpc
import structlog
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.adapters.http_guard import HttpPoster, new_callback_session
from portex_pay.adapters.postgres.applications import ApplicationRepository
from portex_pay.adapters.postgres.callbacks import CallbackRepository
from portex_pay.adapters.postgres.catalog import CatalogRepository, TelegramUserRepository
from portex_pay.adapters.postgres.dead_letters import DeadLetterRepository
from portex_pay.adapters.postgres.events import EventLog
from portex_pay.adapters.postgres.ledger_store import LedgerStore
from portex_pay.adapters.postgres.listener import EventListener
from portex_pay.adapters.postgres.migrations import migrate
from portex_pay.adapters.postgres.orders import OrderRepository
from portex_pay.adapters.postgres.polling import PollLeases
from portex_pay.adapters.postgres.pool import connect, create_pool
from portex_pay.adapters.postgres.relay import CHANNEL as RELAY_CHANNEL
from portex_pay.adapters.postgres.relay import RelayRepository
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.api.grpc.interceptor import PaymentInterceptor
from portex_pay.api.grpc.reflection import DocumentedPool
from portex_pay.api.grpc.servicer import PaymentServicer
from portex_pay.api.http.app import create_http_app
from portex_pay.api.http.guard import ClientWarnings, runner_options
from portex_pay.config import Settings
from portex_pay.logging import register_secret
from portex_pay.service.auth import ApiKeyAuthenticator, BotTokenAuthenticator
from portex_pay.service.bot_messages import BotMessagesService
from portex_pay.service.cache import ApplicationCache
from portex_pay.service.callbacks import CallbackDispatcher
from portex_pay.service.catalog import CatalogService
from portex_pay.service.clock import utcnow
from portex_pay.service.edge import EdgeService, EdgeSettings
from portex_pay.service.orders import OrderService, PaymentSettings
from portex_pay.service.polling import BotPoller, PollerManager
from portex_pay.service.refunds import RefundService
from portex_pay.service.relay import RelayService
from portex_pay.service.stream import EventHub, EventStreamer
from portex_pay.service.updates import UpdateProcessor
from portex_pay.service.worker import PeriodicWorker, supervise

log = structlog.get_logger(__name__)

SERVICE_NAME = payment_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name


async def wait_for_database(dsn: str, timeout: float) -> asyncpg.Connection:
    """Connects, retrying while PostgreSQL is still starting, for up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        try:
            return await connect(dsn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            if time.monotonic() + delay > deadline:
                raise ConnectionError(
                    f"PostgreSQL is unreachable: {type(error).__name__}"
                ) from None
            log.info("waiting for PostgreSQL", error=type(error).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def telegram_client(session: aiohttp.ClientSession, settings: Settings) -> BotApiClient:
    """The Bot API client as configured (base URL, timeout, test environment)."""
    return BotApiClient(
        session,
        settings.telegram_api_url,
        settings.telegram_timeout,
        test_environment=settings.telegram_test_environment,
    )


def _replica_id() -> str:
    """Names this process among replicas (poll lease owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class Wiring:
    """Every service of one process, wired to its adapters: pure construction, no I/O (the
    CLI reuses it; `PortexApp.start` adds the servers and the background tasks)."""

    applications: ApplicationRepository
    orders: OrderRepository
    events: EventLog
    authenticator: ApiKeyAuthenticator
    refunds: RefundService
    refund_worker: PeriodicWorker
    relay: RelayService | None
    relay_worker: PeriodicWorker | None
    processor: UpdateProcessor
    hub: EventHub
    listener: EventListener
    servicer: PaymentServicer
    cached_applications: ApplicationCache[UUID]
    bot_applications: ApplicationCache[int]
    edge: EdgeService | None


def wire(settings: Settings, pool: asyncpg.Pool, bot_api: BotApiClient, *, replica: str) -> Wiring:
    """The ports' adapters handed to the use cases, as `settings` say."""
    applications = ApplicationRepository(pool)
    orders = OrderRepository(pool)
    order_service = OrderService(
        orders,
        bot_api,
        PaymentSettings(
            max_amount=settings.max_amount,
            order_ttl_seconds=settings.order_ttl_seconds,
            telegram_timeout=settings.telegram_timeout,
            payload_secret=settings.payload_secret.encode(),
        ),
    )
    authenticator = ApiKeyAuthenticator(applications, settings.auth_cache_ttl)
    payment_records = LedgerStore(pool)
    refunds = RefundService(
        payment_records,
        bot_api,
        max_attempts=settings.refund_max_attempts,
        lease_seconds=settings.refund_lease_seconds,
    )
    refund_worker = PeriodicWorker("refunds", refunds.step, idle=settings.refund_interval)
    refunds.wake = refund_worker.wake
    bot_applications = ApplicationCache(applications.get_by_bot_id, settings.auth_cache_ttl)
    relay: RelayService | None = None
    relay_worker: PeriodicWorker | None = None
    if settings.bot_proxy:
        relay = RelayService(
            RelayRepository(pool, replica),
            bot_api,
            bot_applications.get,
            default_updates_mode=settings.telegram_updates,
            webhook_timeout=settings.relay_webhook_timeout,
        )
        relay_worker = PeriodicWorker(
            "relay-webhooks", relay.deliver_step, idle=settings.relay_interval
        )
        relay.wake_delivery = relay_worker.wake
    processor = UpdateProcessor(
        payment_records,
        DeadLetterRepository(pool),
        bot_api,
        settings.payload_secret.encode(),
        decision_timeout=settings.checkout_decision_timeout,
        auto_refund=settings.auto_refund,
        clock=utcnow,
        max_attempts=settings.update_max_attempts,
        refund_requested=refund_worker.wake,
        relay=relay,
    )

    events = EventLog(pool)
    hub = EventHub(
        events,
        queue_size=settings.stream_buffer,
        poll_interval=settings.stream_poll_interval,
    )
    listener = EventListener(
        settings.database_url,
        hub.wake,
        channels={RELAY_CHANNEL: relay.notified} if relay is not None else None,
    )
    streamer = EventStreamer(events, hub, heartbeat=settings.stream_heartbeat)
    servicer = PaymentServicer(
        order_service,
        refunds,
        streamer,
        CatalogService(
            CatalogRepository(pool),
            TelegramUserRepository(pool),
            max_amount=settings.max_amount,
        ),
        BotMessagesService(applications),
    )
    cached_applications = ApplicationCache(applications.get, settings.auth_cache_ttl)
    edge = None
    if settings.edge:
        edge = EdgeService(
            cached_applications.get,
            applications.origin_allowed_anywhere,
            CatalogRepository(pool),
            TelegramUserRepository(pool),
            order_service,
            EdgeSettings(
                init_data_max_age=timedelta(seconds=settings.init_data_max_age),
                ed25519_public_key=settings.init_data_key(),
                dedupe_window=timedelta(seconds=settings.edge_dedupe_window),
                user_rate=settings.edge_user_rate,
                user_burst=settings.edge_user_burst,
                app_rate=settings.edge_app_rate,
                app_burst=settings.edge_app_burst,
                preflight_rate=settings.edge_preflight_rate,
                preflight_burst=settings.edge_preflight_burst,
                origin_cache_ttl=settings.auth_cache_ttl,
            ),
        )
    return Wiring(
        applications=applications,
        orders=orders,
        events=events,
        authenticator=authenticator,
        refunds=refunds,
        refund_worker=refund_worker,
        relay=relay,
        relay_worker=relay_worker,
        processor=processor,
        hub=hub,
        listener=listener,
        servicer=servicer,
        cached_applications=cached_applications,
        bot_applications=bot_applications,
        edge=edge,
    )


class PortexApp:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.health = health.aio.HealthServicer()
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self._pool: asyncpg.Pool | None = None
        self._session: aiohttp.ClientSession | None = None
        self._callback_session: aiohttp.ClientSession | None = None
        self._relay_session: aiohttp.ClientSession | None = None
        self.relay: RelayService | None = None
        self.pollers: PollerManager | None = None
        self.hub: EventHub | None = None
        self._server: grpc.aio.Server | None = None
        self._http_runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._serving = False
        self._stopped = asyncio.Event()

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "start() first"
        return self._pool

    async def start(self) -> None:
        settings = self.settings
        register_secret(settings.payload_secret)  # redacted from every log line from now on
        conn = await wait_for_database(settings.database_url, settings.db_connect_timeout)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        self._pool = await create_pool(
            settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max
        )
        self._session = await new_session()
        bot_api = telegram_client(self._session, settings)
        replica = _replica_id()
        wiring = wire(settings, self._pool, bot_api, replica=replica)
        self.refunds, self.relay = wiring.refunds, wiring.relay
        self.processor, self.hub, self.listener = wiring.processor, wiring.hub, wiring.listener
        applications, orders, events = wiring.applications, wiring.orders, wiring.events
        refund_worker, relay_worker = wiring.refund_worker, wiring.relay_worker

        server = grpc.aio.server(
            interceptors=[PaymentInterceptor(wiring.authenticator)],
            options=[
                # Fail loudly when the port is taken instead of sharing it with a stranger.
                ("grpc.so_reuseport", 0),
                # Nothing valid comes near it; larger requests are RESOURCE_EXHAUSTED, unread.
                ("grpc.max_receive_message_length", settings.grpc_max_receive_bytes),
                # No flow-control window grown by bandwidth-delay probing: on a fast link it
                # grows to megabytes per stream, and every stream of an oversized request then
                # pushes that much into our buffers before it is refused (100 streams of 32 MiB
                # on one connection kept RSS 240 MB higher; without probing, 2 MB). Requests are
                # at most 64 KiB, the size of the fixed initial window, so nothing is slower.
                ("grpc.http2.bdp_probe", 0),
                # Long-lived streams: ping idle clients, accept their pings every 10 s or more.
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        payment_pb2_grpc.add_PaymentServiceServicer_to_server(wiring.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
            pool=DocumentedPool(),
        )
        self.grpc_port = server.add_insecure_port(settings.grpc_addr)
        if self.grpc_port == 0:
            raise OSError(f"cannot listen on {settings.grpc_addr}")
        await server.start()
        self._server = server
        await self._set_serving(True)

        http_host, _, http_port = settings.http_addr.rpartition(":")
        client_warnings = ClientWarnings()
        self._http_runner = web.AppRunner(
            create_http_app(
                lambda: self._serving,
                load_application=wiring.cached_applications.get,
                processor=self.processor,
                edge=wiring.edge,
                relay=self.relay,
                bot_tokens=BotTokenAuthenticator(wiring.bot_applications),
                bot_api=bot_api,
                forward_timeout=max(60.0, settings.telegram_timeout),
                read_timeout=settings.http_read_timeout,
                warnings=client_warnings,
            ),
            handle_signals=False,
            **runner_options(settings.http_read_timeout, client_warnings),
        )
        await self._http_runner.setup()
        site = web.TCPSite(self._http_runner, http_host, int(http_port))
        await site.start()
        self.http_port = self._http_runner.addresses[0][1]

        self._spawn("health-probe", self._probe_database)
        key_ttl = settings.idempotency_ttl_seconds
        idempotency_pruner = PeriodicWorker(
            "idempotency-pruner",
            lambda: orders.prune_idempotency_keys(key_ttl),
            idle=settings.prune_interval,
        )
        self._spawn("idempotency-pruner", idempotency_pruner.run)
        self._spawn("event-hub", self.hub.run)
        self._spawn("event-listener", self.listener.run)
        retention = settings.event_retention_days * 86_400
        pruner = PeriodicWorker(
            "event-pruner", lambda: events.prune(retention), idle=settings.prune_interval
        )
        self._spawn("event-pruner", pruner.run)
        self._spawn("refunds", refund_worker.run)
        expiry = PeriodicWorker(
            "expiry", lambda: orders.expire_due(500), idle=settings.expiry_interval
        )
        self._spawn("expiry", expiry.run)
        if settings.callback_delivery:
            # Its own session: a slow receiver must not take the Bot API's connections.
            self._callback_session = await new_callback_session(
                concurrency=16, allow_private=settings.callback_allow_private
            )
            dispatcher = CallbackDispatcher(
                CallbackRepository(self._pool),
                HttpPoster(self._callback_session),
                timeout=settings.callback_timeout,
                max_attempts=settings.callback_max_attempts,
            )
            self._spawn(
                "callbacks",
                PeriodicWorker("callbacks", dispatcher.step, idle=settings.callback_interval).run,
            )
        if self.relay is not None and relay_worker is not None:
            # Its own guarded session: the app bot's webhook URL is chosen by whoever holds the
            # bot token, so it gets the callbacks' address rule (PORTEX_CALLBACK_ALLOW_PRIVATE).
            self._relay_session = await new_callback_session(
                concurrency=16, allow_private=settings.callback_allow_private
            )
            self.relay.webhook_poster = HttpPoster(self._relay_session)
            self._spawn("relay-webhooks", relay_worker.run)
            relay = self.relay
            relay_pruner = PeriodicWorker("relay-pruner", relay.prune, idle=settings.prune_interval)
            self._spawn("relay-pruner", relay_pruner.run)
        if settings.telegram_pollers:
            leases = PollLeases(self._pool, replica, settings.poll_lease_seconds)
            self.pollers = pollers = PollerManager(
                applications,
                lambda application: BotPoller(
                    application,
                    leases,
                    bot_api,
                    self.processor,
                    poll_timeout=settings.poll_timeout,
                    lease_seconds=settings.poll_lease_seconds,
                ),
                default_mode=settings.telegram_updates,
                refresh=min(5.0, settings.poll_lease_seconds / 3),
            )
            self._spawn("pollers", pollers.run)
        log.info("serving", grpc_port=self.grpc_port, http_port=self.http_port)

    def _spawn(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Runs `run()` as a named background task, supervised: an unexpected death is logged
        as an error with its traceback and the task is started again after a backoff."""
        self._tasks.append(asyncio.create_task(supervise(name, run), name=name))

    async def _set_serving(self, serving: bool) -> None:
        if serving != self._serving:
            log.info("health", serving=serving)
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def _probe_database(self) -> None:
        """Health follows PostgreSQL: NOT_SERVING while it is unreachable, SERVING when back."""
        interval = self.settings.health_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.pool.fetchval("SELECT 1", timeout=max(interval, 1.0))
                reachable = True
            except Exception:  # any failure to answer means "not serving"
                reachable = False
            await self._set_serving(reachable)

    async def stop(self) -> None:
        """Graceful shutdown; safe to call more than once."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("shutting down", grace_seconds=self.settings.shutdown_grace)
        if self.hub is not None:
            # Streams end now with UNAVAILABLE, not after the grace period: their clients resume
            # on another replica while in-flight unary calls finish here.
            self.hub.close()
        if self._tasks:
            # asyncio.wait_for (asyncpg's timeouts, the loops' waits) can swallow a cancel that
            # arrives as its inner await completes (CPython gh-86296), so a task may go on after
            # one cancel: cancel again until it ends, within a bound.
            deadline = time.monotonic() + max(self.settings.shutdown_grace, 1.0)
            stuck = set(self._tasks)
            while stuck and time.monotonic() < deadline:
                for task in stuck:
                    task.cancel()
                _, stuck = await asyncio.wait(stuck, timeout=0.2)
            for task in stuck:
                log.warning("background task did not stop", task=task.get_name())
            for task in self._tasks:
                if not task.done():
                    continue
                if not task.cancelled() and task.exception() is not None:
                    log.error(
                        "background task failed", task=task.get_name(), exc_info=task.exception()
                    )
        await self.health.enter_graceful_shutdown()
        self._serving = False
        if self._server is not None:
            # Stops accepting RPCs at once; in-flight ones get the grace period.
            await self._server.stop(self.settings.shutdown_grace)
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        for session in (self._session, self._callback_session, self._relay_session):
            if session is not None:
                await session.close()
        if self._pool is not None:
            await self._pool.close()
        log.info("stopped")


async def serve(
    settings: Settings, before_stop: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Runs the service until SIGTERM or SIGINT, then stops it gracefully (`portex-pay serve`,
    `make run`)."""
    app = PortexApp(settings)
    await app.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await app.stop()
        if before_stop is not None:
            await before_stop()
