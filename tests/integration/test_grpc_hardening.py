"""gRPC hardening (issue 7), through real gRPC over loopback and a real PostgreSQL.

- A database outage (PostgreSQL stopped or restarted under running RPCs) is UNAVAILABLE /
  DATABASE_UNAVAILABLE for every RPC, never INTERNAL or UNKNOWN, and the service recovers.
- A cursor or page token out of range or not in canonical form is INVALID_ARGUMENT, decided
  before any query.
- A stream the client cancels ends with one canonical `rpc` line saying CANCELLED, nothing else.
- A request body that does not decode is INVALID_ARGUMENT, with at most one warning per peer and
  interval, and no traceback.
- Requests are bounded: the largest valid request gets through, one over the receive limit is
  RESOURCE_EXHAUSTED; the `types` filter is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.api.grpc.errors import is_database_outage
from portex_pay.app import PortexApp, application_admin
from portex_pay.domain.events import Cursor, MalformedCursor
from portex_pay.service.worker import Job, Supervisor
from portex_pay_devtools.fake_bot_api import FakeBotApi
from portex_pay_devtools.pgcluster import PgCluster
from tests.conftest import DATA_KEYS, TestApp, create_test_app, make_settings
from tests.integration.helpers import details, eventually, pay_request

Stub = payment_pb2_grpc.PaymentServiceStub
PAY = "/portex.payment.v1.PaymentService/Pay"
STREAM = "/portex.payment.v1.PaymentService/StreamInvoiceEvents"


def _failure(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str | None]:
    info = details(error).get("ErrorInfo")
    return error.code(), info.reason if info else None


async def _eventually(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Waits for a condition the server reaches on its own (a bound against hanging forever,
    not a timing assertion)."""
    await eventually(condition, timeout=timeout, interval=0.01, what=what)


@pytest.fixture
async def start_service(
    database_url: str, fake_telegram: FakeBotApi
) -> AsyncIterator[Callable[..., Awaitable[PortexApp]]]:
    """Services of their own (fresh interceptor state, a server that can be stopped)."""
    started: list[PortexApp] = []

    async def start(dsn: str | None = None, **overrides: object) -> PortexApp:
        service = PortexApp(make_settings(dsn or database_url, fake_telegram.base_url, **overrides))
        started.append(service)
        await service.start()
        return service

    try:
        yield start
    finally:
        for service in started:
            await service.stop()


@contextlib.contextmanager
def loop_exceptions() -> Any:
    """What reaches the event loop's exception handler ("Task exception was never retrieved",
    exceptions in callbacks), collected instead of logged."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)


# --- 5: a database outage is UNAVAILABLE / DATABASE_UNAVAILABLE ---------------------------------


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions._base.InternalClientError("got result for unknown protocol state 3"),
        asyncpg.exceptions._base.ProtocolError("unexpected message"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
        asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
        asyncpg.exceptions.CrashShutdownError("terminating connection because of crash"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.PostgresConnectionError("connection failure"),
        ConnectionResetError("reset by peer"),
        TimeoutError(),
    ],
    ids=lambda error: type(error).__name__,
)
def test_database_client_and_server_failures_are_outages(error: BaseException) -> None:
    assert is_database_outage(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a bug"),
        KeyError("a bug"),
        asyncpg.exceptions.DataError("invalid input for query argument $1"),  # our bad argument
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.UndefinedColumnError("no such column"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_bugs_are_not_outages(error: BaseException) -> None:
    assert not is_database_outage(error)


def test_an_outage_raised_from_an_outage_is_still_one() -> None:
    try:
        try:
            raise asyncpg.exceptions._base.InternalClientError("protocol state")
        except asyncpg.exceptions._base.InternalClientError as cause:
            raise RuntimeError("while reading") from cause
    except RuntimeError as error:
        assert is_database_outage(error)


async def test_rpcs_during_postgresql_restarts_fail_unavailable_and_recover(
    start_service, fake_telegram: FakeBotApi, tmp_path: Path
) -> None:
    cluster = PgCluster(tmp_path / "pg", ephemeral=True)
    cluster.start()
    session = await new_session()
    try:
        # A cached key would hide the outage from authentication; look it up every time.
        service: PortexApp = await start_service(cluster.dsn, auth_cache_ttl=0.0)
        admin = application_admin(
            service.pool, BotApiClient(session, fake_telegram.base_url, 5), data_keys=DATA_KEYS
        )
        shop = await create_test_app(admin, fake_telegram)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
            stub = Stub(channel)
            order = await stub.Pay(pay_request(), metadata=shop.metadata)
            await _restart_under_load(cluster, stub, shop, order.tg_payment_id)
    finally:
        await session.close()
        cluster.destroy()


def _grew(counts: dict[str, int], since: dict[str, int], names: Any) -> Callable[[], bool]:
    """Whether every name's count has grown past `since` (a snapshot taken now)."""
    return lambda: all(counts.get(n, 0) > since.get(n, 0) for n in names)


async def _restart_under_load(
    cluster: PgCluster, stub: Any, shop: TestApp, tg_payment_id: int
) -> None:
    failures: list[tuple[str, grpc.StatusCode, str | None, str]] = []
    successes: dict[str, int] = {}
    failed: dict[str, int] = {}
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "QueryOrder": lambda: stub.QueryOrder(
            payment_pb2.QueryOrderRequest(tg_payment_id=tg_payment_id),
            metadata=shop.metadata,
            timeout=10,
        ),
        "Pay": lambda: stub.Pay(pay_request(), metadata=shop.metadata, timeout=10),
        "ListEvents": lambda: stub.ListEvents(
            payment_pb2.ListEventsRequest(start=payment_pb2.RETENTION_START, page_size=50),
            metadata=shop.metadata,
            timeout=10,
        ),
        "StreamInvoiceEvents": lambda: _first_event(stub, shop),
    }
    stopping = False

    async def worker(name: str) -> None:
        while not stopping:
            try:
                await calls[name]()
            except grpc.aio.AioRpcError as error:
                code, reason = _failure(error)
                failures.append((name, code, reason, error.details() or ""))
                failed[name] = failed.get(name, 0) + 1
            else:
                successes[name] = successes.get(name, 0) + 1

    names = [name for name in calls for _ in range(4)]
    workers = [asyncio.ensure_future(worker(name)) for name in names]
    try:
        for mode in ("fast", "immediate", "fast"):
            await _eventually(
                _grew(successes, dict(successes), calls),
                "every RPC succeeds with the database up",
            )
            # Stopped while the workers' RPCs are in flight; each then fails at least once.
            await asyncio.to_thread(cluster.stop, mode)
            await _eventually(
                _grew(failed, dict(failed), calls),
                "every RPC fails while the database is down",
            )
            await asyncio.to_thread(cluster.start)
        recovered = dict(successes)
        await _eventually(
            lambda: all(successes.get(n, 0) > recovered.get(n, 0) for n in calls),
            "every RPC succeeds again after the restart",
        )
    finally:
        stopping = True
        await asyncio.gather(*workers, return_exceptions=True)
    wrong = [f for f in failures if f[1:3] != (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")]
    assert not wrong, wrong[:10]
    assert failures


async def _first_event(stub: Any, shop: TestApp) -> None:
    """Opens a stream from the start of retention and reads up to its first event."""
    call = stub.StreamInvoiceEvents(
        payment_pb2.StreamInvoiceEventsRequest(start=payment_pb2.RETENTION_START),
        metadata=shop.metadata,
        timeout=10,
    )
    try:
        async for message in call:
            if not message.heartbeat:
                return
    finally:
        call.cancel()


# --- 6: cursors and page tokens are checked before any query ------------------------------------


def _token(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


BAD_CURSORS = {
    "id 2^63": _token(f"v1.5.{2**63}"),
    "id 2^64": _token(f"v1.5.{2**64}"),
    "negative id": _token("v1.5.-1"),
    "xid 2^64": _token(f"v1.{2**64}.1"),
    "negative xid": _token("v1.-1.1"),
    "huge xid": _token(f"v1.{10**40}.1"),
    "plus sign": _token("v1.+5.1"),
    "spaces": _token("v1. 5.1"),
    "trailing space": _token("v1.5.1 "),
    "underscore": _token("v1.5.1_0"),
    "arabic-indic digit": _token("v1.5.\u0663"),
    "fullwidth digit": _token("v1.\uff15.1"),
    "empty id": _token("v1.5."),
    "leading zero": _token("v1.05.1"),
    "junk around base64": "*" + _token("v1.5.1") + "*",
    "very long": _token("v1." + "1" * 5000 + ".1"),
}


def test_valid_cursors_round_trip_at_the_edges_of_the_range() -> None:
    for cursor in (Cursor(0, 0), Cursor(2**64 - 1, 2**63 - 1), Cursor(123, 456)):
        assert Cursor.decode(cursor.encode()) == cursor


@pytest.mark.parametrize("text", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
def test_cursor_decode_refuses_anything_the_service_did_not_make(text: str) -> None:
    with pytest.raises(MalformedCursor):
        Cursor.decode(text)


async def _bad_argument(call: Any) -> tuple[grpc.StatusCode, list[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    bad_request = details(raised.value).get("BadRequest")
    fields = [v.field for v in bad_request.field_violations] if bad_request else []
    return raised.value.code(), fields


@pytest.mark.parametrize("text", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
async def test_list_events_refuses_a_bad_cursor_or_page_token(stub, app, text: str) -> None:
    for field in ("after_cursor", "page_token"):
        fields: dict[str, Any] = {field: text}
        request = payment_pb2.ListEventsRequest(**fields)
        assert await _bad_argument(stub.ListEvents(request, metadata=app.metadata)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            [field],
        )


@pytest.mark.parametrize("text", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
async def test_a_stream_refuses_a_bad_cursor_before_its_first_heartbeat(
    stub, app, text: str
) -> None:
    call = stub.StreamInvoiceEvents(
        payment_pb2.StreamInvoiceEventsRequest(after_cursor=text), metadata=app.metadata
    )
    received: list[object] = []

    async def read_all() -> None:
        async for message in call:
            received.append(message)

    assert await _bad_argument(read_all()) == (grpc.StatusCode.INVALID_ARGUMENT, ["after_cursor"])
    assert received == []  # not even a heartbeat


async def test_the_largest_cursor_is_accepted(stub, app) -> None:
    top = Cursor(2**64 - 1, 2**63 - 1).encode()
    page = await stub.ListEvents(
        payment_pb2.ListEventsRequest(page_token=top), metadata=app.metadata
    )
    assert (list(page.events), page.next_page_token) == ([], "")


# --- 7: a cancelled stream logs one CANCELLED line and nothing else -----------------------------


async def test_cancelled_streams_log_cancelled_and_nothing_else(
    start_service, make_app, caplog: pytest.LogCaptureFixture
) -> None:
    service: PortexApp = await start_service(stream_heartbeat=0.05)
    idle, busy = await make_app(), await make_app()
    target = f"127.0.0.1:{service.grpc_port}"
    async with grpc.aio.insecure_channel(target) as channel:
        # A backlog of ~4 KB events, far more than the HTTP/2 window: a client that stops
        # reading leaves the server suspended in a write.
        stub = Stub(channel)
        await asyncio.gather(
            *(stub.Pay(pay_request(payload="p" * 4000), metadata=busy.metadata) for _ in range(60))
        )
    rounds, reached_server = 8, 0
    with (
        loop_exceptions() as loop_errors,
        structlog.testing.capture_logs() as logs,
        caplog.at_level(logging.WARNING),
    ):
        async with grpc.aio.insecure_channel(target) as channel:
            stub = Stub(channel)

            def open_stream(app: TestApp, **request: Any) -> Any:
                return stub.StreamInvoiceEvents(
                    payment_pb2.StreamInvoiceEventsRequest(**request), metadata=app.metadata
                )

            for _ in range(rounds):
                # Right after the start: the server may or may not have seen it.
                open_stream(idle).cancel()
                # Subscribed, its first heartbeat on the way.
                call = open_stream(idle)
                await call.initial_metadata()
                call.cancel()
                # In the heartbeat wait: the first heartbeat read, nothing else to send.
                call = open_stream(idle)
                assert (await call.read()).heartbeat
                call.cancel()
                # Between heartbeats, after a few.
                call = open_stream(idle)
                for _ in range(3):
                    assert (await call.read()).heartbeat
                call.cancel()
                # After some events of a backlog it is still writing.
                call = open_stream(busy, start=payment_pb2.RETENTION_START)
                events = 0
                while events < 5:
                    events += not (await call.read()).heartbeat
                call.cancel()
                # A backlog never read at all.
                call = open_stream(busy, start=payment_pb2.RETENTION_START)
                await call.initial_metadata()
                call.cancel()
                reached_server += 5
            assert service.hub is not None
            hub = service.hub
            await _eventually(lambda: hub.subscriber_count == 0, "every stream unsubscribed")
        # Stopping waits for every RPC the server took: their lines are all written by then.
        await service.stop()
        gc.collect()
    lines = [entry for entry in logs if entry.get("event") == "rpc"]
    stream_lines = [entry for entry in lines if entry["method"] == STREAM]
    assert reached_server <= len(stream_lines) <= reached_server + rounds
    assert {entry["code"] for entry in stream_lines} == {"CANCELLED"}
    assert [e for e in logs if e.get("log_level") in ("error", "critical")] == []
    assert [e for e in logs if "exc_info" in e or "exception" in e] == []
    assert loop_errors == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# --- 9: an undecodable body is INVALID_ARGUMENT, logged at most once per peer and interval ------


async def test_an_undecodable_request_is_invalid_argument_before_authentication(
    start_service, make_app, caplog: pytest.LogCaptureFixture
) -> None:
    service: PortexApp = await start_service()
    shop = await make_app()
    with (
        loop_exceptions() as loop_errors,
        structlog.testing.capture_logs() as logs,
        caplog.at_level(logging.WARNING),
    ):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
            raw_pay: Any = channel.unary_unary(
                PAY, request_serializer=None, response_deserializer=None
            )
            for metadata in ((), shop.metadata, (("authorization", "Bearer ppk_nobody"),)):
                for _ in range(50 // 3 + 1):
                    with pytest.raises(grpc.aio.AioRpcError) as raised:
                        await raw_pay(b"\xff\xff\xff", metadata=metadata)
                    assert _failure(raised.value) == (
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "INVALID_ARGUMENT",
                    )
                    assert raised.value.details() == (
                        "request is not a valid portex.payment.v1.PayRequest"
                    )
            # The streaming RPC too, and the services that are not ours.
            raw_stream: Any = channel.unary_stream(
                STREAM, request_serializer=None, response_deserializer=None
            )
            raw_check: Any = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=None,
                response_deserializer=None,
            )
            raw_reflection: Any = channel.stream_stream(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                request_serializer=None,
                response_deserializer=None,
            )
            for attempt in (
                _drain(raw_stream(b"\xff\xff\xff", metadata=shop.metadata)),
                raw_check(b"\xff\xff\xff"),
                _drain(raw_reflection(iter([b"\xff\xff\xff"]))),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await attempt
                assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            # The server answers well-formed requests as before.
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            query = await Stub(channel).Pay(pay_request(), metadata=shop.metadata)
            assert query.tg_payment_id > 0
    # (Other tests' services share the process: their background work may log warnings too.)
    warnings = [e for e in logs if e.get("log_level") == "warning" and "peer" in e]
    assert [e["event"] for e in warnings] == ["undecodable request"]
    assert warnings[0]["peer"] == "ipv4:127.0.0.1"
    assert [e for e in logs if e.get("log_level") in ("error", "critical")] == []
    assert [e for e in logs if "exc_info" in e or "exception" in e] == []
    # No canonical line for each of them either: only the one good Pay.
    assert [e["method"] for e in logs if e.get("event") == "rpc"] == [PAY]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert loop_errors == []


async def _drain(call: Any) -> None:
    async for _ in call:
        pass


# --- 12: requests are bounded -------------------------------------------------------------------

FOUR_BYTES = "\U0001f600"  # one character, four bytes of UTF-8


def _largest_valid_pay() -> payment_pb2.PayRequest:
    """Every field at its limit, every character four bytes of UTF-8."""
    url = "https://e.example/" + FOUR_BYTES * (2048 - len("https://e.example/"))
    return payment_pb2.PayRequest(
        tg_use_id=2**63 - 1,
        amount=10_000,
        label=FOUR_BYTES * 64,
        title=FOUR_BYTES * 32,
        description=FOUR_BYTES * 255,
        payload="p" * 4096,
        photo_url=url,
        photo_size=2**63 - 1,
        photo_width=2**63 - 1,
        photo_height=2**63 - 1,
        callback_url=url,
        request_id="r" * 128,
    )


async def test_the_largest_valid_pay_gets_through(stub, app) -> None:
    request = _largest_valid_pay()
    assert 20_000 < request.ByteSize() < 65_536
    paid = await stub.Pay(request, metadata=app.metadata)
    assert paid.order.description == FOUR_BYTES * 255


async def test_a_request_just_under_the_limit_is_decoded_and_one_over_is_resource_exhausted(
    stub, app
) -> None:
    limit = 65_536
    under = pay_request(payload="")
    under.payload = "p" * (limit - under.ByteSize())
    under.payload = "p" * (len(under.payload) - (under.ByteSize() - limit))  # its length's bytes
    assert under.ByteSize() == limit
    # Decoded and validated: the payload is too long for Pay, not for the transport.
    assert await _bad_argument(stub.Pay(under, metadata=app.metadata)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["payload"],
    )
    over = payment_pb2.PayRequest()
    over.CopyFrom(under)
    over.payload += "p"
    assert over.ByteSize() == limit + 1
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Pay(over, metadata=app.metadata)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_the_receive_limit_is_configurable(start_service, app) -> None:
    service: PortexApp = await start_service(grpc_max_receive_bytes=16_384)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        stub = Stub(channel)
        request = pay_request(payload="p" * 17_000)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Pay(request, metadata=app.metadata)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (await stub.Pay(pay_request(), metadata=app.metadata)).tg_payment_id > 0


@pytest.mark.parametrize(
    ("types", "ok"),
    [
        (["t" * 64] * 64, True),
        (["order.paid"] * 65, False),
        (["t" * 65], False),
    ],
    ids=["64 of 64 chars", "65 types", "a 65-char type"],
)
async def test_the_types_filter_is_bounded(stub, app, types: list[str], ok: bool) -> None:
    list_request = payment_pb2.ListEventsRequest(types=types)
    stream_request = payment_pb2.StreamInvoiceEventsRequest(types=types)
    if ok:
        await stub.ListEvents(list_request, metadata=app.metadata)
        call = stub.StreamInvoiceEvents(stream_request, metadata=app.metadata)
        assert (await call.read()).heartbeat
        call.cancel()
        return
    assert await _bad_argument(stub.ListEvents(list_request, metadata=app.metadata)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["types"],
    )
    assert await _bad_argument(
        _drain(stub.StreamInvoiceEvents(stream_request, metadata=app.metadata))
    ) == (grpc.StatusCode.INVALID_ARGUMENT, ["types"])


async def test_shutdown_ends_a_background_task_that_swallows_a_cancel(start_service) -> None:
    """asyncio.wait_for can swallow a cancel (CPython gh-86296): stop() cancels again, so the
    shutdown neither hangs nor leaves the task running against a closed pool."""
    service: PortexApp = await start_service(shutdown_grace=5.0)
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()  # as if wait_for had returned the result instead
        await asyncio.sleep(3600)

    service._tasks.append(Job("stubborn", stubborn, Supervisor()).start())
    await asyncio.sleep(0)
    await asyncio.wait_for(service.stop(), timeout=10)
    assert swallowed.is_set()
    assert all(task.done() for task in service._tasks)
