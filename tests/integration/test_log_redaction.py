"""Secrets never reach the rendered logs: the real service over real HTTP, the real logging set-up.

What is checked is what `configure_logging` actually writes to stderr (captured at the file
descriptor), not the event dicts: the redaction runs in the formatter of the handler it installs,
for our structlog lines and for every library's stdlib lines alike. The logging set-up of the test
session is restored after each test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock
from urllib.parse import quote
from uuid import UUID

import aiohttp
import pytest
import structlog
from aiohttp import web

from portex_pay import logging as portex_logging
from portex_pay.adapters.postgres.applications import ApplicationRepository
from portex_pay.adapters.postgres.callbacks import CallbackRepository
from portex_pay.app import PortexApp
from portex_pay.logging import (
    REDACTED,
    configure_logging,
    flush_logs,
    redact,
    register_secret,
)
from tests.conftest import DATA_KEYS, PAYLOAD_SECRET, TestApp, stored_secret
from tests.integration.helpers import pay_request
from tests.unit.test_logging import QUERY_ID, init_data

_LIBRARY_LOGGERS = ("grpc", "asyncpg", "aiohttp", "aiohttp.access")


@contextlib.contextmanager
def rendered_logs(capfd: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """The service's logging set-up (`configure_logging("json", "debug")`) for the duration;
    yields a function returning everything written to stdout and stderr so far."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_levels = {name: logging.getLogger(name).level for name in _LIBRARY_LOGGERS}
    was_configured, saved_config = structlog.is_configured(), structlog.get_config()
    capfd.readouterr()  # what came before is not ours to judge
    configure_logging("json", "debug")
    # A logger first used now must not keep this configuration for the rest of the session.
    structlog.configure(cache_logger_on_first_use=False)
    written: list[str] = []

    def read() -> str:
        flush_logs()  # info lines are written at the end of the loop's pass
        captured = capfd.readouterr()
        written.append(captured.out + captured.err)
        return "".join(written)

    try:
        yield read
    finally:
        read()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
        if was_configured:
            structlog.configure(**saved_config)
        else:
            structlog.reset_defaults()


def json_lines(output: str) -> list[dict[str, Any]]:
    lines = []
    for text in output.splitlines():
        with contextlib.suppress(ValueError):
            line = json.loads(text)
            if isinstance(line, dict):
                lines.append(line)
    return lines


class _Records(logging.Handler):
    """The raw records of one logger, as they are before any formatting (what aiohttp wrote)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        formatter = logging.Formatter()
        return "\n".join(formatter.format(record) for record in self.records)


@contextlib.contextmanager
def raw_records(name: str) -> Iterator[_Records]:
    handler = _Records()
    logging.getLogger(name).addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger(name).removeHandler(handler)


async def raw_request(port: int | None, request_line: bytes, headers: list[bytes]) -> bytes:
    """Sends a request as bytes (aiohttp's client would refuse to send some of these) and
    returns the status line of the answer."""
    assert port, "the service is not listening"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = b"\r\n".join([request_line, b"Host: 127.0.0.1", *headers, b"Content-Length: 2"])
        writer.write(head + b"\r\n\r\n{}")
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 5.0)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def webhook_secret(service: PortexApp, app: TestApp) -> str:
    return await stored_secret(service.pool, app.id, "webhook_secret")


async def signing_secret(service: PortexApp, app: TestApp) -> str:
    return await stored_secret(service.pool, app.id, "signing_secret")


def assert_refusals_are_warnings(output: str) -> None:
    """Requests aiohttp refused are the client's doing: no error line, and what is said of them
    (one line a minute per address) is a warning naming the error's type."""
    lines = json_lines(output)
    assert [line for line in lines if line.get("level") in ("error", "critical")] == []
    refused = [line for line in lines if line.get("event") == "malformed request refused"]
    assert all(line["level"] == "warning" for line in refused)
    assert all(line["error"] in ("LineTooLong", "BadHttpMessage") for line in refused)


async def test_an_over_long_webhook_secret_header_reaches_no_log(
    service: PortexApp, make_app: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    app: TestApp = await make_app()
    secret = await webhook_secret(service, app)
    # Never registered anywhere: only the rules about aiohttp's echo stand between it and the log.
    stranger = secrets.token_urlsafe(32)
    request_line = f"POST /telegram/webhook/{app.id} HTTP/1.1".encode()
    with rendered_logs(capfd) as read, raw_records("aiohttp.server") as raw:
        for value in (secret, stranger):
            header = f"X-Telegram-Bot-Api-Secret-Token: {value}{'x' * 9000}".encode()
            status = await raw_request(service.http_port, request_line, [header])
            assert status.startswith(b"HTTP/1.") and b" 400 " in status
        output = read()
    # aiohttp quotes the start of such a value in what it logs: nothing of it reaches a line,
    # since the refusal is logged by the HTTP door as a warning naming only the error's type.
    assert raw.records == []
    assert_refusals_are_warnings(output)
    for value in (secret, stranger):
        assert value[:8] not in output


async def test_init_data_in_a_refused_request_reaches_no_log(
    service: PortexApp, make_app: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    app: TestApp = await make_app()
    data, digest = init_data()
    webhook = f"/telegram/webhook/{app.id}"
    requests = [
        # Over-long: aiohttp quotes the value's first 100 bytes, without the header's name.
        (f"POST {webhook} HTTP/1.1", f"X-Tg-InitData: {data}{'x' * 9000}"),
        # A control character in the value: llhttp quotes the whole header line.
        (f"POST {webhook} HTTP/1.1", f"X-Tg-InitData: {data}\x01"),
        # In the query string of an over-long request line.
        (f"POST {webhook}?tgWebAppData={quote(data, safe='')}&pad={'x' * 9000} HTTP/1.1", ""),
    ]
    with rendered_logs(capfd) as read, raw_records("aiohttp.server") as raw:
        for request_line, header in requests:
            headers = [header.encode("latin-1")] if header else []
            status = await raw_request(service.http_port, request_line.encode(), headers)
            assert b" 400 " in status
        output = read()
    assert raw.records == []
    assert_refusals_are_warnings(output)
    assert QUERY_ID not in output
    assert digest not in output
    assert "279058397" not in output  # the user's id, from the user field


async def test_init_data_in_headers_of_an_access_log_line_reaches_no_log(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """aiohttp's own access logger, with a format that logs the init data header and the
    Referer (a Mini App's URL carries init data in its fragment), over real HTTP."""
    data, digest = init_data()

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/app", page)
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("aiohttp.access"),
        access_log_format='%a "%r" %s "%{X-Tg-InitData}i" "%{Referer}i"',
        handle_signals=False,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        with rendered_logs(capfd) as read:
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    f"http://127.0.0.1:{port}/app",
                    params={"tgWebAppData": data},
                    headers={
                        "X-Tg-InitData": data,
                        "Referer": f"https://shop.example/#tgWebAppData={quote(data, safe='')}",
                    },
                ) as response,
            ):
                assert response.status == 200
            await asyncio.sleep(0.05)  # the access line is written after the response
            output = read()
    finally:
        await runner.cleanup()
    access = [line for line in json_lines(output) if line.get("logger") == "aiohttp.access"]
    assert len(access) == 1 and '"GET /app' in access[0]["event"]
    assert " 200 " in access[0]["event"]
    assert QUERY_ID not in output and digest not in output


async def test_callback_and_payload_secrets_planted_in_debug_lines_reach_no_log(
    service: PortexApp, make_app: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    app: TestApp = await make_app()  # loading the application registered its secrets
    signing = await signing_secret(service, app)
    webhook = await webhook_secret(service, app)
    register_secret(PAYLOAD_SECRET)  # as the entrypoint does with the settings' payload secret
    planted = (signing, webhook, PAYLOAD_SECRET)
    with rendered_logs(capfd) as read:
        log = structlog.get_logger("portex_pay.test")
        log.debug("signing callback", key=signing, context={"payload": [PAYLOAD_SECRET]})
        log.debug(f"webhook {webhook} and {signing[:20]}...")
        logging.getLogger("aiohttp.access").debug("sent %s with %s", signing, PAYLOAD_SECRET)
        logging.getLogger("asyncpg").debug("params %r", (webhook, signing))
        output = read()
    lines = json_lines(output)
    assert [line["logger"] for line in lines] == [
        "portex_pay.test",
        "portex_pay.test",
        "aiohttp.access",
        "asyncpg",
    ]
    assert all(line["level"] == "debug" and REDACTED in json.dumps(line) for line in lines)
    for secret in planted:
        assert secret[:8] not in output


async def test_loading_an_application_or_a_callback_registers_its_secrets(
    service: PortexApp, make_app: Any, stub: Any
) -> None:
    app: TestApp = await make_app()
    webhook, signing = await webhook_secret(service, app), await signing_secret(service, app)
    token_id, _, token_secret = app.bot_token.partition(":")
    with mock.patch.object(portex_logging, "_registry", portex_logging._SecretRegistry()):
        line = f"{webhook} {signing} {app.bot_token} bot_id={token_id}"
        assert redact(line) == f"{webhook} {signing} {REDACTED} bot_id={token_id}"
        loaded = await ApplicationRepository(service.pool, DATA_KEYS).get(UUID(app.id))
        assert loaded is not None
        # The bot id stays readable, the token's secret half does not.
        assert redact(line) == f"{REDACTED} {REDACTED} {token_id}:{REDACTED} bot_id={token_id}"
        assert redact(token_secret) == REDACTED  # the token's secret half, registered itself

    # Only this test's delivery is due (as the callback tests do, other ones are parked).
    await service.pool.execute(
        "UPDATE callback_deliveries SET next_attempt_at = 'infinity' WHERE state = 'pending'"
    )
    await stub.Pay(pay_request(callback_url="http://127.0.0.1:9/cb"), metadata=app.metadata)
    with mock.patch.object(portex_logging, "_registry", portex_logging._SecretRegistry()):
        assert redact(f"key {signing}") == f"key {signing}"
        claimed = await CallbackRepository(service.pool, DATA_KEYS).claim_due(10, 60.0)
        assert [str(c.application_id) for c in claimed] == [app.id]
        assert redact(f"key {signing}") == f"key {REDACTED}"


async def test_bot_tokens_in_proxy_paths_reach_no_log(
    service: PortexApp, make_app: Any, fake_telegram: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    """The Bot API proxy carries tokens in its paths: forwarded, refused and failed calls."""
    app: TestApp = await make_app()
    stranger = f"123456:{secrets.token_urlsafe(30)}"  # never registered anywhere
    base = f"http://127.0.0.1:{service.http_port}"
    fake_telegram.drop_connection("getMe", token=app.bot_token)
    with rendered_logs(capfd) as read:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/bot{app.bot_token}/getMe") as response:
                assert response.status == 502  # Telegram hung up: logged, without the URL
            async with http.post(f"{base}/bot{app.bot_token}/getMe") as response:
                assert response.status == 200
            async with http.post(f"{base}/bot{stranger}/getMe") as response:
                assert response.status == 401
            bad = {"Content-Type": "application/json"}
            async with http.post(
                f"{base}/bot{app.bot_token}/getUpdates", data=b"{", headers=bad
            ) as response:
                assert response.status == 400
        output = read()
    assert "proxy forward failed" in output  # the failure was logged, so this is not vacuous
    for token in (app.bot_token, stranger):
        assert token.partition(":")[2][:8] not in output
