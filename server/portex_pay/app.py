"""The composition root: settings -> pool -> adapters -> services -> jobs -> servers.

`wire(settings, pool, sessions)` builds every service on its adapters, and the process's named
background jobs under one supervisor, with no I/O: each dependency goes in through a constructor,
nothing is set on an object after it is built (the CLI reuses it). `application_admin(db,
bot_api)` builds the operators' use case (the CLI, `make run`, the tests and the benches).
`PortexApp(settings).start()` connects, migrates, opens the outgoing HTTP sessions, wires, and
starts the servers (gRPC: PaymentService, health, reflection; HTTP) and the jobs on one loop.

Every job (health probe, event hub and listener, pruners, expiry, the unfulfilled-order policy's
sweep, outbox workers, the relay's webhook delivery, pollers, the Star ledger's readers) runs under
the supervisor
(service/worker.py): a task that dies of an unexpected error is logged with its traceback and
started again after a backoff, rather than stopping the process, because each task's work is
durable in PostgreSQL and a restart resumes it.
One that dies 5 times within 60 s turns health NOT_SERVING until it has run 60 s without dying
(service/health.py), as does PostgreSQL being unreachable.

`stop()` shuts down in this order: the event streams end at once (UNAVAILABLE, so their clients
resume on another replica); the jobs are cancelled (within `shutdown_grace`); health goes
NOT_SERVING and the gRPC server stops accepting RPCs while in-flight ones get `shutdown_grace`
seconds; then the HTTP server, the HTTP sessions and the pool are closed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

import aiohttp
import asyncpg
import grpc
import structlog
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.adapters.http_guard import HttpPoster, new_callback_session
from portex_pay.adapters.postgres.applications import ApplicationRepository
from portex_pay.adapters.postgres.callbacks import CallbackRepository
from portex_pay.adapters.postgres.catalog import CatalogRepository, TelegramUserRepository
from portex_pay.adapters.postgres.dead_letters import DeadLetterRepository
from portex_pay.adapters.postgres.events import EventLog
from portex_pay.adapters.postgres.export import AccountingExportReader
from portex_pay.adapters.postgres.ledger_store import LedgerStore
from portex_pay.adapters.postgres.listener import EventListener
from portex_pay.adapters.postgres.migrations import apply_migrations
from portex_pay.adapters.postgres.orders import OrderRepository
from portex_pay.adapters.postgres.outbox_backlog import OutboxBacklogReader
from portex_pay.adapters.postgres.polling import PollLeases
from portex_pay.adapters.postgres.pool import create_pool
from portex_pay.adapters.postgres.refunds import RefundRepository
from portex_pay.adapters.postgres.relay import CHANNEL as RELAY_CHANNEL
from portex_pay.adapters.postgres.relay import RelayRepository
from portex_pay.adapters.postgres.sealed import prepare_sealed_secrets
from portex_pay.adapters.postgres.star_ledger import StarLedgerRepository
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.api.grpc.interceptor import PaymentInterceptor
from portex_pay.api.grpc.reflection import enable_reflection
from portex_pay.api.grpc.servicer import PaymentServicer
from portex_pay.api.grpc.tls import TlsFiles, server_credentials
from portex_pay.api.http.app import create_http_app
from portex_pay.api.http.guard import ClientWarnings, runner_options
from portex_pay.api.http.metrics import metrics_app
from portex_pay.config import Settings
from portex_pay.domain.sealing import DataKeys
from portex_pay.logging import register_secrets
from portex_pay.metrics import PrometheusMetrics
from portex_pay.service.applications import ApplicationAdmin
from portex_pay.service.auth import ApiKeyAuthenticator, BotTokenAuthenticator
from portex_pay.service.bot_messages import BotMessagesService
from portex_pay.service.cache import ApplicationCache
from portex_pay.service.callbacks import CallbackAdmin, CallbackDispatcher
from portex_pay.service.catalog import CatalogService
from portex_pay.service.clock import utcnow
from portex_pay.service.edge import EdgeService, EdgeSettings
from portex_pay.service.export import AccountingExport
from portex_pay.service.fulfilment import UnfulfilledRefunds
from portex_pay.service.health import Health
from portex_pay.service.housekeeping import Housekeeping
from portex_pay.service.metrics import MetricsSampler
from portex_pay.service.orders import OrderService, PaymentSettings
from portex_pay.service.polling import BotPoller, PollerManager
from portex_pay.service.ports import NO_METRICS, Applications, Metrics, TelegramBot
from portex_pay.service.ratelimit import RateLimits
from portex_pay.service.reconcile import BotLedgerJob, LedgerReader
from portex_pay.service.refunds import RefundService
from portex_pay.service.relay import RelayService
from portex_pay.service.star_ledger import StarLedger
from portex_pay.service.stream import EventHub, EventStreamer
from portex_pay.service.subscriptions import SubscriptionService
from portex_pay.service.updates import UpdateProcessor
from portex_pay.service.worker import Job, PerBotJobs, PeriodicWorker, Supervisor, Wakeup

log = structlog.get_logger(__name__)

SERVICE_NAME = payment_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name


def telegram_client(
    session: aiohttp.ClientSession, settings: Settings, metrics: Metrics = NO_METRICS
) -> BotApiClient:
    """The Bot API client as configured (base URL, timeout, test environment)."""
    return BotApiClient(
        session,
        settings.telegram.api_url,
        settings.telegram.timeout,
        test_environment=settings.telegram.test_environment,
        metrics=metrics,
    )


def application_admin(
    db: asyncpg.Pool | asyncpg.Connection,
    bot_api: TelegramBot,
    *,
    data_keys: DataKeys,
    max_amount: int | None = None,
) -> ApplicationAdmin:
    """The operators' use case on a pool or one connection: the CLI's admin commands, `make
    run`'s dev application, the tests' and the benches' applications. The catalog commands need
    the catalog's price bound (`max_amount`: settings.payments.max_amount); without it they answer
    AdminError ("the catalog is not available to this command")."""
    catalog = None
    if max_amount is not None:
        catalog = CatalogService(
            CatalogRepository(db), TelegramUserRepository(db), max_amount=max_amount
        )
    return ApplicationAdmin(ApplicationRepository(db, data_keys), bot_api, catalog)


def bot_messages_admin(
    db: asyncpg.Pool | asyncpg.Connection, data_keys: DataKeys
) -> BotMessagesService:
    """The bot's messages (/paysupport, /terms, the buyer messages), for the CLI."""
    return BotMessagesService(ApplicationRepository(db, data_keys))


def accounting_export(
    db: asyncpg.Pool | asyncpg.Connection, data_keys: DataKeys
) -> AccountingExport:
    """The accounting export (`portex-pay admin export`): orders, in keyset batches."""
    return AccountingExport(AccountingExportReader(db), ApplicationRepository(db, data_keys))


def callback_admin(db: asyncpg.Pool | asyncpg.Connection, data_keys: DataKeys) -> CallbackAdmin:
    """Failed callback deliveries listed and replayed (`portex-pay admin callbacks`)."""
    return CallbackAdmin(CallbackRepository(db, data_keys))


def _replica_id() -> str:
    """Names this process among replicas (poll lease owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Sessions:
    """The outgoing HTTP sessions, opened before wire(): the Bot API's, and guarded ones (the
    callbacks' address rule, PORTEX_CALLBACK_ALLOW_PRIVATE) for the apps' callbacks and for the
    relay's POSTs to the app bots' webhooks, whose URL whoever holds a bot token chooses. Each
    is its own, so that a slow receiver cannot take the Bot API's connections."""

    telegram: aiohttp.ClientSession
    callbacks: aiohttp.ClientSession | None = None  # with PORTEX_CALLBACK_DELIVERY
    webhooks: aiohttp.ClientSession | None = None  # with PORTEX_BOT_PROXY

    @classmethod
    async def open(cls, settings: Settings) -> Sessions:
        async def guarded(wanted: bool) -> aiohttp.ClientSession | None:
            if not wanted:
                return None
            return await new_callback_session(
                concurrency=16, allow_private=settings.callback.allow_private
            )

        return cls(
            await new_session(),
            await guarded(settings.callback.delivery),
            await guarded(settings.relay.bot_proxy),
        )

    async def close(self) -> None:
        for session in (self.telegram, self.callbacks, self.webhooks):
            if session is not None:
                await session.close()


async def _publish_nowhere(serving: bool) -> None:
    """Health told to no one (a wiring that serves nothing: the CLI's)."""


@dataclass(frozen=True)
class Wiring:
    """Every service of one process, wired to its adapters, and its background jobs: pure
    construction, no I/O (the CLI reuses it; `PortexApp.start` starts the servers and the
    jobs)."""

    bot_api: BotApiClient
    applications: Applications
    authenticator: ApiKeyAuthenticator
    bot_tokens: BotTokenAuthenticator
    servicer: PaymentServicer
    processor: UpdateProcessor
    hub: EventHub
    listener: EventListener
    relay: RelayService | None
    pollers: PollerManager | None
    ledger_reader: LedgerReader
    ledgers: PerBotJobs[BotLedgerJob] | None
    edge: EdgeService | None
    cached_applications: ApplicationCache[UUID]
    bot_applications: ApplicationCache[int]
    health: Health
    metrics: PrometheusMetrics | None  # None: metrics off
    jobs: list[Job]


def wire(
    settings: Settings,
    pool: asyncpg.Pool,
    sessions: Sessions,
    *,
    replica: str,
    publish_health: Callable[[bool], Awaitable[None]] = _publish_nowhere,
) -> Wiring:
    """The ports' adapters handed to the use cases, and the named background jobs under one
    supervisor, as `settings` say. A worker's wake-up signal is made before both the service
    that gives it and the worker that waits on it. A job that posts over HTTP is made when its
    session is open (the CLI, which runs no jobs, gives the Bot API's alone)."""
    # Off (PORTEX_METRICS_ADDR unset): nothing is recorded, not only nothing served.
    prometheus = PrometheusMetrics() if settings.metrics.addr else None
    metrics: Metrics = NO_METRICS if prometheus is None else prometheus
    bot_api = telegram_client(sessions.telegram, settings, metrics)
    data_keys = settings.sealing.data_keys()
    applications, orders = ApplicationRepository(pool, data_keys), OrderRepository(pool)
    ledger, events = LedgerStore(pool, data_keys), EventLog(pool)
    refunds_due, deliveries_due, health_check = Wakeup(), Wakeup(), Wakeup()
    supervisor = Supervisor(on_failing=health_check.wake)
    refunds = _refund_service(settings, pool, ledger, bot_api, refunds_due, metrics)
    bot_applications = ApplicationCache(applications.get_by_bot_id, settings.auth.cache_ttl)
    cached_applications = ApplicationCache(applications.get, settings.auth.cache_ttl)
    relay = None
    if settings.relay.bot_proxy:
        relay = _relay(
            settings, pool, data_keys, replica, bot_api, bot_applications, sessions, deliveries_due
        )
    processor = _processor(settings, pool, ledger, bot_api, refunds_due, relay, metrics)
    hub = EventHub(
        events, queue_size=settings.stream.buffer, poll_interval=settings.stream.poll_interval
    )
    channels = {RELAY_CHANNEL: relay.notified} if relay is not None else None
    listener = EventListener(settings.db.url, hub.wake, channels=channels)
    health = Health(
        _database_answers(pool, settings.db.health_interval),
        supervisor.failing,
        publish_health,
        interval=settings.db.health_interval,
        wakeup=health_check,
    )
    pollers = None
    if settings.telegram.pollers:
        pollers = _pollers(settings, pool, replica, applications, bot_api, processor, supervisor)
    star_ledger, ledger_reader, ledgers = _star_ledger(
        settings, pool, replica, bot_api, refunds_due, applications, supervisor
    )
    workers = _workers(
        settings, pool, data_keys, sessions, orders, ledger, events, refunds, refunds_due
    )
    if relay is not None:
        workers += _relay_workers(settings, relay, deliveries_due)
    if settings.metrics.addr:
        workers.append(_metrics_sampler(settings, pool, hub, metrics))
    order_service = OrderService(orders, bot_api, _payment_settings(settings))
    catalog, users = CatalogRepository(pool), TelegramUserRepository(pool)
    return Wiring(
        bot_api=bot_api,
        applications=applications,
        authenticator=ApiKeyAuthenticator(applications, settings.auth.cache_ttl),
        bot_tokens=BotTokenAuthenticator(bot_applications),
        servicer=PaymentServicer(
            order_service,
            refunds,
            EventStreamer(events, hub, heartbeat=settings.stream.heartbeat),
            CatalogService(catalog, users, max_amount=settings.payments.max_amount),
            BotMessagesService(applications),
            star_ledger,
            SubscriptionService(orders, ledger, bot_api),
        ),
        processor=processor,
        hub=hub,
        listener=listener,
        relay=relay,
        pollers=pollers,
        ledger_reader=ledger_reader,
        ledgers=ledgers,
        edge=_edge(settings, cached_applications, applications, catalog, users, order_service),
        cached_applications=cached_applications,
        bot_applications=bot_applications,
        health=health,
        metrics=prometheus,
        jobs=[
            Job("health-probe", health.run, supervisor),
            Job("event-hub", hub.run, supervisor),
            Job("event-listener", listener.run, supervisor),
            *(Job(worker.name, worker.run, supervisor) for worker in workers),
            *([Job("pollers", pollers.run, supervisor)] if pollers is not None else []),
            *([Job("star-ledgers", ledgers.run, supervisor)] if ledgers is not None else []),
        ],
    )


def _refund_service(
    settings: Settings,
    pool: asyncpg.Pool,
    ledger: LedgerStore,
    bot_api: BotApiClient,
    refunds_due: Wakeup,
    metrics: Metrics,
) -> RefundService:
    """RefundPayment, ListRefunds and RetryRefund, and the refund worker's deliveries."""
    return RefundService(
        ledger,
        RefundRepository(pool),
        bot_api,
        max_attempts=settings.refund.max_attempts,
        lease_seconds=settings.refund.lease_seconds,
        wake=refunds_due.wake,
        metrics=metrics,
    )


def _processor(
    settings: Settings,
    pool: asyncpg.Pool,
    ledger: LedgerStore,
    bot_api: BotApiClient,
    refunds_due: Wakeup,
    relay: RelayService | None,
    metrics: Metrics,
) -> UpdateProcessor:
    """What handles the bots' updates (webhooks, pollers)."""
    return UpdateProcessor(
        ledger,
        DeadLetterRepository(pool),
        bot_api,
        settings.payments.payload_keys(),
        decision_timeout=settings.payments.checkout_decision_timeout,
        auto_refund=settings.payments.auto_refund,
        clock=utcnow,
        max_attempts=settings.payments.update_max_attempts,
        refund_requested=refunds_due.wake,
        relay=relay,
        metrics=metrics,
    )


def _star_ledger(
    settings: Settings,
    pool: asyncpg.Pool,
    replica: str,
    bot_api: BotApiClient,
    refunds_due: Wakeup,
    applications: Applications,
    supervisor: Supervisor,
) -> tuple[StarLedger, LedgerReader, PerBotJobs[BotLedgerJob] | None]:
    """The Star ledger's use cases, its reader (reading as `replica`: the jobs' and `admin
    reconcile`'s) and, with PORTEX_LEDGER, a reader job for every bot (`star-ledger-<bot id>`)."""
    store = StarLedgerRepository(pool, replica, settings.ledger.lease_seconds)
    star_ledger = StarLedger(
        store,
        bot_api,
        settings.payments.payload_keys(),
        auto_refund=settings.payments.auto_refund,
        clock=utcnow,
        refund_requested=refunds_due.wake,
    )
    interval = settings.ledger.interval
    reader = LedgerReader(star_ledger, store, bot_api, interval=interval)
    if not settings.ledger.enabled:
        return star_ledger, reader, None
    jobs = PerBotJobs(
        applications,
        lambda application: True,
        lambda application: BotLedgerJob(application, reader, interval=interval),
        supervisor,
        prefix="star-ledger",
        # A new bot is read within an interval at most (a short one in tests).
        refresh=min(5.0, interval),
    )
    return star_ledger, reader, jobs


def _relay(
    settings: Settings,
    pool: asyncpg.Pool,
    data_keys: DataKeys,
    replica: str,
    bot_api: BotApiClient,
    bot_applications: ApplicationCache[int],
    sessions: Sessions,
    deliveries_due: Wakeup,
) -> RelayService:
    """The app bots' relay (PORTEX_BOT_PROXY); it posts to their webhooks through the guarded
    session, when there is one."""
    return RelayService(
        RelayRepository(pool, data_keys, replica),
        bot_api,
        bot_applications.get,
        default_updates_mode=settings.telegram.updates,
        webhook_timeout=settings.relay.webhook_timeout,
        webhook_poster=HttpPoster(sessions.webhooks) if sessions.webhooks else None,
        wake_delivery=deliveries_due.wake,
    )


def _payment_settings(settings: Settings) -> PaymentSettings:
    return PaymentSettings(
        max_amount=settings.payments.max_amount,
        order_ttl_seconds=settings.payments.order_ttl_seconds,
        telegram_timeout=settings.telegram.timeout,
        payload_secret=settings.payments.payload_secret.encode(),
    )


def _workers(
    settings: Settings,
    pool: asyncpg.Pool,
    data_keys: DataKeys,
    sessions: Sessions,
    orders: OrderRepository,
    ledger: LedgerStore,
    events: EventLog,
    refunds: RefundService,
    refunds_due: Wakeup,
) -> list[PeriodicWorker]:
    """The housekeeping (pruning, expiry), the refunds' outbox, the unfulfilled-order policy's
    sweep and, with their session, the callbacks' outbox."""
    housekeeping = Housekeeping(
        orders,
        events,
        idempotency_ttl_seconds=settings.payments.idempotency_ttl_seconds,
        event_retention_seconds=settings.stream.event_retention_days * 86_400,
    )
    workers = [
        PeriodicWorker(
            "idempotency-pruner",
            housekeeping.prune_idempotency_keys_step,
            idle=settings.housekeeping.prune_interval,
        ),
        PeriodicWorker(
            "event-pruner",
            housekeeping.prune_events_step,
            idle=settings.housekeeping.prune_interval,
        ),
        PeriodicWorker("refunds", refunds.step, idle=settings.refund.interval, wakeup=refunds_due),
        PeriodicWorker("expiry", housekeeping.expire_step, idle=settings.payments.expiry_interval),
        PeriodicWorker(
            "subscription-expiry",
            housekeeping.expire_subscriptions_step,
            idle=settings.payments.expiry_interval,
        ),
        PeriodicWorker(
            "unfulfilled-refunds",
            UnfulfilledRefunds(orders, ledger, wake_refunds=refunds_due.wake).step,
            idle=settings.refund.unfulfilled_interval,
        ),
    ]
    if sessions.callbacks is not None:
        dispatcher = CallbackDispatcher(
            CallbackRepository(pool, data_keys),
            HttpPoster(sessions.callbacks),
            timeout=settings.callback.timeout,
            max_attempts=settings.callback.max_attempts,
        )
        workers.append(
            PeriodicWorker("callbacks", dispatcher.step, idle=settings.callback.interval)
        )
    return workers


def _metrics_sampler(
    settings: Settings, pool: asyncpg.Pool, hub: EventHub, metrics: Metrics
) -> PeriodicWorker:
    """The `metrics` job: the gauges no request sets, sampled every PORTEX_METRICS_INTERVAL."""

    def pool_usage() -> tuple[int, int]:
        size = pool.get_size()
        return size, size - pool.get_idle_size()

    sampler = MetricsSampler(metrics, OutboxBacklogReader(pool), hub, pool_usage)
    return PeriodicWorker("metrics", sampler.step, idle=settings.metrics.interval)


def _relay_workers(
    settings: Settings, relay: RelayService, deliveries_due: Wakeup
) -> list[PeriodicWorker]:
    """The relay's pruning and, with its session, its webhook delivery."""
    workers = [
        PeriodicWorker("relay-pruner", relay.prune, idle=settings.housekeeping.prune_interval)
    ]
    if relay.webhook_poster is not None:
        workers.append(
            PeriodicWorker(
                "relay-webhooks",
                relay.deliver_step,
                idle=settings.relay.interval,
                wakeup=deliveries_due,
            )
        )
    return workers


def _pollers(
    settings: Settings,
    pool: asyncpg.Pool,
    replica: str,
    applications: Applications,
    bot_api: BotApiClient,
    processor: UpdateProcessor,
    supervisor: Supervisor,
) -> PollerManager:
    leases = PollLeases(pool, replica, settings.poll.lease_seconds)
    return PollerManager(
        applications,
        lambda application: BotPoller(
            application,
            leases,
            bot_api,
            processor,
            poll_timeout=settings.poll.timeout,
            lease_seconds=settings.poll.lease_seconds,
        ),
        supervisor,
        default_mode=settings.telegram.updates,
        refresh=min(5.0, settings.poll.lease_seconds / 3),
    )


def _edge(
    settings: Settings,
    cached_applications: ApplicationCache[UUID],
    applications: ApplicationRepository,
    catalog: CatalogRepository,
    users: TelegramUserRepository,
    orders: OrderService,
) -> EdgeService | None:
    """The Mini App edge's use case, when PORTEX_EDGE is on."""
    if not settings.edge.enabled:
        return None
    return EdgeService(
        cached_applications.get,
        applications.origin_allowed_anywhere,
        catalog,
        users,
        orders,
        EdgeSettings(
            init_data_max_age=timedelta(seconds=settings.edge.init_data_max_age),
            ed25519_public_key=settings.init_data_key(),
            dedupe_window=timedelta(seconds=settings.edge.dedupe_window),
            user_rate=settings.edge.user_rate,
            user_burst=settings.edge.user_burst,
            app_rate=settings.edge.app_rate,
            app_burst=settings.edge.app_burst,
            preflight_rate=settings.edge.preflight_rate,
            preflight_burst=settings.edge.preflight_burst,
            origin_cache_ttl=settings.auth.cache_ttl,
        ),
    )


def _database_answers(pool: asyncpg.Pool, interval: float) -> Callable[[], Awaitable[bool]]:
    """Whether PostgreSQL answers `SELECT 1` in time (the health probe's question)."""

    async def answers() -> bool:
        try:
            await pool.fetchval("SELECT 1", timeout=max(interval, 1.0))
        except Exception:  # any failure to answer means "not serving"
            return False
        return True

    return answers


def grpc_rate_limits(settings: Settings) -> RateLimits | None:
    """PaymentService's limit per application, per process (PORTEX_GRPC_APP_RATE; unset: none)."""
    rate = settings.grpc.app_rate
    if rate is None:
        return None
    return RateLimits(rate, settings.grpc.app_burst, name="grpc-app")


async def start_grpc(
    settings: Settings,
    wiring: Wiring,
    health_servicer: health.aio.HealthServicer,
    *,
    reuse_port: bool = False,
) -> tuple[grpc.aio.Server, int]:
    """The gRPC server (PaymentService, health, reflection), listening (over TLS with
    PORTEX_GRPC_TLS_CERT, its pair reloaded from disk: api/grpc/tls.py); and its port.
    `reuse_port`: one of `serve --workers N`'s processes, sharing the port with its siblings."""
    server = grpc.aio.server(
        interceptors=[
            PaymentInterceptor(wiring.authenticator, wiring.metrics, grpc_rate_limits(settings))
        ],
        options=[
            # A single process fails loudly when the port is taken instead of sharing it with a
            # stranger; the workers' supervisor makes that check once for all of them.
            ("grpc.so_reuseport", int(reuse_port)),
            # Nothing valid comes near it; larger requests are RESOURCE_EXHAUSTED, unread.
            ("grpc.max_receive_message_length", settings.grpc.max_receive_bytes),
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
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(
        [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name], server
    )
    tls = TlsFiles.configured(settings.grpc)
    if tls is None:
        port = server.add_insecure_port(settings.grpc.addr)
    else:
        port = server.add_secure_port(settings.grpc.addr, server_credentials(tls))
    if port == 0:
        raise OSError(f"cannot listen on {settings.grpc.addr}")
    await server.start()
    return server, port


# Routes a caller adds to the HTTP application: `portex-pay dev` mounts the demo Mini App this
# way, so that `serve` never has it (the devtools are not even installed in the image).
HttpExtension = Callable[[web.Application], None]


async def start_http(
    settings: Settings,
    wiring: Wiring,
    *,
    reuse_port: bool = False,
    extension: HttpExtension | None = None,
) -> tuple[web.AppRunner, int]:
    """The HTTP server (webhooks, the Mini App edge, the Bot API proxy, /healthz), listening;
    and its port. `reuse_port`: as start_grpc's; `extension` adds routes of its own."""
    host, _, port = settings.http.addr.rpartition(":")
    client_warnings = ClientWarnings()
    http_app = create_http_app(
        wiring.health.is_serving,
        load_application=wiring.cached_applications.get,
        processor=wiring.processor,
        edge=wiring.edge,
        relay=wiring.relay,
        bot_tokens=wiring.bot_tokens,
        bot_api=wiring.bot_api,
        forward_timeout=max(60.0, settings.telegram.timeout),
        read_timeout=settings.http.read_timeout,
        warnings=client_warnings,
        metrics=wiring.metrics,
    )
    if extension is not None:
        extension(http_app)
    runner = web.AppRunner(
        http_app,
        handle_signals=False,
        **runner_options(settings.http.read_timeout, client_warnings),
    )
    await runner.setup()
    await web.TCPSite(runner, host, int(port), reuse_port=reuse_port or None).start()
    return runner, runner.addresses[0][1]


async def start_metrics(
    settings: Settings, wiring: Wiring, *, reuse_port: bool = False
) -> tuple[web.AppRunner, int]:
    """The metrics listener (PORTEX_METRICS_ADDR: `GET /metrics`), listening; and its port.
    `reuse_port`: as start_grpc's (a scrape reaches one worker, which answers for all)."""
    host, _, port = settings.metrics.addr.rpartition(":")
    assert wiring.metrics is not None  # wired whenever PORTEX_METRICS_ADDR is set
    runner = web.AppRunner(metrics_app(wiring.metrics), handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, int(port), reuse_port=reuse_port or None).start()
    return runner, runner.addresses[0][1]


class PortexApp:
    def __init__(
        self,
        settings: Settings,
        *,
        worker: bool = False,
        http_extension: HttpExtension | None = None,
    ) -> None:
        """`worker`: one of `serve --workers N`'s processes (server/portex_pay/processes.py):
        its ports are shared with the other workers. Every worker applies the migrations itself
        before it serves (under their lock: one applies, the others find nothing to do), so none
        serves an old schema while its supervisor is still checking them. `http_extension`:
        start_http's `extension`."""
        self.settings = settings
        self.worker = worker
        self.http_extension = http_extension
        self.health = health.aio.HealthServicer()
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self.metrics_port: int | None = None
        self._pool: asyncpg.Pool | None = None
        self._sessions: Sessions | None = None
        self._wiring: Wiring | None = None
        self._server: grpc.aio.Server | None = None
        self._http_runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "start() first"
        return self._pool

    @property
    def wiring(self) -> Wiring:
        assert self._wiring is not None, "start() first"
        return self._wiring

    # What tests and benches look at.
    @property
    def relay(self) -> RelayService | None:
        return self.wiring.relay

    @property
    def pollers(self) -> PollerManager | None:
        return self.wiring.pollers

    @property
    def ledgers(self) -> PerBotJobs[BotLedgerJob] | None:
        return self.wiring.ledgers

    @property
    def hub(self) -> EventHub:
        return self.wiring.hub

    @property
    def listener(self) -> EventListener:
        return self.wiring.listener

    async def start(self) -> None:
        settings = self.settings
        # Redacted from every log line from now on.
        register_secrets(settings.secret_texts())
        data_keys = settings.sealing.data_keys()
        await apply_migrations(settings.db.url, settings.db.connect_timeout)
        self._pool = await create_pool(
            settings.db.url, min_size=settings.db.pool_min, max_size=settings.db.pool_max
        )
        # Refuses to serve when a stored secret's key is missing (SealingError, before any
        # request could fail on it); seals what earlier versions stored in plain text.
        sealed = await prepare_sealed_secrets(self._pool, data_keys)
        if sealed:
            log.info("stored secrets sealed", values=sealed, key_id=data_keys.current_id)
        self._sessions = await Sessions.open(settings)
        self._wiring = wiring = wire(
            settings,
            self._pool,
            self._sessions,
            replica=_replica_id(),
            publish_health=self._publish_health,
        )
        self._server, self.grpc_port = await start_grpc(
            settings, wiring, self.health, reuse_port=self.worker
        )
        await wiring.health.set(True)
        self._http_runner, self.http_port = await start_http(
            settings, wiring, reuse_port=self.worker, extension=self.http_extension
        )
        if settings.metrics.addr:
            self._metrics_runner, self.metrics_port = await start_metrics(
                settings, wiring, reuse_port=self.worker
            )
        self._tasks = [job.start() for job in wiring.jobs]
        log.info(
            "serving",
            grpc_port=self.grpc_port,
            http_port=self.http_port,
            metrics_port=self.metrics_port,
            loop=type(asyncio.get_running_loop()).__module__.partition(".")[0],
        )

    async def _publish_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def stop(self) -> None:
        """Graceful shutdown; safe to call more than once."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("shutting down", grace_seconds=self.settings.grpc.shutdown_grace)
        if self._wiring is not None:
            # Streams end now with UNAVAILABLE, not after the grace period: their clients resume
            # on another replica while in-flight unary calls finish here.
            self._wiring.hub.close()
        await self._stop_jobs()
        await self.health.enter_graceful_shutdown()
        if self._wiring is not None:
            self._wiring.health.shutting_down()
        if self._server is not None:
            # Stops accepting RPCs at once; in-flight ones get the grace period.
            await self._server.stop(self.settings.grpc.shutdown_grace)
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        if self._sessions is not None:
            await self._sessions.close()
        if self._pool is not None:
            await self._pool.close()
        log.info("stopped")

    async def _stop_jobs(self) -> None:
        """Cancels the jobs' tasks, within the grace period."""
        if not self._tasks:
            return
        # asyncio.wait_for (asyncpg's timeouts, the loops' waits) can swallow a cancel that
        # arrives as its inner await completes (CPython gh-86296), so a task may go on after one
        # cancel: cancel again until it ends, within a bound.
        deadline = time.monotonic() + max(self.settings.grpc.shutdown_grace, 1.0)
        stuck = set(self._tasks)
        while stuck and time.monotonic() < deadline:
            for task in stuck:
                task.cancel()
            _, stuck = await asyncio.wait(stuck, timeout=0.2)
        for task in stuck:
            log.warning("background task did not stop", task=task.get_name())
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("background task failed", task=task.get_name(), exc_info=task.exception())


async def serve(
    settings: Settings,
    before_stop: Callable[[], Awaitable[None]] | None = None,
    *,
    worker: bool = False,
    stop: asyncio.Event | None = None,
    http_extension: HttpExtension | None = None,
) -> None:
    """Runs the service until SIGTERM or SIGINT (or `stop` is set), then stops it gracefully
    (`portex-pay serve`, `make run`; `worker`, `http_extension`: as PortexApp's)."""
    stop = asyncio.Event() if stop is None else stop
    app = PortexApp(settings, worker=worker, http_extension=http_extension)
    await app.start()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await app.stop()
        if before_stop is not None:
            await before_stop()
