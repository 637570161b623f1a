"""A flood of maximal requests: the server's memory with the gRPC receive limit (64 KiB, the
default) and without it (4 MiB, gRPC's own default and the old behaviour), side by side.

Two service processes (`portex-pay serve`) share the database; each gets a few valid Pays, then
CONCURRENCY clients (one connection each) send REQUESTS PayRequests whose `payload` makes them
just under 4 MiB. With the limit they are refused unread (RESOURCE_EXHAUSTED); without it each is
received and decoded before validation refuses it (INVALID_ARGUMENT, payload over 4096 bytes).
Resident memory is read from /proc/<pid>/status: before, sampled every 50 ms during the flood
(and VmHWM), and 2 s after; then a valid Pay must still succeed.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import asyncpg
import grpc

from bench.payments import SECRET
from bench.serving import DATA_KEY, DATA_KEYS, free_port, wait_serving
from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.adapters.postgres.migrations import migrate
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import application_admin
from portex_pay.config import Settings
from portex_pay_devtools.fake_bot_api import FakeBotApi

CONCURRENCY = 16
REQUESTS = 300  # per server
WARM_UP_PAYS = 5
GRPC_DEFAULT_LIMIT = 4 * 1024 * 1024
TARGET_SIZE = GRPC_DEFAULT_LIMIT - 64  # the flood's message size: just under gRPC's default
SAMPLE_INTERVAL = 0.05
SETTLE_SECONDS = 2.0
CALL_TIMEOUT = 30.0
CLIENT_OPTIONS = [
    ("grpc.max_send_message_length", 8 * 1024 * 1024),
    # One connection per client: channels would otherwise share one subchannel (and connection).
    ("grpc.use_local_subchannel_pool", 1),
]
SERVERS = (("A", None), ("B", GRPC_DEFAULT_LIMIT))  # (name, PORTEX_GRPC_MAX_RECEIVE_BYTES)


@dataclasses.dataclass
class _Flooded:
    name: str
    limit: str
    codes: collections.Counter[str]
    seconds: float
    before_kb: int
    peak_kb: int
    hwm_kb: int
    after_kb: int
    pay_after: str


def _default_limit() -> int:
    """PORTEX_GRPC_MAX_RECEIVE_BYTES's default (nothing else is read)."""
    environment = {"DATABASE_URL": "postgresql://bench"}
    return Settings.from_env(environment, serving=False).grpc.max_receive_bytes


def _status_kb(pid: int, field: str) -> int:
    """A `VmRSS`/`VmHWM`-style field of /proc/<pid>/status, in kB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


class _RssSampler:
    """Reads VmRSS every SAMPLE_INTERVAL on a thread of its own (the event loop is busy sending)."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._stop = threading.Event()
        self.peak_kb = _status_kb(pid, "VmRSS")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self.peak_kb = max(self.peak_kb, _status_kb(self._pid, "VmRSS"))

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, _status_kb(self._pid, "VmRSS"))


def _valid_pay(user: int, tag: str) -> payment_pb2.PayRequest:
    return payment_pb2.PayRequest(
        tg_use_id=user, amount=5, label="item", title="Book", description="Magic",
        request_id=f"flood-{tag}-{user}",
    )  # fmt: skip


def _maximal_pay() -> payment_pb2.PayRequest:
    """Valid in every field but `payload`, which brings the message to TARGET_SIZE bytes."""
    request = payment_pb2.PayRequest(
        tg_use_id=1, amount=5, label="item", title="Book", description="Magic", payload=""
    )
    # The length prefix of `payload` grows with it: settle the size in two steps.
    request.payload = "x" * (TARGET_SIZE - request.ByteSize())
    request.payload = "x" * (len(request.payload) - (request.ByteSize() - TARGET_SIZE))
    assert request.ByteSize() == TARGET_SIZE, request.ByteSize()
    return request


async def run_flood_bench(dsn: str, log_dir: Path) -> None:
    fake = FakeBotApi()
    await fake.start()
    session = await new_session()
    conn = await asyncpg.connect(dsn)
    servers: list[tuple[str, int | None, subprocess.Popen[bytes], int]] = []
    logs = []
    results: list[_Flooded] = []
    try:
        await migrate(conn)
        for name, limit in SERVERS:
            grpc_port = free_port()
            env = {
                **os.environ,
                "DATABASE_URL": dsn,
                "PORTEX_PAYLOAD_SECRET": SECRET,
                "PORTEX_DATA_KEY": DATA_KEY,
                "PORTEX_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
                "PORTEX_HTTP_ADDR": f"127.0.0.1:{free_port()}",
                "PORTEX_TELEGRAM_API_URL": fake.base_url,
                "PORTEX_TELEGRAM_UPDATES": "webhook",
                "PORTEX_TELEGRAM_POLLERS": "false",
                "PORTEX_LOG_LEVEL": "warning",
                "PORTEX_LOG_FORMAT": "json",
            }
            env.pop("PORTEX_GRPC_MAX_RECEIVE_BYTES", None)
            if limit is not None:
                env["PORTEX_GRPC_MAX_RECEIVE_BYTES"] = str(limit)
            log = (log_dir / f"flood-{name}-server.log").open("wb")
            logs.append(log)
            server = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                [sys.executable, "-m", "portex_pay", "serve", "--workers", "1"],
                env=env,
                stdout=log,
                stderr=log,
            )
            servers.append((name, limit, server, grpc_port))
        admin = application_admin(
            conn, BotApiClient(session, fake.base_url, 5), data_keys=DATA_KEYS
        )
        token = f"{uuid.uuid4().int % 10**9 + 10**9}:{uuid.uuid4().hex}{uuid.uuid4().hex[:4]}"
        fake.add_bot(token)
        _, key = await admin.create_app(f"flood-bench-{uuid.uuid4().hex[:8]}", token)
        metadata = (("authorization", f"Bearer {key}"),)
        for _, _, _, grpc_port in servers:
            await wait_serving(grpc_port)
        flood = _maximal_pay()
        # Floods one after the other: both servers are up throughout, but only one is loaded.
        for name, limit, server, grpc_port in servers:
            results.append(
                await _flood(name, limit, server.pid, f"127.0.0.1:{grpc_port}", metadata, flood)
            )
    finally:
        await session.close()
        for _, _, server, _ in servers:
            server.terminate()
        for _, _, server, _ in servers:
            await asyncio.to_thread(server.wait, 30)
        for log in logs:
            log.close()
        await conn.close()
        await fake.stop()

    mb = 1024.0
    print(
        f"\nflood of maximal requests: {REQUESTS} PayRequests of {TARGET_SIZE} bytes per server,"
        f" {CONCURRENCY} concurrent clients, one connection each"
    )
    print(
        f"  {'server':6s} {'limit':>17s} {'requests':>8s} {'seconds':>7s}  {'codes':26s}"
        f" {'RSS before':>10s} {'peak':>7s} {'VmHWM':>7s} {'after 2 s':>9s}  valid Pay after"
    )
    for r in results:
        codes = ", ".join(f"{code} {count}" for code, count in sorted(r.codes.items()))
        print(
            f"  {r.name:6s} {r.limit:>17s} {sum(r.codes.values()):>8d} {r.seconds:>7.1f}"
            f"  {codes:26s} {r.before_kb / mb:>7.1f} MB {r.peak_kb / mb:>7.1f}"
            f" {r.hwm_kb / mb:>7.1f} {r.after_kb / mb:>9.1f}  {r.pay_after}"
        )
    a, b = results
    print(
        f"  peak RSS B / A: x{b.peak_kb / a.peak_kb:.2f}   (peak over before: A"
        f" +{(a.peak_kb - a.before_kb) / mb:.1f} MB, B +{(b.peak_kb - b.before_kb) / mb:.1f} MB)"
    )


async def _flood(
    name: str,
    limit: int | None,
    pid: int,
    target: str,
    metadata: tuple[tuple[str, str], ...],
    flood: payment_pb2.PayRequest,
) -> _Flooded:
    async with grpc.aio.insecure_channel(target, options=CLIENT_OPTIONS) as channel:
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        for user in range(1, WARM_UP_PAYS + 1):
            await stub.Pay(_valid_pay(user, f"warm-{name}"), metadata=metadata)
    before = _status_kb(pid, "VmRSS")

    codes: collections.Counter[str] = collections.Counter()
    counter = iter(range(REQUESTS))

    async def client() -> None:
        async with grpc.aio.insecure_channel(target, options=CLIENT_OPTIONS) as channel:
            stub = payment_pb2_grpc.PaymentServiceStub(channel)
            for _ in counter:
                try:
                    await stub.Pay(flood, metadata=metadata, timeout=CALL_TIMEOUT)
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as error:
                    codes[error.code().name] += 1

    with _RssSampler(pid) as sampler:
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
        seconds = time.perf_counter() - started
    hwm = _status_kb(pid, "VmHWM")
    await asyncio.sleep(SETTLE_SECONDS)
    after = _status_kb(pid, "VmRSS")

    async with grpc.aio.insecure_channel(target, options=CLIENT_OPTIONS) as channel:
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        try:
            paid = await stub.Pay(_valid_pay(1, f"after-{name}"), metadata=metadata, timeout=10)
            pay_after = "OK" if paid.tg_payment_url else "OK (no link)"
        except grpc.aio.AioRpcError as error:
            pay_after = error.code().name
    shown = f"{limit} (env)" if limit is not None else f"{_default_limit()} (default)"
    return _Flooded(name, shown, codes, seconds, before, sampler.peak_kb, hwm, after, pay_after)
