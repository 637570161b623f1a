"""`portex-pay serve --workers N`: worker processes sharing the gRPC and HTTP ports under a
supervisor that restarts the dead, stops them all on SIGTERM, and takes them with it.

Which process serves a connection is read from /proc (Linux), never from the service: a worker
serves a connection when it holds the server side of it (an ESTABLISHED socket whose local port is
the service's) among its file descriptors.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.adapters.postgres.migrations import load_migrations
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp, free_port
from tests.e2e.conftest import ServerFactory, ServerProcess
from tests.integration.helpers import eventually, pay_request

SERVING = health_pb2.HealthCheckResponse.SERVING
USER = 7272
# Connections opened, at most, until each worker serves one: the kernel spreads them by a hash of
# their addresses, so 64 all landing on one of two workers is a chance of 2^-63.
MAX_CONNECTIONS = 64


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state first, then the parent's pid)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rpartition(")")[2].split()


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")  # a zombie is gone, unreaped


def _children(pid: int) -> set[int]:
    """The live processes whose parent is `pid`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid and _alive(int(entry.name)):
                found.add(int(entry.name))
    return found


def _established_on(port: int) -> set[int]:
    """The socket inodes of the connections accepted on `port` (their local end is `port`)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            cells = row.split()
            local_port = int(cells[1].rpartition(":")[2], 16)
            if local_port == port and cells[3] == "01":  # TCP_ESTABLISHED
                inodes.add(int(cells[9]))
    return inodes


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def _serving(pids: set[int], port: int) -> set[int]:
    """Which of `pids` hold at least one connection accepted on `port`."""
    accepted = _established_on(port)
    return {pid for pid in pids if _socket_inodes(pid) & accepted}


async def _workers(server: ServerProcess, count: int) -> set[int]:
    """The supervisor's worker processes, once `count` of them have said they serve."""
    assert server.process is not None
    supervisor = server.process.pid

    def serving_workers() -> set[int]:
        lines = server.log_lines()
        return {line["worker"] for line in lines if line["event"] == "serving" and "worker" in line}

    await eventually(
        lambda: len(serving_workers()) == count, timeout=30, what=f"{count} workers serving"
    )

    def worker_processes() -> set[int] | None:
        children = _children(supervisor)
        return children if len(children) == count else None

    pids: set[int] = await eventually(worker_processes, what=f"{count} worker processes")
    return pids


class Connections:
    """Connections to a server kept open (so /proc shows who serves them) until `close()`."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self._channels: list[grpc.aio.Channel] = []
        self._writers: list[asyncio.StreamWriter] = []

    async def grpc(self) -> None:
        """A new gRPC connection (a subchannel pool of its own, not the process-wide shared
        one), answering a health Check."""
        channel = grpc.aio.insecure_channel(
            self.server.target, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self._channels.append(channel)
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert response.status == SERVING

    async def http(self) -> None:
        """A new HTTP/1.1 connection, answering GET /healthz (kept alive)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.server.http_port)
        self._writers.append(writer)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: portex\r\n\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.1 200 ")

    async def until_each_serves(
        self, workers: set[int], port: int, connect: Callable[[], Awaitable[None]]
    ) -> None:
        """Opens connections until each of `workers` serves one of them on `port`."""
        for _ in range(MAX_CONNECTIONS):
            await connect()
            if _serving(workers, port) == workers:
                return
        raise AssertionError(f"{MAX_CONNECTIONS} connections, served by {_serving(workers, port)}")

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        for writer in self._writers:
            writer.close()


async def test_two_workers_answer_grpc_and_http_on_the_same_ports(start_server: ServerFactory):
    server = await start_server("--workers", "2")
    workers = await _workers(server, 2)
    connections = Connections(server)
    try:
        await connections.until_each_serves(workers, server.grpc_port, connections.grpc)
        await connections.until_each_serves(workers, server.http_port, connections.http)
    finally:
        await connections.close()
    assert server.process is not None
    # The supervisor holds the ports for its workers but serves no connection itself.
    assert _serving({server.process.pid}, server.grpc_port) == set()


async def test_one_worker_is_the_process_itself_with_no_supervisor(start_server: ServerFactory):
    server = await start_server("--workers", "1", PORTEX_WORKERS="4")
    assert server.process is not None
    assert _children(server.process.pid) == set()
    async with grpc.aio.insecure_channel(server.target) as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert _serving({server.process.pid}, server.grpc_port) == {server.process.pid}


async def test_a_killed_worker_is_restarted_and_the_service_keeps_answering(
    start_server: ServerFactory,
):
    server = await start_server(PORTEX_WORKERS="2")
    workers = await _workers(server, 2)
    assert server.process is not None
    supervisor, killed = server.process.pid, min(workers)
    index = next(
        line["worker"]
        for line in server.log_lines()
        if line["event"] == "worker started" and line["pid"] == killed
    )
    os.kill(killed, signal.SIGKILL)
    await eventually(lambda: not _alive(killed), what="the killed worker gone")
    # The other worker answers (connections queued at the killed one's socket were reset).
    await eventually(server.health, equals=SERVING, timeout=30, what="health")

    def restarted() -> set[int] | None:
        now = _children(supervisor)
        return now if len(now) == 2 and killed not in now else None

    replaced: set[int] = await eventually(restarted, timeout=30, what="a new worker")
    assert workers - replaced == {killed}
    restarts = [line for line in server.log_lines() if line["event"] == "worker exited; restarting"]
    assert [(line["worker"], line["pid"], line["signal"]) for line in restarts] == [
        (index, killed, "SIGKILL")
    ]

    def serving_lines() -> int:
        lines = server.log_lines()
        return sum(1 for line in lines if line["event"] == "serving" and line["worker"] == index)

    await eventually(serving_lines, equals=2, timeout=30, what="the new worker serving")
    connections = Connections(server)
    try:
        await connections.until_each_serves(replaced, server.grpc_port, connections.grpc)
    finally:
        await connections.close()


async def test_sigterm_stops_every_worker_and_the_supervisor_exits_0(
    start_server: ServerFactory,
):
    server = await start_server("--workers", "2")
    workers = await _workers(server, 2)
    server.signal(signal.SIGTERM)
    assert await server.wait_exit(timeout=60) == 0
    assert not any(_alive(pid) for pid in workers)
    lines = server.log_lines()
    stopped = {line["pid"]: line for line in lines if line["event"] == "worker stopped"}
    assert set(stopped) == workers
    assert {line.get("exit_code") for line in stopped.values()} == {0}
    assert not [line for line in lines if line["event"] == "worker exited; restarting"]


async def test_workers_stop_when_their_supervisor_is_killed(start_server: ServerFactory):
    server = await start_server("--workers", "2")
    workers = await _workers(server, 2)
    server.signal(signal.SIGKILL)
    await server.wait_exit()
    await eventually(
        lambda: not any(_alive(pid) for pid in workers), timeout=60, what="workers gone"
    )
    gone = "the workers' supervisor is gone; stopping"
    assert sorted(line["worker"] for line in server.log_lines() if line["event"] == gone) == [0, 1]


async def test_a_second_supervisor_on_busy_ports_exits_1_and_the_first_serves_on(
    start_server: ServerFactory, tmp_path: Path
):
    first = await start_server("--workers", "2")
    second = ServerProcess({**first.env, "PORTEX_WORKERS": "2"}, tmp_path / "second.log")
    second.spawn()
    assert await second.wait_exit() == 1
    assert f"cannot listen on PORTEX_GRPC_ADDR=127.0.0.1:{first.grpc_port}" in second.log_text()
    assert "worker started" not in second.log_text()
    assert await first.health() == SERVING


async def test_port_0_becomes_one_free_port_shared_by_every_worker(
    start_server: ServerFactory, database_url: str, fake_telegram: FakeBotApi, tmp_path: Path
):
    server = ServerProcess(
        {
            "DATABASE_URL": database_url,
            "PORTEX_TELEGRAM_API_URL": fake_telegram.base_url,
            "PORTEX_GRPC_ADDR": "127.0.0.1:0",
            "PORTEX_HTTP_ADDR": "127.0.0.1:0",
        },
        tmp_path / "server.log",
        ("--workers", "2"),
    )
    server.spawn()
    try:
        starting = await eventually(
            lambda: [line for line in server.log_lines() if line["event"] == "starting workers"],
            timeout=30,
        )
        server.grpc_port = int(starting[0]["grpc_addr"].rpartition(":")[2])
        server.http_port = int(starting[0]["http_addr"].rpartition(":")[2])
        assert 0 not in (server.grpc_port, server.http_port)
        await _workers(server, 2)
        ports = {
            (line["grpc_port"], line["http_port"])
            for line in server.log_lines()
            if line["event"] == "serving"
        }
        assert ports == {(server.grpc_port, server.http_port)}
        assert await server.health() == SERVING
    finally:
        server.kill()


async def test_payments_through_two_workers_are_each_recorded_once(
    isolated, start_server: ServerFactory, fake_telegram: FakeBotApi
):
    dsn, create_app = isolated
    server = await start_server("--workers", "2", DATABASE_URL=dsn)
    await _workers(server, 2)
    app: TestApp = await create_app(
        updates="webhook", public_url=f"http://127.0.0.1:{server.http_port}"
    )

    async def pay_one() -> int:
        # A channel of its own each: the Pays spread over the workers too.
        async with grpc.aio.insecure_channel(
            server.target, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            stub = payment_pb2_grpc.PaymentServiceStub(channel)
            paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=app.metadata)
        assert (await fake_telegram.pay_invoice(paid.tg_payment_url, USER)).approved
        return paid.tg_payment_id

    ids = await asyncio.gather(*(pay_one() for _ in range(6)))
    await fake_telegram.drain(app.bot_token)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """
            SELECT o.tg_payment_id, o.state,
                   (SELECT count(*) FROM payments p WHERE p.tg_payment_id = o.tg_payment_id)
                       AS payments,
                   (SELECT count(*) FROM events e
                    WHERE e.tg_payment_id = o.tg_payment_id AND e.type = 'order.paid') AS paid
            FROM orders o WHERE o.tg_payment_id = ANY($1::bigint[])
            """,
            ids,
        )
    finally:
        await conn.close()
    assert sorted((r["state"], r["payments"], r["paid"]) for r in rows) == [("paid", 1, 1)] * 6
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        for tg_payment_id in ids:
            order = await stub.QueryOrder(
                payment_pb2.QueryOrderRequest(tg_payment_id=tg_payment_id), metadata=app.metadata
            )
            assert order.state == payment_pb2.Order.PAID


async def test_on_an_empty_database_each_migration_is_applied_once_before_any_worker_serves(
    start_server: ServerFactory, empty_db: str
):
    # The workers start beside the supervisor's migrations and each applies them itself, under
    # their lock: all of them applied once, and every worker's "serving" line after the last.
    server = await start_server("--workers", "2", DATABASE_URL=empty_db)
    await _workers(server, 2)
    lines = server.log_lines()
    applied = [i for i, line in enumerate(lines) if line["event"] == "migration applied"]
    assert sorted(lines[i]["version"] for i in applied) == [m.version for m in load_migrations()]
    serving = [i for i, line in enumerate(lines) if line["event"] == "serving"]
    assert len(serving) == 2
    assert min(serving) > max(applied)


async def test_a_supervisor_whose_migrations_fail_stops_its_workers_and_exits_1(
    start_server: ServerFactory, empty_db: str, fake_telegram: FakeBotApi, tmp_path: Path
):
    # A schema history that does not match the files: the supervisor and every worker refuse it.
    conn = await asyncpg.connect(empty_db)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute("INSERT INTO schema_migrations VALUES (1, 'changed', 'x')")
    finally:
        await conn.close()
    server = ServerProcess(
        {"DATABASE_URL": empty_db, "PORTEX_TELEGRAM_API_URL": fake_telegram.base_url},
        tmp_path / "server.log",
        ("--workers", "2"),
    )
    server.spawn()
    try:
        assert await server.wait_exit(timeout=60) == 1
    finally:
        server.kill()
    lines = server.log_lines()
    started = {line["pid"] for line in lines if line["event"] == "worker started"}
    # (The failure can come before any worker was started: then there is none.)
    assert not any(_alive(pid) for pid in started)
    assert not [line for line in lines if line["event"] == "serving"]
    assert "was changed after it was applied" in server.log_text()


async def test_one_scrape_adds_up_every_workers_counts(start_server: ServerFactory):
    """With two workers serving RPCs, a scrape of the shared metrics port (whichever worker
    answers it) counts every RPC of both: prometheus-client's multiprocess mode."""
    metrics_port = free_port()
    server = await start_server("--workers", "2", PORTEX_METRICS_ADDR=f"127.0.0.1:{metrics_port}")
    workers = await _workers(server, 2)
    channels: list[grpc.aio.Channel] = []

    async def refused_query() -> None:
        """A QueryOrder without a key on a connection of its own: UNAUTHENTICATED, counted."""
        channel = grpc.aio.insecure_channel(
            server.target, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        channels.append(channel)
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        try:
            await stub.QueryOrder(payment_pb2.QueryOrderRequest(tg_payment_id=1), timeout=10)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        else:
            raise AssertionError("a QueryOrder without a key was answered")

    try:
        await Connections(server).until_each_serves(workers, server.grpc_port, refused_query)
    finally:
        for channel in channels:
            await channel.close()
    labels = {
        "grpc_type": "unary",
        "grpc_service": "portex.payment.v1.PaymentService",
        "grpc_method": "QueryOrder",
        "grpc_code": "Unauthenticated",
    }
    for _ in range(4):  # new connections each: they reach either worker
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session,
            session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
        ):
            text = await response.text()
        counted = [
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "grpc_server_handled_total" and sample.labels == labels
        ]
        assert counted == [len(channels)]
