"""gRPC over TLS and mTLS (PORTEX_GRPC_TLS_*), against a CA made by the test: the Python clients
call through it, a client without a certificate (or with one from another CA) is refused under
mTLS, and a certificate replaced on disk is served to new connections without a restart."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
import structlog
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from portex_pay.api.grpc.tls import CertificateReloader, TlsError, TlsFiles, read_material
from portex_pay.app import PortexApp
from portex_pay_client import AsyncPaymentClient, PaymentClient, PortexPayError, TlsOptions
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp, make_settings
from tests.local_ca import IssuedPair, LocalCA

StartTls = Callable[..., Awaitable[PortexApp]]


@pytest.fixture
def ca(tmp_path: Path) -> LocalCA:
    return LocalCA(tmp_path / "pki")


@pytest.fixture
async def start_tls(
    database_url: str, fake_telegram: FakeBotApi, ca: LocalCA
) -> AsyncIterator[StartTls]:
    """Starts an in-process server listening with TLS (the CA's `server` pair; with
    `mtls=True`, clients' certificates must be signed by the CA)."""
    started: list[PortexApp] = []

    async def start(*, mtls: bool = False) -> PortexApp:
        pair = ca.issue("server")
        settings = make_settings(
            database_url,
            fake_telegram.base_url,
            grpc_tls_cert=str(pair.cert),
            grpc_tls_key=str(pair.key),
            grpc_tls_client_ca=str(ca.cert) if mtls else "",
        )
        app = PortexApp(settings)
        started.append(app)
        await app.start()
        return app

    try:
        yield start
    finally:
        for app in started:
            await app.stop()


async def health_status(
    port: int, credentials: grpc.ChannelCredentials | None
) -> tuple[grpc.StatusCode, int | None]:
    """One health Check on a new channel: its code and, when OK, the status."""
    target = f"127.0.0.1:{port}"
    if credentials is None:
        channel = grpc.aio.insecure_channel(target)
    else:
        channel = grpc.aio.secure_channel(target, credentials)
    async with channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            return error.code(), None
        return grpc.StatusCode.OK, response.status


async def served_serial(port: int, ca: LocalCA) -> int:
    """The serial of the certificate a new TLS connection (ALPN h2, as gRPC's) is shown."""
    context = ssl.create_default_context(cafile=ca.cert)
    context.set_alpn_protocols(["h2"])
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return x509.load_der_x509_certificate(der).serial_number


async def test_both_python_clients_pay_and_query_over_tls(
    start_tls: StartTls, make_app: Callable[[], Awaitable[TestApp]], ca: LocalCA
) -> None:
    server, app = await start_tls(), await make_app()
    target = f"127.0.0.1:{server.grpc_port}"
    tls = TlsOptions(root_certificates=ca.cert)
    async with AsyncPaymentClient(target, app.api_key, tls=tls) as client:
        paid = await client.pay(
            tg_use_id=42, amount=5, label="Sword", title="Sword", description="Sharp",
            request_id=str(uuid.uuid4()),
        )  # fmt: skip
        assert (await client.query_order(paid.tg_payment_id)).amount == 5
    # The blocking client, by the name in the certificate rather than the address dialled.
    # In a thread: the server answers on this test's event loop.
    named = TlsOptions(root_certificates=ca.cert.read_bytes(), server_name="localhost")

    def query_blocking() -> int:
        with PaymentClient(target, app.api_key, tls=named) as blocking:
            return blocking.query_order(paid.tg_payment_id).tg_payment_id

    assert await asyncio.to_thread(query_blocking) == paid.tg_payment_id


async def test_a_client_that_does_not_trust_the_ca_or_speaks_plaintext_is_refused(
    start_tls: StartTls, ca: LocalCA, tmp_path: Path
) -> None:
    server = await start_tls()
    assert server.grpc_port is not None
    stranger = LocalCA(tmp_path / "stranger", "stranger-ca")
    wrong_roots = grpc.ssl_channel_credentials(stranger.cert.read_bytes())
    assert (await health_status(server.grpc_port, wrong_roots))[0] == grpc.StatusCode.UNAVAILABLE
    assert (await health_status(server.grpc_port, None))[0] == grpc.StatusCode.UNAVAILABLE
    trusted = grpc.ssl_channel_credentials(ca.cert.read_bytes())
    assert await health_status(server.grpc_port, trusted) == (
        grpc.StatusCode.OK,
        health_pb2.HealthCheckResponse.SERVING,
    )


async def test_mtls_refuses_a_client_without_a_certificate_or_with_another_cas(
    start_tls: StartTls, make_app: Callable[[], Awaitable[TestApp]], ca: LocalCA, tmp_path: Path
) -> None:
    server, app = await start_tls(mtls=True), await make_app()
    assert server.grpc_port is not None
    roots = ca.cert.read_bytes()
    no_certificate = grpc.ssl_channel_credentials(roots)
    assert (await health_status(server.grpc_port, no_certificate))[0] == (
        grpc.StatusCode.UNAVAILABLE
    )
    foreign = LocalCA(tmp_path / "stranger", "stranger-ca").issue("intruder", server=False)
    foreign_credentials = grpc.ssl_channel_credentials(
        roots, foreign.key.read_bytes(), foreign.cert.read_bytes()
    )
    assert (await health_status(server.grpc_port, foreign_credentials))[0] == (
        grpc.StatusCode.UNAVAILABLE
    )
    # The client library with a certificate the CA signed is let in, and sees NOT_FOUND (the
    # order is another application's or nobody's) as an answer, not a refused connection.
    member = ca.issue("shop", server=False)
    tls = TlsOptions(root_certificates=ca.cert, certificate=member.cert, private_key=member.key)
    async with AsyncPaymentClient(f"127.0.0.1:{server.grpc_port}", app.api_key, tls=tls) as client:
        with pytest.raises(PortexPayError) as raised:
            await client.query_order(2**62)
    assert raised.value.code == grpc.StatusCode.NOT_FOUND


async def test_a_certificate_replaced_on_disk_is_served_without_a_restart(
    start_tls: StartTls, make_app: Callable[[], Awaitable[TestApp]], ca: LocalCA
) -> None:
    server, app = await start_tls(), await make_app()
    assert server.grpc_port is not None
    port = server.grpc_port
    first = await served_serial(port, ca)
    target = f"127.0.0.1:{port}"
    async with AsyncPaymentClient(target, app.api_key, tls=TlsOptions(ca.cert)) as client:
        with pytest.raises(PortexPayError):
            await client.query_order(2**62)  # the connection is open, on the first pair
        renewed = ca.issue("server")  # rewrites the files the server was started with
        assert renewed.serial != first
        assert await served_serial(port, ca) == renewed.serial
        # A connection made before the renewal goes on working.
        with pytest.raises(PortexPayError) as raised:
            await client.query_order(2**62)
        assert raised.value.code == grpc.StatusCode.NOT_FOUND


async def test_a_half_written_renewal_keeps_the_previous_pair_until_it_is_complete(
    start_tls: StartTls, ca: LocalCA, tmp_path: Path
) -> None:
    server = await start_tls()
    assert server.grpc_port is not None
    port = server.grpc_port
    serving = await served_serial(port, ca)
    renewal = ca.issue("renewal")
    files = TlsFiles(ca.directory / "server.pem", ca.directory / "server.key")
    # The renewal's certificate is in place, its key not yet: the old pair goes on serving.
    files.cert.write_bytes(renewal.cert.read_bytes())
    with structlog.testing.capture_logs() as logs:
        assert await served_serial(port, ca) == serving
        assert await served_serial(port, ca) == serving
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1  # once for that state of the files, not at every handshake
    assert "is not the key of the certificate" in warnings[0]["problem"]
    files.key.write_bytes(renewal.key.read_bytes())
    assert await served_serial(port, ca) == renewal.serial


def test_the_reloader_reads_the_files_again_only_when_they_change(ca: LocalCA) -> None:
    pair = ca.issue("server")
    reloader = CertificateReloader(TlsFiles(pair.cert, pair.key))
    assert reloader() is None  # nothing changed
    pair.cert.write_bytes(pair.cert.read_bytes())  # touched: a new stamp, the same contents
    assert reloader() is None
    assert reloader.material.serial == pair.serial
    renewed = ca.issue("server")
    assert reloader() is not None
    assert reloader.material.serial == renewed.serial
    assert reloader() is None


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (lambda pair, other: pair.cert.write_text("not a certificate"), "holds no PEM certificate"),
        (lambda pair, other: pair.key.write_text("not a key"), "no unencrypted PEM private key"),
        (lambda pair, other: pair.key.write_bytes(other.key.read_bytes()), "is not the key of"),
        (lambda pair, other: pair.key.unlink(), "cannot read"),
    ],
)
def test_files_that_cannot_be_served_are_refused_at_start(
    ca: LocalCA, spoil: Callable[[IssuedPair, IssuedPair], object], problem: str
) -> None:
    pair, other = ca.issue("server"), ca.issue("other")
    spoil(pair, other)
    with pytest.raises(TlsError, match=problem) as raised:
        read_material(TlsFiles(pair.cert, pair.key))
    assert other.key.read_text() not in str(raised.value)  # a key is never quoted
    with pytest.raises(TlsError):
        CertificateReloader(TlsFiles(pair.cert, pair.key))


async def test_a_client_ca_replaced_on_disk_decides_the_next_handshakes(
    start_tls: StartTls, ca: LocalCA, tmp_path: Path
) -> None:
    server = await start_tls(mtls=True)
    assert server.grpc_port is not None
    roots = ca.cert.read_bytes()
    successor = LocalCA(tmp_path / "successor", "successor-ca")

    def holding(pair: IssuedPair) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(roots, pair.key.read_bytes(), pair.cert.read_bytes())

    old_member, new_member = ca.issue("shop", server=False), successor.issue("shop", server=False)
    assert (await health_status(server.grpc_port, holding(old_member)))[0] == grpc.StatusCode.OK
    ca.cert.write_bytes(successor.cert.read_bytes())  # the file PORTEX_GRPC_TLS_CLIENT_CA names
    assert (await health_status(server.grpc_port, holding(new_member)))[0] == grpc.StatusCode.OK
    assert (await health_status(server.grpc_port, holding(old_member)))[0] == (
        grpc.StatusCode.UNAVAILABLE
    )
