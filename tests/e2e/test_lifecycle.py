"""A server process's life: health following PostgreSQL, graceful shutdown, its log lines."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay_devtools.fake_bot_api import FakeBotApi
from portex_pay_devtools.pgcluster import PgCluster
from tests.conftest import TestApp, free_port
from tests.e2e.conftest import ServerFactory, ServerProcess
from tests.integration.helpers import details, eventually, pay_request

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _wait_health(server: ServerProcess, expected: int, timeout: float = 15.0) -> None:
    await eventually(server.health, equals=expected, timeout=timeout, interval=0.05, what="health")


async def test_health_follows_postgresql_down_and_back_without_a_restart(
    start_server: ServerFactory, tmp_path: Path
):
    cluster = PgCluster(tmp_path / "pg", ephemeral=True)
    cluster.start()
    try:
        server = await start_server(DATABASE_URL=cluster.dsn)
        await _wait_health(server, SERVING)
        await asyncio.to_thread(cluster.stop)
        await _wait_health(server, NOT_SERVING)
        # Meanwhile an RPC fails fast and retryably, not as an internal error.
        async with grpc.aio.insecure_channel(server.target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await payment_pb2_grpc.PaymentServiceStub(channel).QueryOrder(
                    payment_pb2.QueryOrderRequest(tg_payment_id=1),
                    metadata=(("authorization", "Bearer ppk_any"),),
                    timeout=5,
                )
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert details(raised.value)["ErrorInfo"].reason == "DATABASE_UNAVAILABLE"
        await asyncio.to_thread(cluster.start)
        await _wait_health(server, SERVING)
        assert server.process is not None and server.process.poll() is None
    finally:
        cluster.destroy()


async def _signal_and_see_not_serving(server: ServerProcess) -> None:
    """SIGTERM, then the health Watch stream (opened before) reports NOT_SERVING."""
    async with grpc.aio.insecure_channel(server.target) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == SERVING
        server.signal()
        assert (await asyncio.wait_for(watch.read(), 5)).status == NOT_SERVING
        watch.cancel()


async def test_sigterm_refuses_new_rpcs_drains_an_in_flight_pay_then_exits_0(
    start_server: ServerFactory, app: TestApp, fake_telegram: FakeBotApi
):
    server = await start_server(PORTEX_SHUTDOWN_GRACE="10")
    fake_telegram.delay("createInvoiceLink", 1.5, times=1)
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        in_flight = asyncio.ensure_future(
            stub.Pay(pay_request(), metadata=app.metadata, timeout=15)
        )
        # Wait until Telegram has the call: the RPC is then truly in flight.
        await eventually(
            lambda: fake_telegram.calls_for("createInvoiceLink", token=app.bot_token),
            what="createInvoiceLink at Telegram",
        )
        await _signal_and_see_not_serving(server)
        async with grpc.aio.insecure_channel(server.target) as fresh:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await payment_pb2_grpc.PaymentServiceStub(fresh).QueryOrder(
                    payment_pb2.QueryOrderRequest(tg_payment_id=1), metadata=app.metadata, timeout=2
                )
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not in_flight.done()
        response = await in_flight
        assert response.tg_payment_url.startswith("https://t.me/$")
    assert await server.wait_exit() == 0
    events = [line.get("event") for line in server.log_lines()]
    assert "shutting down" in events
    assert events[-1] == "stopped"


async def test_each_rpc_logs_one_canonical_json_line_without_secrets(
    start_server: ServerFactory, app: TestApp
):
    server = await start_server()
    request = pay_request()
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        await stub.Pay(request, metadata=app.metadata)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.QueryOrder(payment_pb2.QueryOrderRequest(tg_payment_id=1))
    server.signal()
    assert await server.wait_exit() == 0
    rpc_lines = [line for line in server.log_lines() if line.get("event") == "rpc"]
    assert [(line["method"].rsplit("/", 1)[-1], line["code"]) for line in rpc_lines] == [
        ("Pay", "OK"),
        ("QueryOrder", "UNAUTHENTICATED"),
    ]
    pay_line = rpc_lines[0]
    assert pay_line["application_id"] == app.id
    assert pay_line["request_id"] == request.request_id
    assert pay_line["peer"].startswith("ipv4:127.0.0.1:")
    assert isinstance(pay_line["duration_ms"], float)
    text = server.log_text()
    assert app.api_key not in text
    assert app.bot_token not in text
    assert app.bot_token.split(":")[1] not in text


async def test_the_healthcheck_command_exits_0_only_when_serving(start_server: ServerFactory):
    server = await start_server()

    async def healthcheck(addr: str) -> int:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "portex_pay", "healthcheck",
            env={"PATH": os.environ.get("PATH", ""), "PORTEX_GRPC_ADDR": addr},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return await asyncio.wait_for(process.wait(), 30)

    assert await healthcheck(server.target) == 0
    assert await healthcheck(f"127.0.0.1:{free_port()}") == 1


@pytest.mark.parametrize(("uvloop", "loop"), [("true", "uvloop"), ("false", "asyncio")])
async def test_serve_runs_on_the_loop_portex_uvloop_chooses(
    start_server: ServerFactory, uvloop: str, loop: str
) -> None:
    """uvloop by default (the issue measured +10-16 % on an echo), asyncio's own when turned
    off: the loop serving is the one the "serving" line names."""
    server = await start_server(PORTEX_UVLOOP=uvloop)
    serving = [line for line in server.log_lines() if line.get("event") == "serving"]
    assert [line["loop"] for line in serving] == [loop]
