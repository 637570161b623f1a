"""Shared test fixtures: a real PostgreSQL, the fake Bot API, the service in-process.

PostgreSQL: `DATABASE_URL` when given (a fresh database is created on that server for the run),
else a throwaway cluster initdb'd in a temp dir on a free port (as asyncpg's own test base does).
The service under test runs in the test's event loop (real gRPC over loopback); end-to-end tests in
tests/e2e start real server processes instead.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest

from portex.payment.v1 import payment_pb2_grpc
from portex_pay.adapters.postgres.sealed import APPLICATIONS
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import PortexApp, application_admin
from portex_pay.config import Settings
from portex_pay.domain.pay import PayloadKeys
from portex_pay.domain.sealing import DataKeys
from portex_pay.service.applications import ApplicationAdmin
from portex_pay_devtools.fake_bot_api import FakeBotApi
from portex_pay_devtools.pgcluster import PgCluster

PAYLOAD_SECRET = "test-payload-secret-" + "x" * 32
PAYLOAD_KEYS = PayloadKeys(PAYLOAD_SECRET.encode())  # the ring the test services verify with
# The data key the test services seal stored secrets with (PORTEX_DATA_KEY), and its ring.
DATA_KEY = "dGVzdC1kYXRhLWtleS0zMi1ieXRlcy1sb25nLSEhISE="
DATA_KEYS = DataKeys(base64.b64decode(DATA_KEY))


async def stored_secret(
    db: asyncpg.Pool | asyncpg.Connection, application_id: str | uuid.UUID, column: str
) -> str:
    """An application's secret as the service knows it: read from its row, and opened (it is
    stored sealed, adapters/postgres/sealed.py)."""
    row_id = uuid.UUID(str(application_id))
    sealed = await db.fetchval(f"SELECT {column} FROM applications WHERE id = $1", row_id)
    secret = APPLICATIONS.open(DATA_KEYS, column, row_id, sealed)
    assert secret is not None
    return secret


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_bot_token() -> str:
    return f"{secrets.randbelow(10**9) + 10**9}:{secrets.token_urlsafe(27)}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("DATABASE_URL")
    if given:
        yield from _fresh_database_on(given)
        return
    cluster = PgCluster(tmp_path_factory.mktemp("pg") / "data", ephemeral=True)
    cluster.start()
    try:
        yield cluster.dsn
    finally:
        cluster.destroy()


def _fresh_database_on(dsn: str) -> Iterator[str]:
    import asyncio

    name = f"portex_test_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    parts = urlsplit(dsn)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        asyncio.run(run(f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture
async def empty_db(database_url: str) -> AsyncIterator[str]:
    """A database of its own on the test server, with an empty schema."""
    name = f"isolated_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
async def fake_telegram() -> AsyncIterator[FakeBotApi]:
    fake = FakeBotApi()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def make_settings(database_url: str, telegram_url: str, **overrides: object) -> Settings:
    settings = Settings().replace(
        db_url=database_url,
        payload_secret=PAYLOAD_SECRET,
        data_key=DATA_KEY,
        grpc_addr="127.0.0.1:0",
        http_addr="127.0.0.1:0",
        telegram_api_url=telegram_url,
        telegram_timeout=2.0,
        health_interval=0.1,
        auth_cache_ttl=0.2,
        shutdown_grace=2.0,
        # Tests that poll start their own replicas; this one only serves webhooks.
        telegram_updates="webhook",
        telegram_pollers=False,
        # Tests of the Star ledger start their own readers (or run one catch-up).
        ledger_enabled=False,
        checkout_decision_timeout=1.0,
        # The callback tests drive their own dispatcher, step by step.
        callback_delivery=False,
        # Test receivers listen on loopback; tests of the address guard turn this off.
        callback_allow_private=True,
        stream_heartbeat=0.5,
    )
    return settings.replace(**overrides)


@pytest.fixture(scope="session")
async def service(database_url: str, fake_telegram: FakeBotApi) -> AsyncIterator[PortexApp]:
    app = PortexApp(make_settings(database_url, fake_telegram.base_url))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture(scope="session")
async def channel(service: PortexApp) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        yield channel


@pytest.fixture(scope="session")
def stub(channel: grpc.aio.Channel) -> payment_pb2_grpc.PaymentServiceStub:
    return payment_pb2_grpc.PaymentServiceStub(channel)


@dataclass
class TestApp:
    __test__ = False  # not a test class, despite the name

    """An application created for one test, with its bot registered at the fake Bot API."""

    id: str
    api_key: str
    bot_token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)


async def create_test_app(
    admin: ApplicationAdmin,
    fake_telegram: FakeBotApi,
    *,
    bot: bool = True,
    updates: str | None = None,
    public_url: str | None = None,
) -> TestApp:
    """An application with its own bot at the fake Bot API. `updates`: "webhook" registers
    our webhook at `public_url`; "polling" marks the application for polling replicas."""
    token = new_bot_token()
    if bot:
        fake_telegram.add_bot(token)
    application, key = await admin.create_app(
        f"test-{uuid.uuid4().hex[:10]}", token if bot else None
    )
    if updates == "webhook":
        assert public_url is not None
        await admin.register_webhook(application.id, public_url)
    elif updates == "polling":
        await admin.set_updates_mode(application.id, "polling")
    return TestApp(str(application.id), key, token)


@pytest.fixture
async def make_app(service: PortexApp, fake_telegram: FakeBotApi):
    """Creates applications (each with its own bot) through the real admin use case."""
    session = await new_session()
    admin = application_admin(
        service.pool, BotApiClient(session, fake_telegram.base_url, 5.0), data_keys=DATA_KEYS
    )

    async def create(bot: bool = True, updates: str | None = None) -> TestApp:
        return await create_test_app(
            admin,
            fake_telegram,
            bot=bot,
            updates=updates,
            public_url=f"http://127.0.0.1:{service.http_port}",
        )

    try:
        yield create
    finally:
        await session.close()


@pytest.fixture
async def app(make_app) -> TestApp:
    created: TestApp = await make_app()
    return created
