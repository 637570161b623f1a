"""What the benches that run `portex-pay serve` as processes of their own share (bench/payments.py,
bench/stream.py, bench/storm.py): free ports, a server process in webhook mode and its CPU time,
waiting until it serves, applications with bots on the fake Bot API, pending orders made in bulk,
percentiles, and the CPU seconds of a process or of a whole PostgreSQL cluster (from /proc, so
Linux only; elsewhere they read as 0).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc

from portex_pay.domain.application import Application
from portex_pay.domain.sealing import DataKeys, decode_data_key
from portex_pay.service.applications import ApplicationAdmin
from portex_pay_devtools.fake_bot_api import FakeBotApi

# The data key every bench's services seal stored secrets with (PORTEX_DATA_KEY), and its ring
# (for the applications a bench creates beside a service process).
DATA_KEY = "YmVuY2gtZGF0YS1rZXktMzItYnl0ZXMtbG9uZy0hISE="
DATA_KEYS = DataKeys(decode_data_key(DATA_KEY) or b"")

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def bot_token() -> str:
    return f"{uuid.uuid4().int % 10**9 + 10**9}:{uuid.uuid4().hex}{uuid.uuid4().hex[:4]}"


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name (which may hold spaces): field 3 is index 0."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        text = stat.read().decode()
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU of a process (and of its reaped children with `children`); 0 when it
    cannot be read (gone, or no /proc)."""
    try:
        fields = _stat_fields(pid)
    except (OSError, ValueError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _TICKS


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (Linux /proc)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            queue += [int(child) for child in task.read_text().split()]
    return found


def machine_busy_seconds() -> float:
    """CPU seconds all cores together have spent on anything but idling, since boot."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / _TICKS  # user ... steal; guest time is within user


async def cluster_cpu_seconds(conn: asyncpg.Connection) -> float:
    """CPU seconds of the PostgreSQL cluster `conn` is connected to, so far: the postmaster with
    the backends it has reaped (their CPU moves to it when they exit), plus every live child."""
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    try:
        postmaster = int(_stat_fields(backend)[1])  # ppid
    except (OSError, ValueError):
        return 0.0
    total = cpu_seconds(postmaster, children=True)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = _stat_fields(int(entry.name))
            except (OSError, ValueError):
                continue
            if fields[1] == str(postmaster):
                total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


@dataclass
class ServiceProcess:
    """One `portex-pay serve` in webhook mode (no pollers) against `dsn`, Telegram at
    `telegram_url`, logging warnings to `log_path`."""

    dsn: str
    telegram_url: str
    log_path: Path
    secret: str
    pool_max: int = 20

    def __post_init__(self) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": self.dsn,
            "PORTEX_PAYLOAD_SECRET": self.secret,
            "PORTEX_DATA_KEY": DATA_KEY,
            "PORTEX_GRPC_ADDR": f"127.0.0.1:{self.grpc_port}",
            "PORTEX_HTTP_ADDR": f"127.0.0.1:{self.http_port}",
            "PORTEX_TELEGRAM_API_URL": self.telegram_url,
            "PORTEX_TELEGRAM_UPDATES": "webhook",
            "PORTEX_TELEGRAM_POLLERS": "false",
            "PORTEX_LOG_LEVEL": "warning",
            "PORTEX_LOG_FORMAT": "json",
            "PORTEX_DB_POOL_MAX": str(self.pool_max),
        }
        log = self.log_path.open("ab")
        with log:  # the child keeps its own descriptor
            self._process = subprocess.Popen(
                [sys.executable, "-m", "portex_pay", "serve", "--workers", "1"],
                env=env,
                stdout=log,
                stderr=log,
            )

    async def wait_serving(self) -> None:
        await wait_serving(self.grpc_port)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    async def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            await asyncio.to_thread(self._process.wait, 30)


async def wait_serving(
    grpc_port: int, *, deadline: float | None = None, interval: float = 0.1
) -> None:
    """Until the server's gRPC health answers SERVING (by `deadline`, time.monotonic(); 30 s
    from now by default), asking every `interval` seconds."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + 30 if deadline is None else deadline
    # A refused connection puts a channel in gRPC's reconnect backoff (1 s, then 1.6 s, ...
    # with jitter): the figure would be when the channel tried again, not when the server
    # started listening. It tries again every `interval` instead.
    backoff = max(1, int(interval * 1000))
    options = [
        ("grpc.initial_reconnect_backoff_ms", backoff),
        ("grpc.min_reconnect_backoff_ms", backoff),
        ("grpc.max_reconnect_backoff_ms", backoff),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}", options=options) as channel:
        while True:
            try:
                response = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=max(interval, 0.5)
                )
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            await asyncio.sleep(interval)


async def bench_apps(
    admin: ApplicationAdmin, fake: FakeBotApi, count: int, prefix: str = "bench"
) -> list[tuple[Application, str, str]]:
    """`count` applications, each with its own bot on the fake: (application, API key, token)."""
    apps = []
    for _ in range(count):
        token = bot_token()
        fake.add_bot(token)
        application, key = await admin.create_app(f"{prefix}-{uuid.uuid4().hex[:8]}", token)
        apps.append((application, key, token))
    return apps


async def insert_orders(
    conn: asyncpg.Connection, application_id: uuid.UUID, first_user: int, count: int
) -> list[asyncpg.Record]:
    """`count` pending orders of 5 Stars for users first_user, first_user + 1, ..., straight in
    SQL (no invoice link of Telegram's): (tg_payment_id, tg_use_id, amount) each."""
    return await conn.fetch(
        """
        INSERT INTO orders (application_id, tg_use_id, amount, label, title, description,
            state, invoice_link, expires_at)
        SELECT $1, $2 + g, 5, 'item', 'Gem', 'A gem', 'pending', 'https://t.me/$bench',
            now() + interval '1 hour'
        FROM generate_series(0, $3 - 1) g
        RETURNING tg_payment_id, tg_use_id, amount
        """,
        application_id,
        first_user,
        count,
    )
