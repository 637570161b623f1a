"""A real `portex-pay serve` process over TLS and mTLS (a CA the test makes): grpcurl (`-cacert`,
`-cert`/`-key`) lists the services and calls QueryOrder, `portex-pay healthcheck` checks it from
the server's own environment, and every worker of `serve --workers 2` speaks TLS."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import DATA_KEY, TestApp
from tests.e2e.clients import orders_cli
from tests.e2e.conftest import ServerProcess
from tests.e2e.test_grpcurl import SERVICE, grpcurl
from tests.integration.helpers import eventually
from tests.local_ca import LocalCA


class TlsServerProcess(ServerProcess):
    """A server process whose readiness is asked over TLS, as its clients must."""

    def __init__(self, *args: object, credentials: grpc.ChannelCredentials, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.credentials = credentials

    async def health(self) -> int | None:
        async with grpc.aio.secure_channel(self.target, self.credentials) as channel:
            try:
                response = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            except grpc.aio.AioRpcError:
                return None
            return int(response.status)


StartTls = Callable[..., Awaitable[TlsServerProcess]]


@pytest.fixture
def ca(tmp_path: Path) -> LocalCA:
    return LocalCA(tmp_path / "pki")


@pytest.fixture
async def start_tls(
    database_url: str, fake_telegram: FakeBotApi, ca: LocalCA, tmp_path: Path
) -> AsyncIterator[StartTls]:
    started: list[TlsServerProcess] = []
    server_pair = ca.issue("server")
    # The healthcheck presents the server's own pair under mTLS; tests present the CA's "shop".
    shop = ca.issue("shop", server=False)

    async def start(*args: str, mtls: bool = False) -> TlsServerProcess:
        tls = {
            "PORTEX_GRPC_TLS_CERT": str(server_pair.cert),
            "PORTEX_GRPC_TLS_KEY": str(server_pair.key),
        }
        if mtls:
            tls["PORTEX_GRPC_TLS_CLIENT_CA"] = str(ca.cert)
        env = {
            "DATABASE_URL": database_url,
            "PORTEX_TELEGRAM_API_URL": fake_telegram.base_url,
            **tls,
        }
        credentials = grpc.ssl_channel_credentials(
            ca.cert.read_bytes(), shop.key.read_bytes(), shop.cert.read_bytes()
        )
        server = TlsServerProcess(
            env, tmp_path / f"server-{len(started)}.log", args, credentials=credentials
        )
        started.append(server)
        await server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.kill()


async def healthcheck(**env: str) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "portex_pay", "healthcheck",
        env={"PATH": os.environ.get("PATH", ""), **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return await asyncio.wait_for(process.wait(), 30)


def server_env(server: ServerProcess) -> dict[str, str]:
    """The variables `portex-pay healthcheck` reads, as the server has them."""
    return {name: value for name, value in server.env.items() if name.startswith("PORTEX_GRPC_")}


async def test_grpcurl_lists_and_queries_with_the_ca_and_fails_without_it(
    start_tls: StartTls, app: TestApp, ca: LocalCA
) -> None:
    server = await start_tls()
    code, out, err = await grpcurl("-cacert", str(ca.cert), server.target, "list")
    assert code == 0, err
    assert set(out.split()) >= {SERVICE, "grpc.health.v1.Health"}
    auth = f"authorization: Bearer {app.api_key}"
    query = json.dumps({"tg_payment_id": 2**62})
    code, _, err = await grpcurl(
        "-cacert", str(ca.cert), "-servername", "localhost", "-H", auth, "-d", query,
        server.target, f"{SERVICE}/QueryOrder",
    )  # fmt: skip
    assert code != 0
    assert "NotFound" in err  # an answer from the service, through TLS
    # The system's roots do not know the test's CA; plaintext gets no answer.
    code, _, err = await grpcurl(server.target, "list")
    assert code != 0
    assert "certificate" in err
    code, _, _ = await grpcurl("-plaintext", server.target, "list")
    assert code != 0


async def test_under_mtls_grpcurl_needs_a_certificate_and_the_healthcheck_has_one(
    start_tls: StartTls, ca: LocalCA
) -> None:
    server = await start_tls(mtls=True)
    code, _, _ = await grpcurl("-cacert", str(ca.cert), server.target, "list")
    assert code != 0
    shop = ["-cert", str(ca.directory / "shop.pem"), "-key", str(ca.directory / "shop.key")]
    code, out, err = await grpcurl("-cacert", str(ca.cert), *shop, server.target, "list")
    assert code == 0, err
    assert SERVICE in out.split()
    assert await healthcheck(**server_env(server)) == 0


async def test_the_orders_command_takes_the_tls_options(
    start_tls: StartTls, app: TestApp, ca: LocalCA
) -> None:
    server = await start_tls(mtls=True)
    shop = ["--cert", str(ca.directory / "shop.pem"), "--key", str(ca.directory / "shop.key")]
    order = str(2**62)
    code, _, err = await orders_cli(
        server.target, app.api_key, "get", "--cacert", str(ca.cert), *shop, order
    )
    assert (code, err.split(":")[1].strip()) == (1, "NOT_FOUND")  # the server's answer
    code, _, err = await orders_cli(
        server.target, app.api_key, "get", "--cacert", str(ca.cert), order
    )
    assert (code, err.split(":")[1].strip()) == (1, "UNAVAILABLE")  # refused: no certificate
    code, _, err = await orders_cli(
        server.target, app.api_key, "get", "--cacert", str(ca.cert), shop[0], shop[1], order
    )
    assert code == 2
    assert "give both or neither" in err


async def test_the_healthcheck_trusts_the_servers_certificate_or_the_ca_it_is_given(
    start_tls: StartTls, ca: LocalCA, tmp_path: Path
) -> None:
    server = await start_tls()
    env = server_env(server)
    assert await healthcheck(**env) == 0
    assert await healthcheck(**env, PORTEX_GRPC_TLS_CA=str(ca.cert)) == 0
    stranger = LocalCA(tmp_path / "stranger", "stranger-ca")
    assert await healthcheck(**env, PORTEX_GRPC_TLS_CA=str(stranger.cert)) == 1
    # Without the TLS settings it speaks plaintext, which the server does not answer.
    assert await healthcheck(PORTEX_GRPC_ADDR=server.target) == 1


async def test_every_worker_of_serve_workers_listens_with_tls(start_tls: StartTls) -> None:
    server = await start_tls("--workers", "2")

    def workers_serving() -> int:
        lines = server.log_lines()
        return len(
            {line["worker"] for line in lines if line["event"] == "serving" and "worker" in line}
        )

    await eventually(workers_serving, equals=2, timeout=30, what="2 workers serving")
    # Each new connection lands on either worker (SO_REUSEPORT hashes its address): a worker
    # without TLS would fail about half of them; all 16 failing to reach one is 2^-15.
    for _ in range(16):
        assert await server.health() == health_pb2.HealthCheckResponse.SERVING


async def test_serve_refuses_a_key_that_is_not_the_certificates(ca: LocalCA) -> None:
    server, other = ca.issue("server"), ca.issue("other")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "portex_pay", "serve",
        env={
            "PATH": os.environ.get("PATH", ""),
            "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
            "PORTEX_PAYLOAD_SECRET": "s" * 32,
            "PORTEX_DATA_KEY": DATA_KEY,
            "PORTEX_GRPC_TLS_CERT": str(server.cert),
            "PORTEX_GRPC_TLS_KEY": str(other.key),
        },
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert f"{other.key} is not the key of the certificate in {server.cert}" in err.decode()
