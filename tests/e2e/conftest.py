"""End-to-end fixtures: real `portex-pay serve` processes on free ports.

The server process talks to the session's PostgreSQL and to the fake Bot API, which runs in the
test process's event loop (the tests are async, so it answers while they await).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from portex_pay.adapters.postgres.migrations import migrate
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import PortexApp, application_admin
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import DATA_KEY, DATA_KEYS, PAYLOAD_SECRET, TestApp, create_test_app, free_port
from tests.e2e.clients import Client, Connect

STARTUP_TIMEOUT = 30.0


class ServerProcess:
    """One `python -m portex_pay serve` process, its ports and its log file."""

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.log_path = log_path
        self.env = {
            **os.environ,
            "PORTEX_GRPC_ADDR": f"127.0.0.1:{self.grpc_port}",
            "PORTEX_HTTP_ADDR": f"127.0.0.1:{self.http_port}",
            "PORTEX_PAYLOAD_SECRET": PAYLOAD_SECRET,
            "PORTEX_DATA_KEY": DATA_KEY,
            "PORTEX_LOG_FORMAT": "json",
            "PORTEX_HEALTH_INTERVAL": "0.1",
            "PORTEX_TELEGRAM_TIMEOUT": "3",
            # Polling replicas are started on purpose by the tests that need them.
            "PORTEX_TELEGRAM_UPDATES": "webhook",
            "PORTEX_TELEGRAM_POLLERS": "false",
            # So are the Star ledger's readers (a replica reads every bot in the database).
            "PORTEX_LEDGER": "false",
            # Test receivers listen on loopback.
            "PORTEX_CALLBACK_ALLOW_PRIVATE": "true",
            # One process, the server's pid (`serve --workers N` is tested on purpose).
            "PORTEX_WORKERS": "1",
            **env,
        }
        self.args = args  # after `serve`
        # An explicit address in `env` wins; the ports follow it.
        self.grpc_port = int(self.env["PORTEX_GRPC_ADDR"].rpartition(":")[2])
        self.http_port = int(self.env["PORTEX_HTTP_ADDR"].rpartition(":")[2])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def spawn(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "portex_pay", "serve", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    async def start(self) -> None:
        self.spawn()
        await self.wait_serving()

    async def health(self) -> int | None:
        async with grpc.aio.insecure_channel(self.target) as channel:
            try:
                response = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            except grpc.aio.AioRpcError:
                return None
            return int(response.status)

    async def wait_serving(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while await self.health() != health_pb2.HealthCheckResponse.SERVING:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"server not serving after {timeout} s:\n{self.log_text()}")
            await asyncio.sleep(0.1)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("server did not exit in time")
            await asyncio.sleep(0.05)
        return int(self.process.returncode)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines


async def start_dev(workdir: Path, env: dict[str, str], log_path: Path) -> ServerProcess:
    """`portex-pay dev` (what `make run` runs) in `workdir` with exactly `env` (its gRPC port from
    PORTEX_GRPC_ADDR), serving: its output, banner included, in `log_path`. Kill it when done."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the wait is async
            [sys.executable, "-m", "portex_pay", "dev"],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess({}, log_path)
    server.grpc_port = int(env["PORTEX_GRPC_ADDR"].rpartition(":")[2])
    server.process = process
    try:
        await server.wait_serving(timeout=60)
    except BaseException:
        server.kill()
        raise
    return server


ServerFactory = Callable[..., Awaitable[ServerProcess]]


@pytest.fixture
async def start_server(
    database_url: str, fake_telegram: FakeBotApi, tmp_path: Path
) -> AsyncIterator[ServerFactory]:
    started: list[ServerProcess] = []

    async def start(*args: str, **env: str) -> ServerProcess:
        """Starts `serve *args` with `env` over the defaults, and waits until it serves."""
        environment = {
            "DATABASE_URL": database_url,
            "PORTEX_TELEGRAM_API_URL": fake_telegram.base_url,
            **env,
        }
        server = ServerProcess(environment, tmp_path / f"server-{len(started)}.log", args)
        started.append(server)
        await server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.kill()


@pytest.fixture
async def isolated(
    empty_db: str, fake_telegram: FakeBotApi
) -> AsyncIterator[tuple[str, Callable[..., Awaitable[TestApp]]]]:
    """A database of the test's own (migrated), and a factory for applications in it: no
    other process can do or see the work of the servers started on it."""
    conn = await asyncpg.connect(empty_db)
    await migrate(conn)
    session = await new_session()
    admin = application_admin(
        conn, BotApiClient(session, fake_telegram.base_url, 5.0), data_keys=DATA_KEYS
    )

    async def create(**options: str) -> TestApp:
        return await create_test_app(admin, fake_telegram, **options)  # type: ignore[arg-type]

    try:
        yield empty_db, create
    finally:
        await session.close()
        await conn.close()


@pytest.fixture(autouse=True)
async def _clear_telegram_faults(fake_telegram: FakeBotApi) -> AsyncIterator[None]:
    fake_telegram.clear_faults()
    yield
    fake_telegram.clear_faults()


@pytest.fixture(params=["async", "blocking"])
async def connect(request: pytest.FixtureRequest, service: PortexApp) -> AsyncIterator[Connect]:
    """Opens clients of one kind (each test runs with both), to the in-process server by default."""
    opened: list[Client] = []

    def open_client(api_key: str, *, target: str | None = None, **options: Any) -> Client:
        client = Client(
            request.param, target or f"127.0.0.1:{service.grpc_port}", api_key, **options
        )
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.close()
