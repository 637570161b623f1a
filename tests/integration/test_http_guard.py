"""The HTTP door's bound on reading a request, and its log of what clients get wrong: a replica
with a one-second read timeout, real sockets sending requests as bytes (slow, short, malformed),
the real service behind them."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
import structlog

from portex_pay.app import PortexApp
from portex_pay.domain.init_data import init_data_fields, sign_init_data
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp, make_settings, stored_secret

READ_TIMEOUT = 1.0


@pytest.fixture
async def guarded(database_url: str, fake_telegram: FakeBotApi) -> AsyncIterator[PortexApp]:
    replica = PortexApp(
        make_settings(database_url, fake_telegram.base_url, http_read_timeout=READ_TIMEOUT)
    )
    await replica.start()
    try:
        yield replica
    finally:
        await replica.stop()


async def webhook_secret(replica: PortexApp, app: TestApp) -> str:
    return await stored_secret(replica.pool, app.id, "webhook_secret")


def signed_user(app: TestApp, user_id: int = 4242) -> str:
    fields = init_data_fields(
        {"id": user_id, "first_name": "Slow"}, auth_date=datetime.now(UTC), query_id="AAH1"
    )
    return sign_init_data(fields, bot_token=app.bot_token)


async def door_requests(replica: PortexApp, app: TestApp) -> dict[str, tuple[str, list[str]]]:
    """A request line and headers on each door that reads its body."""
    return {
        "webhook": (
            f"POST /telegram/webhook/{app.id} HTTP/1.1",
            [
                f"X-Telegram-Bot-Api-Secret-Token: {await webhook_secret(replica, app)}",
                "Content-Type: application/json",
            ],
        ),
        "edge": (
            "POST /v1/saveTgUser HTTP/1.1",
            [
                f"X-App-Id: {app.id}",
                f"X-Tg-InitData: {signed_user(app)}",
                "Content-Type: application/json",
            ],
        ),
        "proxy's own method": (
            f"POST /bot{app.bot_token}/getUpdates HTTP/1.1",
            ["Content-Type: application/json"],
        ),
        "proxy forwarding": (
            f"POST /bot{app.bot_token}/sendMessage HTTP/1.1",
            ["Content-Type: application/json"],
        ),
    }


@contextlib.asynccontextmanager
async def connection(
    port: int | None,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    assert port, "the replica is not listening"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def head(request_line: str, headers: list[str], length: int | None) -> bytes:
    lines = [request_line, "Host: 127.0.0.1", *headers]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def answer(reader: asyncio.StreamReader, within: float = 10.0) -> tuple[int, bytes]:
    """The status and the rest of what came back until the server closed the connection."""
    data = await asyncio.wait_for(reader.read(), within)
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest


@pytest.mark.parametrize("door", ["webhook", "edge", "proxy's own method", "proxy forwarding"])
async def test_a_body_shorter_than_its_content_length_is_408_and_closed(
    guarded: PortexApp, make_app: Any, fake_telegram: FakeBotApi, door: str
) -> None:
    app: TestApp = await make_app(updates="webhook")
    request_line, headers = (await door_requests(guarded, app))[door]
    calls = len(fake_telegram.calls)
    async with connection(guarded.http_port) as (reader, writer):
        started = time.monotonic()
        writer.write(head(request_line, headers, 100) + b'{"a":')
        await writer.drain()
        # The connection ends by itself: the answer, then the close.
        status, rest = await answer(reader)
        waited = time.monotonic() - started
    assert status == 408, rest
    assert waited >= READ_TIMEOUT * 0.9
    # Nothing reached Telegram: the half body was never forwarded as a request.
    assert [c.method for c in fake_telegram.calls[calls:] if c.token == app.bot_token] == []


async def test_a_trickled_body_is_cut_off(guarded: PortexApp, make_app: Any) -> None:
    app: TestApp = await make_app(updates="webhook")
    request_line, headers = (await door_requests(guarded, app))["webhook"]
    async with connection(guarded.http_port) as (reader, writer):
        writer.write(head(request_line, headers, 1000))
        started = time.monotonic()
        sent = 0
        with contextlib.suppress(ConnectionError):
            # A byte every 0.2 s never finishes; the server must not wait for all of it.
            while not reader.at_eof() and time.monotonic() - started < 8:
                writer.write(b" ")
                await writer.drain()
                sent += 1
                await asyncio.sleep(0.2)
                if reader._buffer:  # type: ignore[attr-defined] # the answer has begun
                    break
        status, _ = await answer(reader)
    assert status == 408
    assert sent < 1000 and time.monotonic() - started < 8


async def test_half_a_request_head_is_closed_without_a_handler(guarded: PortexApp) -> None:
    async with connection(guarded.http_port) as (reader, writer):
        writer.write(b"POST /v1/saveTgUser HTTP/1.1\r\nHost: 127.0.0.1\r\nX-App")
        await writer.drain()
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 10) == b""
    assert READ_TIMEOUT * 0.9 <= time.monotonic() - started < 5


async def test_a_steady_large_upload_and_a_long_poll_pass(
    guarded: PortexApp, make_app: Any, fake_telegram: FakeBotApi
) -> None:
    """The deadline grows with what arrives, and ends with the body: a 512 KiB upload sent in
    2 s (four times the read timeout) is forwarded whole, and a long poll longer than the read
    timeout is answered when its own timeout ends."""
    app: TestApp = await make_app(updates="webhook")
    base = f"http://127.0.0.1:{guarded.http_port}/bot{app.bot_token}"
    chunk = b"x" * (32 * 1024)

    async def slowly() -> AsyncIterator[bytes]:
        for _ in range(16):
            yield chunk
            await asyncio.sleep(0.125)

    await fake_telegram.send_user_message(app.bot_token, 777, "hi")  # opens the chat
    async with aiohttp.ClientSession() as session:
        upload = aiohttp.MultipartWriter("form-data")
        upload.append("777").set_content_disposition("form-data", name="chat_id")
        part = upload.append(slowly(), {"Content-Type": "application/octet-stream"})
        part.set_content_disposition("form-data", name="document", filename="big.bin")
        started = time.monotonic()
        async with session.post(f"{base}/sendDocument", data=upload) as reply:
            body = await reply.json()
        assert time.monotonic() - started > 2 * READ_TIMEOUT
        assert reply.status == 200 and body["ok"], body
        file_id = body["result"]["document"]["file_id"]
        assert fake_telegram.uploaded_file(file_id) == chunk * 16

        started = time.monotonic()
        async with session.post(f"{base}/getUpdates", json={"timeout": 2}) as reply:
            polled = await reply.json()
        assert reply.status == 200 and polled == {"ok": True, "result": []}
        assert time.monotonic() - started >= 1.9


async def test_malformed_requests_are_400_and_one_warning_not_errors(
    guarded: PortexApp, caplog: pytest.LogCaptureFixture
) -> None:
    broken = [
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n",
        b"POST /v1/saveTgUser HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"v" * 9000 + b"\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 HTTP/1.1\r\n\r\n",
    ]
    with structlog.testing.capture_logs() as logs, caplog.at_level("WARNING"):
        for _ in range(5):
            for request in broken:
                async with connection(guarded.http_port) as (reader, writer):
                    writer.write(request)
                    await writer.drain()
                    status, _ = await answer(reader)
                assert status == 400, request[:40]
    assert [e for e in logs if e["log_level"] in ("error", "critical")] == []
    assert [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []
    refused = [e for e in logs if e["event"] == "malformed request refused"]
    assert [e["log_level"] for e in refused] == ["warning"]  # one per address a minute
    assert refused[0]["peer"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("framing", "body"),
    [
        # A chunk longer than it said, then no size line.
        ("Transfer-Encoding: chunked", b"5\r\n{}\r\nzz\r\n"),
        # Not gzip at all.
        ("Content-Encoding: gzip\r\nContent-Length: 10", b"not gzip!!"),
    ],
)
async def test_a_body_that_breaks_its_framing_is_400_not_500(
    guarded: PortexApp,
    make_app: Any,
    caplog: pytest.LogCaptureFixture,
    framing: str,
    body: bytes,
) -> None:
    app: TestApp = await make_app(updates="webhook")
    requests = await door_requests(guarded, app)
    with structlog.testing.capture_logs() as logs, caplog.at_level("WARNING"):
        for door in ("webhook", "proxy's own method", "proxy forwarding", "edge"):
            request_line, headers = requests[door]
            async with connection(guarded.http_port) as (reader, writer):
                writer.write(head(request_line, [*headers, framing], None) + body)
                await writer.drain()
                status, rest = await answer(reader)
            assert status == 400, (door, rest)
    assert [e for e in logs if e["log_level"] in ("error", "critical")] == []
    assert [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []


async def test_a_compressed_body_is_forwarded_decoded(
    guarded: PortexApp, make_app: Any, fake_telegram: FakeBotApi
) -> None:
    """aiohttp decodes a gzip body before the proxy streams it on: it goes to Telegram without
    the Content-Encoding (and the length) that no longer describe it."""
    app: TestApp = await make_app(updates="webhook")
    await fake_telegram.send_user_message(app.bot_token, 778, "hi")  # opens the chat
    body = gzip.compress(json.dumps({"chat_id": 778, "text": "compressed"}).encode())
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{guarded.http_port}/bot{app.bot_token}/sendMessage",
            data=body,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        ) as reply,
    ):
        answered = await reply.json()
    assert reply.status == 200 and answered["result"]["text"] == "compressed", answered
