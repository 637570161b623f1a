"""The Bot API proxy under hostile input (issue 16): a path that would leave `/bot{token}/` reaches
nothing at Telegram, whatever its encoding; bad input to the proxy's own methods is Telegram's 400
(or 413), never a 5xx; only an unavailable database is a 5xx (503).

Requests go out through tests/integration/raw_http.py, so that each path arrives as written
(`..`, `%2F`, backslashes kept). The fake Bot API records every request it receives
(`fake.requests`, before any routing), so "nothing reached Telegram" is checked at the source."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.api.http.botapi_proxy import add_bot_api_routes
from portex_pay.app import PortexApp
from portex_pay.domain.application import Application, Bot
from portex_pay.domain.telegram import ForwardRequest
from portex_pay.service.auth import BotTokenAuthenticator
from portex_pay.service.cache import ApplicationCache
from portex_pay.service.outage import StoreUnavailable
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp, new_bot_token
from tests.integration.raw_http import RawAnswer, send

NOT_FOUND = {"ok": False, "error_code": 404, "description": "Not Found"}
TOO_LARGE = {"ok": False, "error_code": 413, "description": "Request Entity Too Large"}
HOOK = "url=http%3A%2F%2F127.0.0.1%3A9%2Fhook"
USER = 7161


@pytest.fixture
async def shop(make_app) -> TestApp:
    """A bound bot in the service's default mode, with no webhook anywhere."""
    created: TestApp = await make_app()
    return created


@pytest.fixture
async def other(make_app) -> TestApp:
    created: TestApp = await make_app()
    return created


@pytest.fixture
def unbound(fake_telegram: FakeBotApi) -> str:
    """A bot Telegram knows and no application is bound to."""
    token = new_bot_token()
    fake_telegram.add_bot(token)
    return token


def bot_id(token: str) -> int:
    return int(token.partition(":")[0])


def reached(fake: FakeBotApi, since: int, *tokens: str) -> list[str]:
    """The requests the fake received since index `since` that name one of `tokens` or are not
    Bot API method or file paths at all (the control API, any other path); tokens masked."""
    found = []
    for request in fake.requests[since:]:
        path = request.path
        if any(token in path for token in tokens) or not path.startswith(("/bot", "/file/bot")):
            for number, token in enumerate(tokens):
                path = path.replace(token, f"<token {number}>")
            found.append(f"{request.method} {path}")
    return found


async def relay_webhook(service: PortexApp, token: str) -> str | None:
    found: str | None = await service.pool.fetchval(
        "SELECT webhook_url FROM relay_bots WHERE bot_id = $1", bot_id(token)
    )
    return found


async def proxy(service: PortexApp, target: str, **options: Any) -> RawAnswer:
    assert service.http_port is not None
    return await send(service.http_port, target, **options)


# --- 1: the path cannot leave /bot{token}/ ------------------------------------------------------

# One per encoding; {T} is the calling bot's token, {O} another bound bot's, {U} an unbound one's.
ESCAPES = {
    "%2F": "/bot{T}/x%2F..%2FsetWebhook?" + HOOK,
    "%2f": "/bot{T}/..%2fbot{T}%2fgetUpdates?offset=777",
    "%2E%2E": "/bot{T}/x/%2E%2E/setWebhook?" + HOOK,
    "%2e%2e": "/bot{T}/%2e%2e/bot{T}/getUpdates?offset=777",
    "%2e.": "/bot{T}/x/%2e./setWebhook?" + HOOK,
    "literal ..": "/bot{T}/../bot{T}/getUpdates?offset=777",
    "literal .. setWebhook": "/bot{T}/x/../setWebhook?" + HOOK,
    "literal . segment": "/bot{T}/./getUpdates?offset=777",
    "backslash ..\\": "/bot{T}/x\\..\\setWebhook?" + HOOK,
    "%5C": "/bot{T}/..%5C..%5C_fake%5Ccalls",
    "%5c setWebhook": "/bot{T}/x%5c..%5csetWebhook?" + HOOK,
    "double %252F": "/bot{T}/x%252F..%252FsetWebhook?" + HOOK,
    "double %252E%252E": "/bot{T}/%252E%252E%252Fbot{T}%252FgetUpdates?offset=777",
    "double %252e%252e%252f": "/bot{T}/%252e%252e%252fbot{T}%252fgetMe",
    "other bound token": "/bot{T}/..%2Fbot{O}%2FgetMe",
    "unbound token": "/bot{T}/..%2Fbot{U}%2FgetMe",
    "control API": "/bot{T}/..%2F..%2F_fake%2Fcalls",
    "control API, literal": "/bot{T}/../../_fake/calls",
    "file path %2F": "/file/bot{T}/..%2F..%2Fbot{T}%2FgetMe",
    "file path literal ..": "/file/bot{T}/../../bot{T}/getMe",
    "file path %2e%2e": "/file/bot{T}/documents/%2e%2e/%2e%2e/%2e%2e/_fake/calls",
    "file path double": "/file/bot{T}/%252e%252e%252f%252e%252e%252fbot{T}%252fgetMe",
    "file path backslash": "/file/bot{T}/..\\..\\_fake\\calls",
    "file path NUL": "/file/bot{T}/documents/file_1.pdf%00",
    "method with NUL": "/bot{T}/getUpdates%00?offset=777",
    "method with ;": "/bot{T}/getMe;x",
    "empty segment": "/bot{T}//getMe",
    "two segments": "/bot{T}/getMe/x",
    "non-ASCII method": "/bot{T}/get%C4%B0pdates",
}


@pytest.mark.parametrize("template", ESCAPES.values(), ids=ESCAPES.keys())
async def test_a_path_leaving_the_bots_own_methods_reaches_nothing(
    template: str,
    service: PortexApp,
    shop: TestApp,
    other: TestApp,
    unbound: str,
    fake_telegram: FakeBotApi,
) -> None:
    target = template.format(T=shop.bot_token, O=other.bot_token, U=unbound)
    since = len(fake_telegram.requests)
    answer = await proxy(service, target)
    assert (answer.status, answer.json()) == (404, NOT_FOUND)
    assert reached(fake_telegram, since, shop.bot_token, other.bot_token, unbound) == []
    assert fake_telegram.calls_for("setWebhook", shop.bot_token) == []
    assert fake_telegram.calls_for("getUpdates", shop.bot_token) == []
    assert await relay_webhook(service, shop.bot_token) is None


@pytest.mark.parametrize(
    "method",
    ["getUpdates", "GETUPDATES", "getupdates", "gEtUpDaTeS", "%67etUpdates", "test/getUpdates"],
)
async def test_the_own_methods_are_recognised_after_decoding_and_case_folding(
    method: str, service: PortexApp, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    since = len(fake_telegram.requests)
    answer = await proxy(service, f"/bot{shop.bot_token}/{method}?timeout=0")
    assert (answer.status, answer.json()) == (200, {"ok": True, "result": []})
    assert reached(fake_telegram, since, shop.bot_token) == []


async def test_other_methods_go_to_the_bots_own_path_with_the_query_as_sent(
    service: PortexApp, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    await fake_telegram.send_user_message(shop.bot_token, USER, "hi")  # opens the chat
    since = len(fake_telegram.requests)
    # %2B and %26 stay what they are: a plus and an ampersand inside the text.
    target = f"/bot{shop.bot_token}/SendMessage?chat_id={USER}&text=1%2B1%3D2%20%26%20so%3F"
    answer = await proxy(service, target, method="POST")
    assert answer.status == 200 and answer.json()["result"]["text"] == "1+1=2 & so?"
    [request] = fake_telegram.requests[since:]
    assert (request.method, request.path) == ("POST", target)


async def test_a_file_download_goes_to_the_bots_own_file_path(
    service: PortexApp, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    since = len(fake_telegram.requests)
    answer = await proxy(service, f"/file/bot{shop.bot_token}/documents/file_0.pdf")
    assert answer.status == 404  # the fake has no such file: Telegram's answer, as it is
    assert [(r.method, r.path) for r in fake_telegram.requests[since:]] == [
        ("GET", f"/file/bot{shop.bot_token}/documents/file_0.pdf")
    ]


# --- 2: bad input to the own methods is a 400 or a 413, never a 5xx ----------------------------


def bad_request(description: str) -> dict[str, Any]:
    return {"ok": False, "error_code": 400, "description": f"Bad Request: {description}"}


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data; boundary=x"
BAD_BODY = "can't parse the request body"
NOT_UTF8 = "strings must be encoded in UTF-8"
BAD_URL = "bad webhook: invalid webhook URL specified"
A_URL = "https://bot.example/hook"

# (method, query, content type, body, the description of the 400)
BAD_INPUT: dict[str, tuple[str, str, str | None, bytes | None, str]] = {
    "empty multipart": ("getUpdates", "", MULTIPART, b"", BAD_BODY),
    "multipart without a boundary": ("getUpdates", "", "multipart/form-data", b"x", BAD_BODY),
    "multipart cut off": ("getUpdates", "", MULTIPART, b"--x\r\nContent-Dispo", BAD_BODY),
    "multipart part not UTF-8": (
        "getUpdates",
        "",
        MULTIPART,
        b'--x\r\nContent-Disposition: form-data; name="offset"\r\n\r\n\xff\r\n--x--\r\n',
        NOT_UTF8,
    ),
    "form not UTF-8": ("getUpdates", "", FORM, b"offset=\xff", NOT_UTF8),
    "form of an unknown charset": (
        "getUpdates",
        "",
        f"{FORM}; charset=nope",
        b"offset=1",
        BAD_BODY,
    ),
    "form %ff": ("getUpdates", "", FORM, b"offset=%ff", "invalid offset specified"),
    "offset under int64": (
        "getUpdates",
        "offset=-9223372036854775809",
        None,
        None,
        "invalid offset specified",
    ),
    "offset over int64": (
        "getUpdates",
        "offset=9223372036854775808",
        None,
        None,
        "invalid offset specified",
    ),
    "offset of 5000 digits": (
        "getUpdates",
        "offset=" + "9" * 5000,
        None,
        None,
        "invalid offset specified",
    ),
    "limit over int64": ("getUpdates", "limit=1" + "0" * 30, None, None, "invalid limit specified"),
    "timeout under int64": (
        "getUpdates",
        "timeout=-1" + "0" * 30,
        None,
        None,
        "invalid timeout specified",
    ),
    "query offset %ff": ("getUpdates", "offset=%ff", None, None, "invalid offset specified"),
    "JSON offset a list": ("getUpdates", "", JSON, b'{"offset": [1]}', "invalid offset specified"),
    "JSON offset an object": (
        "getUpdates",
        "",
        JSON,
        b'{"offset": {}}',
        "invalid offset specified",
    ),
    "JSON offset infinite": (
        "getUpdates",
        "",
        JSON,
        b'{"offset": 1e400}',
        "invalid offset specified",
    ),
    "JSON offset NaN": ("getUpdates", "", JSON, b'{"offset": NaN}', "invalid offset specified"),
    "JSON a string with a lone surrogate": (
        "getUpdates",
        "",
        JSON,
        b'"\\ud800"',
        "can't parse JSON object",
    ),
    "JSON not UTF-8": ("getUpdates", "", JSON, b'{"offset": "\xff"}', "can't parse JSON object"),
    "url with an open bracket": ("setWebhook", "url=https%3A%2F%2F%5B%3A%3A1", None, None, BAD_URL),
    "url with NUL": ("setWebhook", "", JSON, b'{"url": "https://bot.example/\\u0000"}', BAD_URL),
    "url with NUL, query": (
        "setWebhook",
        "url=https%3A%2F%2Fbot.example%2F%00",
        None,
        None,
        BAD_URL,
    ),
    "url with a control character": (
        "setWebhook",
        "",
        JSON,
        b'{"url": "https://bot.example/\\u0007"}',
        BAD_URL,
    ),
    "url with a lone surrogate": (
        "setWebhook",
        "",
        JSON,
        b'{"url": "https://bot.example/\\udc80"}',
        BAD_URL,
    ),
    "url with a space": ("setWebhook", "", JSON, b'{"url": "https://bot.example/a b"}', BAD_URL),
    "url too long": (
        "setWebhook",
        "",
        JSON,
        json.dumps({"url": A_URL + "/" + "a" * 2048}).encode(),
        BAD_URL,
    ),
    "url with a bad port": (
        "setWebhook",
        "url=https%3A%2F%2Fbot.example%3A99999%2F",
        None,
        None,
        BAD_URL,
    ),
    "url a number": ("setWebhook", "", JSON, b'{"url": 5}', BAD_URL),
    "url an object": ("setWebhook", "", JSON, b'{"url": {}}', BAD_URL),
    "url false": ("setWebhook", "", JSON, b'{"url": false}', BAD_URL),
    "secret_token a number": (
        "setWebhook",
        "",
        JSON,
        json.dumps({"url": A_URL, "secret_token": 5}).encode(),
        "secret token contains unallowed characters",
    ),
    "secret_token not UTF-8": (
        "setWebhook",
        "url=https%3A%2F%2Fbot.example%2F&secret_token=%ff",
        None,
        None,
        "secret token contains unallowed characters",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUT.values(), ids=BAD_INPUT.keys())
async def test_bad_input_to_the_own_methods_is_telegrams_400(
    case: tuple[str, str, str | None, bytes | None, str],
    service: PortexApp,
    shop: TestApp,
    fake_telegram: FakeBotApi,
) -> None:
    method, query, content_type, body, description = case
    since = len(fake_telegram.requests)
    headers = {"Content-Type": content_type} if content_type else {}
    target = f"/bot{shop.bot_token}/{method}" + (f"?{query}" if query else "")
    answer = await proxy(service, target, method="POST", headers=headers, body=body)
    assert (answer.status, answer.json()) == (400, bad_request(description))
    assert reached(fake_telegram, since, shop.bot_token) == []
    assert await relay_webhook(service, shop.bot_token) is None


@pytest.mark.parametrize("chunk", [True, False], ids=["chunked", "content-length"])
async def test_an_empty_multipart_body_is_400(
    chunk: bool, service: PortexApp, shop: TestApp
) -> None:
    answer = await proxy(
        service,
        f"/bot{shop.bot_token}/getUpdates",
        method="POST",
        headers={"Content-Type": MULTIPART},
        body=b"",
        chunk=chunk,
    )
    assert (answer.status, answer.json()) == (400, bad_request(BAD_BODY))


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (JSON, b'{"offset": "' + b"1" * (2 << 20) + b'"}'),
        (FORM, b"offset=" + b"1" * (2 << 20)),
        (
            MULTIPART,
            b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n'
            + b"1" * (2 << 20)
            + b"\r\n--x--\r\n",
        ),
    ],
    ids=["json", "form", "multipart"],
)
@pytest.mark.parametrize("chunk", [True, False], ids=["chunked", "content-length"])
async def test_a_body_over_1_mib_is_413(
    content_type: str, body: bytes, chunk: bool, service: PortexApp, shop: TestApp
) -> None:
    answer = await proxy(
        service,
        f"/bot{shop.bot_token}/getUpdates",
        method="POST",
        headers={"Content-Type": content_type},
        body=body,
        chunk=chunk,
    )
    assert (answer.status, answer.json()) == (413, TOO_LARGE)


async def test_odd_but_harmless_input_is_served(service: PortexApp, shop: TestApp) -> None:
    """A file part (setWebhook's certificate), a flag of the wrong type: ignored, as Telegram
    ignores what it does not use."""
    multipart = (
        b'--x\r\nContent-Disposition: form-data; name="timeout"\r\n\r\n0\r\n'
        b'--x\r\nContent-Disposition: form-data; name="certificate"; filename="c.pem"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n\x00\xff\x00\r\n--x--\r\n"
    )
    base = f"/bot{shop.bot_token}"
    answer = await proxy(
        service,
        f"{base}/getUpdates",
        method="POST",
        headers={"Content-Type": MULTIPART},
        body=multipart,
    )
    assert (answer.status, answer.json()) == (200, {"ok": True, "result": []})
    answer = await proxy(
        service,
        f"{base}/deleteWebhook",
        method="POST",
        headers={"Content-Type": JSON},
        body=b'{"drop_pending_updates": {}}',
    )
    assert answer.status == 200 and answer.json()["result"] is True


# --- 2: a 5xx only for an unavailable database -------------------------------------------------


class _Endpoint:
    """The Bot API of a proxy that must never forward anything in these tests."""

    def forward(self, request: ForwardRequest, *, read_timeout: float) -> Any:
        raise AssertionError("nothing is forwarded here")


class _FailingRelay:
    """A relay whose every update method fails with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def get_updates(self, *_args: object) -> list[bytes]:
        raise self.error

    async def set_webhook(self, *_args: object) -> None:
        raise self.error

    async def delete_webhook(self, *_args: object) -> None:
        raise self.error

    async def webhook_info(self, *_args: object) -> dict[str, Any]:
        raise self.error


@contextlib.asynccontextmanager
async def _proxy_server(
    token: str, *, lookup_error: Exception | None = None, relay_error: Exception | None = None
) -> AsyncIterator[int]:
    application = Application(id=uuid.uuid4(), name="x", bot=Bot(bot_id(token), token))

    async def load(found_id: int) -> Application | None:
        if lookup_error is not None:
            raise lookup_error
        return application if found_id == application.bot_id else None

    app = web.Application()
    add_bot_api_routes(
        app,
        bot_tokens=BotTokenAuthenticator(ApplicationCache(load, 60.0)),
        relay=_FailingRelay(relay_error or RuntimeError("unused")),  # type: ignore[arg-type]
        bot_api=_Endpoint(),
        forward_timeout=1.0,
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        assert server.port is not None
        yield server.port
    finally:
        await server.close()


SERVICE_UNAVAILABLE = {
    "ok": False,
    "error_code": 503,
    "description": "Service Unavailable: the database is unavailable, try again later",
}


@pytest.mark.parametrize("method", ["getMe", "getUpdates", "setWebhook", "getWebhookInfo"])
async def test_an_unavailable_database_is_503_for_the_lookup(method: str) -> None:
    token = new_bot_token()
    async with _proxy_server(token, lookup_error=StoreUnavailable("down")) as port:
        answer = await send(port, f"/bot{token}/{method}")
        assert (answer.status, answer.json()) == (503, SERVICE_UNAVAILABLE)


@pytest.mark.parametrize("method", ["getUpdates", "setWebhook", "deleteWebhook", "getWebhookInfo"])
async def test_an_unavailable_database_is_503_for_the_own_methods(method: str) -> None:
    token = new_bot_token()
    async with _proxy_server(token, relay_error=StoreUnavailable("down")) as port:
        answer = await send(port, f"/bot{token}/{method}?url=https%3A%2F%2Fbot.example%2F")
        assert (answer.status, answer.json()) == (503, SERVICE_UNAVAILABLE)


async def test_a_bug_is_500_and_logged_without_the_token() -> None:
    token = new_bot_token()
    for error, where in ((KeyError("a bug"), "relay_error"), (KeyError("a bug"), "lookup_error")):
        async with _proxy_server(token, **{where: error}) as port:
            with structlog.testing.capture_logs() as logs:
                answer = await send(port, f"/bot{token}/getUpdates")
            assert answer.status == 500
            assert answer.json() == {
                "ok": False,
                "error_code": 500,
                "description": "Internal Server Error",
            }
            [entry] = [e for e in logs if e["log_level"] == "error"]
            assert entry["exc_info"] is error and entry["bot_id"] == bot_id(token)
            assert token not in repr(logs) and token.partition(":")[2] not in repr(logs)


# --- 3: Telegram failing mid-way --------------------------------------------------------------

PARTIAL_BODY = b'{"ok":true,"res'


class _Upstream:
    """A Bot API that fails on purpose, over real TCP: `stall` never answers, `cut` answers a
    status, headers and part of the body, then closes, `stall-body` sends the head and no body.
    Records the request lines it received."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._clients: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._clients:  # those still stalling: the proxy gave up on them
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.append(writer)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            self.requests.append((await reader.readuntil(b"\r\n")).strip())
            await reader.readuntil(b"\r\n\r\n")
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            )
            if self.mode == "cut":
                writer.write(head + PARTIAL_BODY)
                await writer.drain()
            elif self.mode == "stall-body":
                writer.write(head)
                await writer.drain()
                await reader.read()  # until the proxy gives up and closes
            else:
                await reader.read()
        writer.close()


@contextlib.asynccontextmanager
async def _forwarding_proxy(
    token: str, upstream: _Upstream, *, base_query: str = ""
) -> AsyncIterator[int]:
    """The proxy alone, forwarding through the real Bot API client to `upstream` (its URL with
    `base_query`), with a read timeout of half a second."""
    application = Application(id=uuid.uuid4(), name="x", bot=Bot(bot_id(token), token))

    async def load(found_id: int) -> Application | None:
        return application if found_id == application.bot_id else None

    session = await new_session()
    app = web.Application()
    async with upstream as upstream_port:
        add_bot_api_routes(
            app,
            bot_tokens=BotTokenAuthenticator(ApplicationCache(load, 60.0)),
            relay=_FailingRelay(RuntimeError("unused")),  # type: ignore[arg-type]
            bot_api=BotApiClient(session, f"http://127.0.0.1:{upstream_port}/{base_query}", 1.0),
            forward_timeout=0.5,
        )
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            assert server.port is not None
            yield server.port
        finally:
            await server.close()
            await session.close()


BAD_GATEWAY = {
    "ok": False,
    "error_code": 502,
    "description": "Bad Gateway: Telegram did not answer",
}


async def test_telegram_not_answering_in_time_is_502_without_the_token_logged() -> None:
    token = new_bot_token()
    async with _forwarding_proxy(token, _Upstream("stall")) as port:
        with structlog.testing.capture_logs() as logs:
            answer = await send(port, f"/bot{token}/getMe", timeout=10.0)
    assert (answer.status, answer.json()) == (502, BAD_GATEWAY)
    [entry] = [e for e in logs if e["event"] == "proxy forward failed"]
    assert (entry["log_level"], entry["bot_id"]) == ("warning", bot_id(token))
    assert token.partition(":")[2] not in repr(logs)


@pytest.mark.parametrize("mode", ["cut", "stall-body"])
async def test_an_answer_cut_off_by_telegram_is_cut_off_for_the_bot(mode: str) -> None:
    """The status and headers went out already: the bot sees its connection end early, never a
    whole answer."""
    token = new_bot_token()
    async with _forwarding_proxy(token, _Upstream(mode)) as port:
        with structlog.testing.capture_logs() as logs:
            answer = await send(port, f"/bot{token}/getMe", timeout=10.0)
    assert (answer.status, answer.headers["content-length"]) == (200, "100")
    assert answer.body == (PARTIAL_BODY if mode == "cut" else b"")
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["proxy forward failed"]
    assert token.partition(":")[2] not in repr(logs)


async def test_an_endpoint_that_would_send_elsewhere_sends_nothing() -> None:
    """A Bot API URL with a query of its own cannot hold the bot's own path as checked: 404,
    an error logged, nothing sent."""
    token = new_bot_token()
    upstream = _Upstream("cut")
    async with _forwarding_proxy(token, upstream, base_query="?via=proxy") as port:
        with structlog.testing.capture_logs() as logs:
            answer = await send(port, f"/bot{token}/getMe")
    assert (answer.status, answer.json()) == (404, NOT_FOUND)
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["proxy target refused"]
    assert upstream.requests == []
