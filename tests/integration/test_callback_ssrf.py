"""Callbacks never reach the service's own network unless the operator allows it.

The address rule is a table of addresses; the guard is exercised over real HTTP to loopback
receivers: through the service as configured (a paid order, its worker delivering, with
`callback_allow_private` off and on), through a dispatcher driven step by step, and through a
session whose resolver is a stub, to show that the resolver's answer is what is checked and what is
connected to.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import grpc
import pytest
import structlog
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.adapters.http_guard import (
    AddressGuard,
    AddressNotAllowed,
    GuardedResolver,
    HttpPoster,
    address_refusal,
    new_callback_session,
    refused_reason,
)
from portex_pay.adapters.postgres.callbacks import CallbackRepository
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import PortexApp, application_admin
from portex_pay.config import ConfigError, Settings
from portex_pay.service.callbacks import CallbackDispatcher
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import (
    DATA_KEY,
    DATA_KEYS,
    TestApp,
    create_test_app,
    free_port,
    make_settings,
    stored_secret,
)
from tests.integration.helpers import eventually, pay_request

USER = 4242
NOT_ALLOWED = "callback address not allowed: "

# --- the address rule -----------------------------------------------------------------------------

REFUSED = {
    "127.0.0.1": "loopback",
    "127.255.255.254": "loopback",
    "::1": "loopback",
    "10.0.0.1": "private",
    "172.16.0.1": "private",
    "172.31.255.255": "private",
    "192.168.1.1": "private",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "169.254.169.254": "link-local",  # cloud metadata
    "169.254.0.1": "link-local",
    "fe80::1": "link-local",
    "fe80::1%eth0": "link-local",
    "224.0.0.1": "multicast",  # Python calls IPv4 multicast global: refused explicitly
    "239.255.255.250": "multicast",
    "ff02::1": "multicast",
    "ff0e::1": "multicast",
    "0.0.0.0": "unspecified",  # noqa: S104 - an address to judge, not to bind
    "::": "unspecified",
    "255.255.255.255": "broadcast",
    "240.0.0.1": "reserved",
    "::127.0.0.1": "reserved",  # IPv4-compatible (deprecated), inside ::/8
    "0.1.2.3": "private",  # "this network"
    "100.64.0.1": "shared (carrier-grade NAT)",
    "100.127.255.254": "shared (carrier-grade NAT)",
    "192.0.2.1": "private",  # documentation
    "198.18.0.1": "private",  # benchmarking
    "fec0::1": "site-local",  # deprecated, yet Python calls it global
    "2001:db8::1": "private",  # documentation
    # IPv6 forms of an IPv4 address are judged as that address.
    "::ffff:127.0.0.1": "loopback",
    "::ffff:10.1.2.3": "private",
    "::ffff:169.254.169.254": "link-local",
    "::ffff:0.0.0.0": "unspecified",
    "2002:7f00:1::": "loopback",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1": "link-local",  # 6to4 of 169.254.169.254
    "64:ff9b::7f00:1": "loopback",  # NAT64 of 127.0.0.1
    "64:ff9b::a00:1": "private",  # NAT64 of 10.0.0.1
}
ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "172.32.0.1",  # just past 172.16.0.0/12
    "100.128.0.1",  # just past 100.64.0.0/10
    "2606:4700:4700::1111",
    "2a00:1450:4001::200e",
    "::ffff:8.8.8.8",
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8: what DNS64 answers on IPv6-only networks
]


@pytest.mark.parametrize(("address", "category"), sorted(REFUSED.items()))
def test_the_rule_refuses_non_global_addresses_and_names_why(address: str, category: str) -> None:
    reason = address_refusal(address)
    assert reason is not None and reason.endswith(f" is {category}")


@pytest.mark.parametrize("address", ALLOWED)
def test_the_rule_allows_globally_reachable_unicast_addresses(address: str) -> None:
    assert address_refusal(address) is None


@pytest.mark.parametrize("host", ["localhost", "127.1", "2130706433", "0x7f.1", "", "::g"])
def test_the_rule_refuses_what_is_not_an_ip_address(host: str) -> None:
    # Host names are resolved first and their addresses judged; the rule itself fails closed.
    assert address_refusal(host) is not None


def test_an_embedded_address_is_named_in_the_reason() -> None:
    assert address_refusal("::ffff:127.0.0.1") == "::ffff:7f00:1 (127.0.0.1) is loopback"
    assert address_refusal("127.0.0.1") == "127.0.0.1 is loopback"


def test_the_setting_is_off_by_default_and_read_like_the_other_flags() -> None:
    env = {
        "DATABASE_URL": "postgresql://x/y",
        "PORTEX_PAYLOAD_SECRET": "s" * 32,
        "PORTEX_DATA_KEY": DATA_KEY,
    }
    assert Settings.from_env(env).callback.allow_private is False
    for value, expected in (("true", True), ("1", True), ("on", True), ("false", False)):
        settings = Settings.from_env({**env, "PORTEX_CALLBACK_ALLOW_PRIVATE": value})
        assert settings.callback.allow_private is expected
    with pytest.raises(ConfigError, match="PORTEX_CALLBACK_ALLOW_PRIVATE must be true or false"):
        Settings.from_env({**env, "PORTEX_CALLBACK_ALLOW_PRIVATE": "maybe"})


# --- the resolver: its answer is what is checked --------------------------------------------------


class StubResolver(AbstractResolver):
    """Answers from a table (a list of answers per name is used one per lookup, the last
    repeating), and counts lookups."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self._answers = {name: list(seq) for name, seq in answers.items()}
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        sequence = self._answers.get(host)
        if not sequence:
            raise OSError(f"no such host {host}")
        addresses = sequence.pop(0) if len(sequence) > 1 else sequence[0]
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        pass


async def test_the_guard_resolver_refuses_a_name_that_resolves_to_loopback() -> None:
    resolver = GuardedResolver(StubResolver({"evil.example": [["127.0.0.1"]]}))
    with pytest.raises(AddressNotAllowed) as raised:
        await resolver.resolve("evil.example", 80)
    assert str(raised.value) == NOT_ALLOWED + "evil.example -> 127.0.0.1 is loopback"


async def test_the_guard_resolver_keeps_only_the_allowed_addresses_of_an_answer() -> None:
    stub = StubResolver({"mixed.example": [["10.0.0.7", "93.184.216.34", "::1", "2606:2800::1"]]})
    resolved = await GuardedResolver(stub).resolve("mixed.example", 443)
    assert [r["host"] for r in resolved] == ["93.184.216.34", "2606:2800::1"]
    assert all(r["port"] == 443 and r["hostname"] == "mixed.example" for r in resolved)


async def test_every_lookup_is_checked_so_a_name_that_rebinds_is_refused() -> None:
    # First a public answer, then loopback (DNS rebinding): each answer is judged as it is
    # returned to the connector, with no earlier check that a later lookup could outdate.
    stub = StubResolver({"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]})
    resolver = GuardedResolver(stub)
    assert [r["host"] for r in await resolver.resolve("rebind.example", 80)] == ["93.184.216.34"]
    with pytest.raises(AddressNotAllowed, match=r"rebind\.example -> 127\.0\.0\.1 is loopback"):
        await resolver.resolve("rebind.example", 80)
    assert stub.lookups == ["rebind.example", "rebind.example"]


# --- receivers ------------------------------------------------------------------------------------


@dataclass
class Hit:
    path: str
    local_address: str
    event_type: str | None


class Receiver:
    """A callback receiver on loopback that records every request. It listens on `hosts`, all
    on one port; `/redirect-to?location=...` answers a 307 there."""

    def __init__(self, *hosts: str) -> None:
        self.hosts = hosts or ("127.0.0.1",)
        self.hits: list[Hit] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self, port: int | None = None) -> None:
        """Listens on a free port (the same on every host), or on `port`."""
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        for _ in range(1 if port else 20):
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._runner.setup()
            candidate = port or free_port()
            try:
                for host in self.hosts:
                    await web.TCPSite(self._runner, host, candidate).start()
            except OSError:
                await self._runner.cleanup()
                continue
            self.port = candidate
            return
        raise OSError(f"no port free on {self.hosts}")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def at(self, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.read()
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        event_type = None
        if body.startswith(b"{"):
            event_type = (await request.json()).get("type")
        self.hits.append(Hit(path, str(sockname[0]) if sockname else "", event_type))
        if path == "redirect-to":
            return web.Response(status=307, headers={"Location": request.query["location"]})
        return web.Response(status=200)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def _mapped_ipv4_connects(port: int) -> bool:
    """Whether this machine connects to an IPv4 listener through ::ffff:127.0.0.1."""
    try:
        with socket.create_connection(("::ffff:127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


IPV6 = _ipv6_loopback()


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver("127.0.0.1", "::1") if IPV6 else Receiver("127.0.0.1")
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


# Callback URLs that all lead to the loopback receiver: (host as written, expected reason).
LOOPBACK_HOSTS = {
    "ipv4": ("127.0.0.1", "127.0.0.1 is loopback"),
    "localhost": ("localhost", "localhost -> 127.0.0.1 is loopback"),
    # Not an IP literal to aiohttp: the system resolver turns it into 127.0.0.1 (inet_aton).
    "hex-name": ("0x7f.1", "0x7f.1 -> 127.0.0.1 is loopback"),
    # Linux connects 0.0.0.0 to the local host.
    "unspecified": ("0.0.0.0", "0.0.0.0 is unspecified"),  # noqa: S104 - a URL host
    "mapped": ("[::ffff:127.0.0.1]", "::ffff:7f00:1 (127.0.0.1) is loopback"),
    "ipv6": ("[::1]", "::1 is loopback"),
}


def _loopback_url(receiver: Receiver, variant: str, path: str) -> str:
    host = LOOPBACK_HOSTS[variant][0]
    if variant == "ipv6" and not IPV6:
        pytest.skip("no IPv6 loopback on this machine")
    if variant == "mapped" and not _mapped_ipv4_connects(receiver.port):
        pytest.skip("IPv4-mapped IPv6 addresses do not connect on this machine")
    return f"http://{host}:{receiver.port}/{path}"


def _reason_matches(reason: str | None, variant: str) -> bool:
    expected = NOT_ALLOWED + LOOPBACK_HOSTS[variant][1]
    if reason is None or " -> " not in expected:
        return reason == expected
    # A name may resolve to ::1 as well on machines whose hosts file says so.
    name, _, address = expected.partition(" -> ")
    given, _, addresses = reason.partition(" -> ")
    parts = addresses.split(", ")
    return given == name and address in parts and all(p.endswith(" is loopback") for p in parts)


# --- the service as configured: a paid order, its own worker delivering ---------------------------


@dataclass
class Shop:
    service: PortexApp
    app: TestApp
    stub: Any  # payment_pb2_grpc.PaymentServiceStub, used asynchronously


async def _isolated_database(database_url: str) -> tuple[str, Callable[[], Awaitable[None]]]:
    name = f"ssrf_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')

    async def drop() -> None:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()

    return database_url.rsplit("/", 1)[0] + f"/{name}", drop


async def _shop(
    database_url: str, fake_telegram: FakeBotApi, *, allow_private: bool
) -> AsyncIterator[Shop]:
    """A service of its own (its own database, so its delivery worker sees only these tests'
    callbacks) delivering callbacks as configured, one attempt per delivery."""
    dsn, drop = await _isolated_database(database_url)
    service = PortexApp(
        make_settings(
            dsn,
            fake_telegram.base_url,
            callback_delivery=True,
            callback_allow_private=allow_private,
            callback_max_attempts=1,
        )
    )
    session = await new_session()
    try:
        await service.start()
        admin = application_admin(
            service.pool, BotApiClient(session, fake_telegram.base_url, 5.0), data_keys=DATA_KEYS
        )
        app = await create_test_app(
            admin,
            fake_telegram,
            updates="webhook",
            public_url=f"http://127.0.0.1:{service.http_port}",
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
            yield Shop(service, app, payment_pb2_grpc.PaymentServiceStub(channel))
    finally:
        await service.stop()
        await session.close()
        await drop()


@pytest.fixture(scope="module")
async def guarded_shop(database_url: str, fake_telegram: FakeBotApi) -> AsyncIterator[Shop]:
    async for shop in _shop(database_url, fake_telegram, allow_private=False):
        yield shop


@pytest.fixture(scope="module")
async def open_shop(database_url: str, fake_telegram: FakeBotApi) -> AsyncIterator[Shop]:
    async for shop in _shop(database_url, fake_telegram, allow_private=True):
        yield shop


async def _pay_and_settle(
    shop: Shop, fake_telegram: FakeBotApi, callback_url: str
) -> list[asyncpg.Record]:
    """Pays an order with `callback_url` through the fake Telegram; returns its three
    deliveries (created, invoice_created, paid) once the worker has settled all of them."""
    paid = await shop.stub.Pay(
        pay_request(tg_use_id=USER, callback_url=callback_url), metadata=shop.app.metadata
    )
    assert (await fake_telegram.pay_invoice(paid.tg_payment_url, USER)).approved
    await fake_telegram.drain(shop.app.bot_token)
    order = await shop.stub.QueryOrder(
        payment_pb2.QueryOrderRequest(tg_payment_id=paid.tg_payment_id),
        metadata=shop.app.metadata,
    )
    # The payment path does not care where callbacks may go.
    assert (order.state, order.status) == (payment_pb2.Order.PAID, 1)

    async def settled() -> list[asyncpg.Record] | None:
        rows = await shop.service.pool.fetch(
            """
            SELECT e.type, d.state, d.attempts, d.last_status, d.last_error
            FROM callback_deliveries d JOIN events e ON e.id = d.event_id
            WHERE e.tg_payment_id = $1 ORDER BY e.id
            """,
            paid.tg_payment_id,
        )
        done = len(rows) == 3 and all(row["state"] != "pending" for row in rows)
        return rows if done else None

    rows: list[asyncpg.Record] = await eventually(
        settled, timeout=20, interval=0.05, what="three deliveries settled"
    )
    return rows


@pytest.mark.parametrize("variant", list(LOOPBACK_HOSTS))
async def test_a_paid_orders_callbacks_to_a_loopback_address_are_refused(
    guarded_shop: Shop, fake_telegram: FakeBotApi, receiver: Receiver, variant: str
) -> None:
    path = f"refused-{variant}"
    url = _loopback_url(receiver, variant, path) + "?token=receiver-own-secret"
    with structlog.testing.capture_logs() as logs:
        rows = await _pay_and_settle(guarded_shop, fake_telegram, url)

        def warnings() -> list[MutableMapping[str, Any]]:
            return [entry for entry in logs if entry["event"] == "callback delivery failed"]

        # The worker logs each failure just after recording it.
        await eventually(lambda: len(warnings()) >= 3, what="three failure warnings")

    assert receiver.at(path) == []
    assert [row["type"] for row in rows] == ["order.created", "order.invoice_created", "order.paid"]
    for row in rows:
        assert (row["state"], row["attempts"], row["last_status"]) == ("failed", 1, None)
        assert _reason_matches(row["last_error"], variant), row["last_error"]
    assert len(warnings()) == 3  # and no more
    assert all(w["log_level"] == "warning" and w["gave_up"] for w in warnings())
    assert all(_reason_matches(w["error"], variant) for w in warnings())
    secret = await stored_secret(guarded_shop.service.pool, guarded_shop.app.id, "signing_secret")
    assert "receiver-own-secret" not in repr(logs) and secret not in repr(logs)


@pytest.mark.parametrize("variant", list(LOOPBACK_HOSTS))
async def test_the_same_callbacks_are_delivered_when_private_addresses_are_allowed(
    open_shop: Shop, fake_telegram: FakeBotApi, receiver: Receiver, variant: str
) -> None:
    path = f"allowed-{variant}"
    rows = await _pay_and_settle(open_shop, fake_telegram, _loopback_url(receiver, variant, path))

    assert [(row["state"], row["last_status"]) for row in rows] == [("delivered", 200)] * 3
    assert [hit.event_type for hit in receiver.at(path)] == [
        "order.created",
        "order.invoice_created",
        "order.paid",
    ]


# --- the dispatcher: a refusal is a failed attempt, retried with backoff, then given up -----------


@pytest.fixture
async def _park_other_deliveries(service: PortexApp) -> None:
    # As in test_callbacks: deliveries left by other tests are put out of the dispatcher's reach.
    await service.pool.execute(
        "UPDATE callback_deliveries SET next_attempt_at = 'infinity' WHERE state = 'pending'"
    )


@pytest.mark.usefixtures("_park_other_deliveries")
async def test_a_refused_delivery_backs_off_and_is_given_up_after_max_attempts(
    stub: Any, app: TestApp, service: PortexApp, receiver: Receiver
) -> None:
    paid = await stub.Pay(
        pay_request(callback_url=f"http://127.0.0.1:{receiver.port}/stepped"),
        metadata=app.metadata,
    )
    first = await service.pool.fetchval(
        "SELECT min(id) FROM events WHERE tg_payment_id = $1", paid.tg_payment_id
    )
    session = await new_callback_session(allow_private=False)
    try:
        dispatcher = CallbackDispatcher(
            CallbackRepository(service.pool, DATA_KEYS),
            HttpPoster(session),
            timeout=2.0,
            max_attempts=2,
            base_backoff=60.0,
        )
        assert await dispatcher.step() == 1
        row = await service.pool.fetchrow(
            "SELECT *, next_attempt_at - now() AS due_in FROM callback_deliveries "
            "WHERE event_id = $1",
            first,
        )
        assert row is not None
        assert (row["state"], row["attempts"], row["last_status"], row["last_error"]) == (
            "pending",
            1,
            None,
            NOT_ALLOWED + "127.0.0.1 is loopback",
        )
        assert 44 <= row["due_in"].total_seconds() <= 60  # an ordinary backoff
        assert await dispatcher.step() == 0

        await service.pool.execute(
            "UPDATE callback_deliveries SET next_attempt_at = now() WHERE event_id = $1", first
        )
        assert await dispatcher.step() == 1
        row = await service.pool.fetchrow(
            "SELECT state, attempts FROM callback_deliveries WHERE event_id = $1", first
        )
        assert row is not None and (row["state"], row["attempts"]) == ("failed", 2)
    finally:
        await session.close()
    assert receiver.at("stepped") == []


# --- the session: what the resolver answers is what is connected to -------------------------------


async def test_a_name_resolving_to_loopback_is_refused_and_reached_when_allowed(
    receiver: Receiver,
) -> None:
    def stub() -> StubResolver:
        return StubResolver({"evil.example": [["127.0.0.1"]]})

    url = f"http://evil.example:{receiver.port}/evil"
    guarded = await new_callback_session(allow_private=False, resolver=stub())
    try:
        with pytest.raises(aiohttp.ClientConnectorError) as raised:
            await guarded.post(url, data=b"{}")
        assert refused_reason(raised.value) == NOT_ALLOWED + "evil.example -> 127.0.0.1 is loopback"
    finally:
        await guarded.close()
    assert receiver.at("evil") == []

    opened = await new_callback_session(allow_private=True, resolver=stub())
    try:
        async with opened.post(url, data=b"{}") as response:
            assert response.status == 200
    finally:
        await opened.close()
    assert len(receiver.at("evil")) == 1  # the stub does lead to the receiver


def _only_127_0_0_1(host: str) -> str | None:
    """A test rule that tells two loopback addresses apart: 127.0.0.1 allowed, others not."""
    return None if host == "127.0.0.1" else f"{host} is not 127.0.0.1"


@pytest.fixture
async def two_receivers() -> AsyncIterator[tuple[Receiver, Receiver]]:
    """One port, two listeners: 127.0.0.1 (allowed by the test rule) and 127.0.0.2 (refused)."""
    for _ in range(20):
        good, bad = Receiver("127.0.0.1"), Receiver("127.0.0.2")
        await good.start()
        try:
            await bad.start(good.port)
        except OSError:
            await good.stop()
            continue
        try:
            yield good, bad
        finally:
            await bad.stop()
            await good.stop()
        return
    raise RuntimeError("no port free on both 127.0.0.1 and 127.0.0.2")


async def _guarded_session(resolver: AbstractResolver) -> aiohttp.ClientSession:
    guard = AddressGuard(resolver, refusal=_only_127_0_0_1)
    return aiohttp.ClientSession(**guard.session_options(use_dns_cache=False))


async def test_the_connection_goes_to_an_address_the_guard_let_through(
    two_receivers: tuple[Receiver, Receiver],
) -> None:
    good, bad = two_receivers
    # Refused address first: without the filter, the connector would try it first and succeed.
    stub = StubResolver({"mixed.example": [["127.0.0.2", "127.0.0.1"]]})
    session = await _guarded_session(stub)
    try:
        for _ in range(3):
            async with session.post(f"http://mixed.example:{good.port}/mixed") as response:
                assert response.status == 200
    finally:
        await session.close()
    assert [hit.local_address for hit in good.at("mixed")] == ["127.0.0.1"] * 3
    assert bad.hits == []


@pytest.mark.parametrize(
    "target", ["http://127.0.0.2:{port}/landing", "http://bad.example:{port}/landing"]
)
async def test_a_redirect_is_checked_again_even_when_followed(
    two_receivers: tuple[Receiver, Receiver], target: str
) -> None:
    # The dispatcher does not follow redirects at all; the session checks every hop anyway.
    good, bad = two_receivers
    location = target.format(port=good.port)
    stub = StubResolver({"bad.example": [["127.0.0.2"]]})
    session = await _guarded_session(stub)
    try:
        with pytest.raises(aiohttp.ClientConnectorError) as raised:
            await session.post(
                f"http://127.0.0.1:{good.port}/redirect-to",
                params={"location": location},
                allow_redirects=True,
            )
        assert "127.0.0.2 is not 127.0.0.1" in str(refused_reason(raised.value))
    finally:
        await session.close()
    assert len(good.at("redirect-to")) == 1
    assert bad.hits == []


async def test_proxy_variables_in_the_environment_are_not_used(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy would connect on the service's behalf, to wherever it resolves the callback host.
    proxy = Receiver("127.0.0.1")
    await proxy.start()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
    session = await new_callback_session(allow_private=False)
    try:
        with pytest.raises(aiohttp.ClientConnectorError) as raised:
            await session.post(f"http://127.0.0.1:{receiver.port}/proxied", data=b"{}")
        assert refused_reason(raised.value) == NOT_ALLOWED + "127.0.0.1 is loopback"
    finally:
        await session.close()
        await proxy.stop()
    assert proxy.hits == [] and receiver.at("proxied") == []
