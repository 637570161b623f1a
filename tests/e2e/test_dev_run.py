"""`make run` (`portex-pay dev`) on a machine with nothing configured: private PostgreSQL,
Telegram sandbox, a development application, and Pay working end to end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import grpc

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from tests.conftest import free_port
from tests.e2e.conftest import start_dev
from tests.integration.helpers import eventually, pay_request


def _dev_env(grpc_port: int) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "PORTEX_TELEGRAM_API_URL", "PORTEX_PAYLOAD_SECRET")
    }
    env.update(
        PORTEX_GRPC_ADDR=f"127.0.0.1:{grpc_port}",
        PORTEX_HTTP_ADDR=f"127.0.0.1:{free_port()}",
        PORTEX_SANDBOX_ADDR=f"127.0.0.1:{free_port()}",
        PORTEX_LOG_FORMAT="json",
    )
    return env


async def _run_dev_once(workdir: Path) -> str:
    """Starts `portex-pay dev` in `workdir`, pays once through the sandbox, stops it; returns
    the printed API key."""
    grpc_port = free_port()
    env = _dev_env(grpc_port)
    server = await start_dev(workdir, env, workdir / f"dev-{grpc_port}.log")
    try:
        key = (workdir / ".data" / "dev-api-key").read_text().strip()
        assert key in server.log_text()  # the banner shows it to the developer
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = payment_pb2_grpc.PaymentServiceStub(channel)
            metadata = (("authorization", f"Bearer {key}"),)
            paid = await stub.Pay(pay_request(), metadata=metadata)
            assert paid.tg_payment_url.startswith("https://t.me/$")
            # The sandbox plays the user; the service polls it, approves, and records payment.
            async with aiohttp.ClientSession() as session:
                sandbox = f"http://{env['PORTEX_SANDBOX_ADDR']}/_fake/pay"
                body = {"link": paid.tg_payment_url, "user_id": 4242}
                async with session.post(sandbox, json=body) as response:
                    assert (await response.json())["result"]["approved"] is True
            order = await _wait_paid(stub, metadata, paid.tg_payment_id)
            assert (order.status, order.status_description) == (1, "success")
            edge_order = await _the_banners_edge_curl_line_works(server.log_text(), env)
            await _wait_paid(stub, metadata, edge_order)  # the same orders over gRPC
            await _query_order_as_the_readme_shows(workdir, env, server.log_text(), edge_order)
            await _the_bot_api_proxy_answers_as_the_readme_shows(workdir, env)
        server.signal(signal.SIGINT)
        assert await server.wait_exit(timeout=30) == 0
        return key
    finally:
        server.kill()


def _banner_command(log: str, starts: str) -> str:
    """The shell command the banner prints, starting with `starts` (continuation lines joined)."""
    lines = log.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith(starts))
    command = []
    for line in lines[first:]:
        command.append(line.strip().removesuffix("\\"))
        if not line.rstrip().endswith("\\"):
            break
    return " ".join(command)


async def _the_banners_edge_curl_line_works(log: str, env: dict[str, str]) -> int:
    """The Mini App edge, exactly as the banner says to try it: curl, then the sandbox pays."""
    curl = _banner_command(log, "curl -s http://")
    assert "/v1/createTgPayment" in curl
    done = await asyncio.to_thread(
        subprocess.run, ["bash", "-c", curl], capture_output=True, text=True, timeout=30
    )
    answer = json.loads(done.stdout)
    assert answer["ok"] is True, answer
    assert isinstance(answer["result"]["tg_payment_id"], int)
    async with aiohttp.ClientSession() as session:
        sandbox = f"http://{env['PORTEX_SANDBOX_ADDR']}/_fake/pay"
        body = {"link": answer["result"]["tg_payment_url"], "user_id": 42}
        async with session.post(sandbox, json=body) as response:
            paid = await response.json()
            assert paid.get("result", {}).get("approved") is True, paid
    order_id: int = answer["result"]["tg_payment_id"]
    return order_id


async def _query_order_as_the_readme_shows(
    workdir: Path, env: dict[str, str], log: str, order_id: int
) -> None:
    """README: `portex-pay dev init-data --user 42` in the checkout, then getTgPayment."""
    signed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "portex_pay", "dev", "init-data", "--user", "42"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    app_id = next(
        line.split()[-1] for line in log.splitlines() if line.strip().startswith("application id")
    )
    headers = {"X-App-Id": app_id, "X-Tg-InitData": signed.stdout.strip()}
    url = f"http://{env['PORTEX_HTTP_ADDR']}/v1/getTgPayment"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json={"tg_payment_id": order_id}, headers=headers) as response,
    ):
        answer = await response.json()
    assert answer["ok"] is True, answer
    assert (answer["result"]["status"], answer["result"]["status_description"]) == (1, "success")


async def _the_bot_api_proxy_answers_as_the_readme_shows(
    workdir: Path, env: dict[str, str]
) -> None:
    """README: the app's own bot points at portex-pay with the sandbox bot's token."""
    token = (workdir / ".data" / "sandbox-bot-token").read_text().strip()
    url = f"http://{env['PORTEX_HTTP_ADDR']}/bot{token}/getMe"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        answer = await response.json()
    assert answer["ok"] is True and answer["result"]["is_bot"] is True, answer
    assert answer["result"]["id"] == int(token.partition(":")[0])


async def _wait_paid(
    stub: payment_pb2_grpc.PaymentServiceAsyncStub,
    metadata: tuple[tuple[str, str], ...],
    tg_payment_id: int,
) -> payment_pb2.Order:

    async def paid() -> payment_pb2.Order | None:
        order: payment_pb2.Order = await stub.QueryOrder(
            payment_pb2.QueryOrderRequest(tg_payment_id=tg_payment_id), metadata=metadata
        )
        return order if order.state == payment_pb2.Order.PAID else None

    order: payment_pb2.Order = await eventually(
        paid, timeout=15, interval=0.05, what=f"order {tg_payment_id} paid"
    )
    return order


def _postgres_running(data_dir: Path) -> bool:
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (OSError, ValueError):
        return False
    return True


async def test_dev_runs_pay_end_to_end_and_keeps_its_state_between_runs(tmp_path: Path):
    workdir = tmp_path / "checkout"
    workdir.mkdir()
    first_key = await _run_dev_once(workdir)
    data_dir = workdir / ".data" / "postgres"
    assert (data_dir / "PG_VERSION").exists()
    await eventually(  # stopped with the service
        lambda: not _postgres_running(data_dir), interval=0.1, what="the private PostgreSQL stops"
    )
    # A second run reuses the cluster and the development application.
    assert await _run_dev_once(workdir) == first_key
