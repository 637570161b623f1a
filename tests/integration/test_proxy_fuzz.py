"""Fuzz of the Bot API proxy (issue 16): a few hundred hostile requests from one bound bot, built
from the pieces that broke it (dot segments plain, percent-encoded and double-encoded, encoded
slashes and backslashes, NUL, `;`, `?`, `#`, other tokens, the control API, odd-case method
names, `test/`, non-ASCII) and bodies of every content type with garbage in them, sent as written
(tests/integration/raw_http.py) to the real service over real HTTP.

For every request: no 5xx; the fake Bot API received nothing but `/bot{token}/{method}` and
`/file/bot{token}/{file path}` of the calling bot with a legal method name or file path (never
another token, the control API, any other path, nor getUpdates, setWebhook or deleteWebhook,
which the proxy serves itself); a refused request (4xx) changed nothing of the bot's relay. After
all of them: no webhook was set at the fake for the bot."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import PortexApp
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp, new_bot_token
from tests.integration.raw_http import send

EXAMPLES = 300
OWN_AT_TELEGRAM = {"getupdates", "setwebhook", "deletewebhook"}  # never forwarded
_LEGAL_METHOD = re.compile(r"/bot(?P<token>[^/]+)/(?:test/)?[A-Za-z][A-Za-z0-9_]*")
_LEGAL_FILE = re.compile(r"/file/bot(?P<token>[^/]+)(?:/[A-Za-z0-9_.-]+)+")

# --- requests -----------------------------------------------------------------------------------

# {T}: the calling bot's token; {Tc}: the same with its colon percent-encoded; {O}: another bound
# bot's; {U}: a bot's that Telegram knows and no application is bound to.
PREFIXES = [
    *["/bot{T}/"] * 6,
    *["/file/bot{T}/"] * 2,
    "/bot{Tc}/",
    "/file/bot{T}/test/",
    "/bot{T}/test/",
    "/bot{T}x/",
    "/bot/",
    "//bot{T}/",
    "/BOT{T}/",
    "/bot{T}",
    "/%62ot{T}/",
]
PIECES = [
    *["..", ".", "%2e%2e", "%2E%2E", "%2e.", ".%2E", "...", "%2e"],
    *["%2f", "%2F", "%5c", "%5C", "\\", "//", "%252e%252e%252f", "%252F", "%252E%252E", "%25"],
    *["%00", "%0a", "%0D%0A", "%09", "%20", " ", ";", ";x=1", "?", "#", "%3F", "%23", "%"],
    *["%zz", "%ff", "%C0%AF", "%e2%80%ae", "é", "%C3%A9", "ｇｅｔＭｅ", "İ", "get%C4%B0pdates"],
    *["bot{T}", "bot{O}", "bot{U}", "file", "file/bot{T}", "_fake", "calls", "test", "x"],
    *["getMe", "GETME", "getme", "getUpdates", "GETUPDATES", "getupdates", "GetUpdates"],
    *["getUpdates%00", "%67etUpdates", "setWebhook", "SETWEBHOOK", "setwebhook"],
    *["deleteWebhook", "DELETEWEBHOOK", "getWebhookInfo", "getwebhookinfo", "sendMessage"],
    *["getFile", "noSuchMethod", "get_me", "1getMe", "getMe.json", "documents", "file_1.pdf"],
]
DEEP = "[" * 1000 + "]" * 1000  # allowed_updates nested 1,000 deep, as text
QUERY_PARTS = [
    *["offset=-9223372036854775809", "offset=9223372036854775808", "offset=%ff", "offset=-1"],
    *["offset=1e5", "offset=" + "9" * 400, "offset=777", "offset=%00", "offset=", "offset"],
    *["limit=0", "limit=99999999999999999999", "limit=-5", "timeout=-1", "timeout=abc"],
    *["timeout=-99999999999999999999", "timeout=0", "timeout=%ff"],
    *["url=http%3A%2F%2F127.0.0.1%3A9%2Fhook", "url=https%3A%2F%2F%5B%3A%3A1", "url=%00"],
    *["url=http%3A%2F%2Fh%3A99999%2F", "url=https%3A%2F%2Fa%2F%ED%A0%80", "url=%ff", "url="],
    *["secret_token=%ff", "secret_token=abc", "secret_token=a%00", "drop_pending_updates=1"],
    *["allowed_updates=%5B%5D", "allowed_updates=garbage", "allowed_updates=%5B%22message%22%5D"],
    "allowed_updates=" + quote(DEEP),
    *["%", "=", "&", "a=%", "a=%zz", "chat_id=1&text=hi", "text=%E2%80%AE", "a=b;c", "+=+"],
]
# The own methods' parameters, each with values that broke something or nearly did; any other
# name, or now and then any JSON value, comes from `json_values`.
FIELD_VALUES: dict[str, list[Any]] = {
    "offset": [
        *[2**63, -(2**63) - 1, 2**63 - 1, -(2**63), 2**64, 1e400, -1e400, 1.5, "1.5", "1_0"],
        *["9223372036854775808", "-9223372036854775809", "9" * 5000, "", " 7 ", "\x00", [1], {}],
        *[True, "\ud800", "١٢"],
    ],
    "limit": [0, -1, 101, 2**64, "99999999999999999999", 1e400, "abc", [], None],
    # Never a positive number: a long poll would only make the run slow.
    "timeout": [None, -1, 0, "0", "-5", "abc", 1e400, -1e400, [1], {}, 2**64, "9" * 30, "\ud800"],
    "allowed_updates": [
        *[[], ["message"], ["no_such_kind"], ["\ud800"], ["\x00"], "[]", '["message"]', "[1]"],
        *[DEEP, [[[["message"]]]], "not json", 5, {"a": 1}, "\ud800", ["message"] * 100],
    ],
    "url": [
        *["http://127.0.0.1:9/hook", "https://[::1", "https://[::1]:99999/", "http://h:x/"],
        *["https://bot.example/\x00", "https://bot.example/\ud800", "https://bot.example/ a"],
        *["https://bot.example/" + "a" * 3000, "javascript:x", "//h/", "http://", "\u202e", 5],
        *[{}, [], False, True, 0, None, "", "https://bot.example/\u2028"],
    ],
    "secret_token": ["abc", "a" * 257, "\ud800", "a b", "\x00", 5, 0, None, "", [], "é"],
    "drop_pending_updates": [{}, [], "true", "\ud800", 1, None, "yes", 1e400],
}
PARAM_NAMES = [*FIELD_VALUES, "max_connections", "certificate", "chat_id", "text", ""]
ODD_TEXT = [
    *["\ud800", "a\udc80b", "\x00", "http://127.0.0.1:9/\x00", "http://127.0.0.1:9/hook"],
    *["https://[::1", "https://bot.example/" + "a" * 3000, "https://bot.example/ a", "\u202e"],
    *["9223372036854775808", "-9223372036854775809", "1e400", "NaN", "[]", "{}", DEEP],
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(ODD_TEXT),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def params(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(
        st.lists(st.sampled_from(PARAM_NAMES) | st.text(max_size=6), max_size=4, unique=True)
    )
    found: dict[str, Any] = {}
    for name in names:
        odd = FIELD_VALUES.get(name)
        if odd is not None and (name == "timeout" or draw(st.integers(0, 3)) > 0):
            found[name] = draw(st.sampled_from(odd))
        else:
            found[name] = draw(json_values)
    return found


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _form(values: dict[str, Any]) -> bytes:
    pairs = [(key, _text(value)) for key, value in values.items()]
    return urlencode(pairs, encoding="utf-8", errors="surrogatepass").encode()


def _multipart(draw: st.DrawFn, values: dict[str, Any], boundary: str) -> bytes:
    out = b""
    for key, value in values.items():
        disposition = f'form-data; name="{key}"'
        if draw(st.booleans()):
            disposition += draw(st.sampled_from(['; filename="f.pem"', "; filename=", "; x"]))
        headers = [f"Content-Disposition: {disposition}"]
        headers += draw(
            st.lists(
                st.sampled_from(
                    [
                        "Content-Type: text/plain; charset=nope",
                        "Content-Type: application/octet-stream",
                        "Content-Type: multipart/mixed; boundary=y",
                        "Content-Transfer-Encoding: base64",
                        "Content-Transfer-Encoding: nope",
                        "Content-Encoding: gzip",
                        "Content-Length: 3",
                        "X: " + "y" * 9000,
                    ]
                ),
                max_size=2,
            )
        )
        head = "\r\n".join(headers).encode("utf-8", "surrogatepass")
        body = _text(value).encode("utf-8", "surrogatepass")
        out += b"--" + boundary.encode() + b"\r\n" + head + b"\r\n\r\n" + body + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    if draw(st.booleans()):
        out = out[: draw(st.integers(0, len(out)))]
    return out


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str | None, bytes | None]:
    """A Content-Type (None: no header) and a body (None: none)."""
    kind = draw(
        st.sampled_from(["none", "json", "json", "form", "form", "multipart", "multipart", "raw"])
    )
    values = draw(params())
    if kind == "none":
        return None, None
    if kind == "json":
        content_type = draw(st.sampled_from(["application/json", "application/json; charset=x"]))
        body = draw(st.sampled_from(["object", "object", "garbage", "string", "deep", "big"]))
        if body == "object":
            return content_type, json.dumps(values).encode()
        if body == "string":
            return content_type, b'"\\ud800"'
        if body == "deep":
            return content_type, b'{"allowed_updates": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        if body == "big":
            return content_type, b'{"offset": "' + b"1" * (2 << 20) + b'"}'
        return content_type, draw(st.binary(max_size=64))
    if kind == "form":
        content_type = draw(
            st.sampled_from(
                [
                    "application/x-www-form-urlencoded",
                    "application/x-www-form-urlencoded; charset=nope",
                    "application/x-www-form-urlencoded; charset=utf-16",
                ]
            )
        )
        if draw(st.booleans()):
            return content_type, _form(values)
        return content_type, draw(st.binary(max_size=64))
    if kind == "multipart":
        boundary = draw(st.sampled_from(["x", "x", "", "é", "a" * 80, '"x"']))
        content_type = draw(
            st.sampled_from([f"multipart/form-data; boundary={boundary}", "multipart/form-data"])
        )
        if draw(st.integers(0, 4)) == 0:
            return content_type, draw(st.binary(max_size=64))
        return content_type, _multipart(draw, values, boundary)
    return draw(st.sampled_from(["text/plain", "application/octet-stream", "x/y; a=\x7f"])), (
        draw(st.binary(max_size=64))
    )


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    content_type: str | None = None
    body: bytes | None = None
    chunk: bool = False

    def describe(self, tokens: dict[str, str]) -> str:
        body = (self.body or b"")[:200]
        text = f"{self.method} {self.target} {self.content_type!r} {body!r}..."
        for name, token in tokens.items():
            text = text.replace(token, f"{{{name}}}")
        return f"{text} chunked={self.chunk}"


# Half the requests call a method by a clean path, so that their queries and bodies reach the
# proxy's own methods (and a forwarded one or two).
METHOD_PATHS = [
    *["getUpdates", "GETUPDATES", "getupdates", "test/getUpdates", "%67etUpdates"],
    *["setWebhook", "SETWEBHOOK", "setwebhook", "test/setWebhook", "set%57ebhook"],
    *["deleteWebhook", "deletewebhook", "getWebhookInfo", "GETWEBHOOKINFO", "getMe"],
]


@st.composite
def fuzzed_paths(draw: st.DrawFn) -> str:
    path = draw(st.sampled_from(PREFIXES))
    pieces = draw(st.lists(st.sampled_from(PIECES), min_size=1, max_size=5))
    separators = draw(st.lists(st.sampled_from(["/", "/", "/", ""]), min_size=len(pieces)))
    path += "".join(piece + separator for piece, separator in zip(pieces, separators, strict=False))
    return path.rstrip("/") if draw(st.booleans()) else path


@st.composite
def requests(draw: st.DrawFn) -> Request:
    path = draw(st.one_of(st.sampled_from(METHOD_PATHS).map("/bot{T}/".__add__), fuzzed_paths()))
    query = draw(st.lists(st.sampled_from(QUERY_PARTS), max_size=3))
    if query:
        path += "?" + "&".join(query)
    content_type, body = draw(bodies())
    return Request(
        draw(st.sampled_from(["GET", "POST", "POST", "POST", "HEAD", "PUT", "DELETE"])),
        path,
        content_type,
        body,
        body is not None and draw(st.booleans()),
    )


def _issue_examples(test: Any) -> Any:
    """Issue 16's own requests, tried on every run before the generated ones."""
    form = "application/x-www-form-urlencoded"
    cases = [
        Request("GET", "/bot{T}/x%2F..%2FsetWebhook?url=http%3A%2F%2F127.0.0.1%3A9%2Fhook"),
        Request("GET", "/bot{T}/..%2Fbot{T}%2FgetUpdates?offset=777"),
        Request("GET", "/bot{T}/../bot{T}/getUpdates"),
        Request("GET", "/bot{T}/..%2Fbot{O}%2FgetMe"),
        Request("GET", "/bot{T}/..%2F..%2F_fake%2Fcalls"),
        Request("GET", "/file/bot{T}/..%2F..%2Fbot{T}%2FgetMe"),
        Request("POST", "/bot{T}/getUpdates", "multipart/form-data; boundary=x", b"", chunk=True),
        Request("POST", "/bot{T}/getUpdates", form, b"offset=\xff"),
        Request("GET", "/bot{T}/getUpdates?offset=-9223372036854775809"),
        Request("GET", "/bot{T}/setWebhook?url=https%3A%2F%2F%5B%3A%3A1"),
        Request("POST", "/bot{T}/setWebhook", "application/json", b'{"url": "http://h/\\u0000"}'),
        Request("POST", "/bot{T}/getUpdates", "application/json", b"[" * (2 << 20), chunk=True),
        # Nested deeper than any recursion limit (Hypothesis raises the limit while it runs).
        Request("POST", "/bot{T}/getUpdates", form, b"allowed_updates=" + b"%5B" * 50_000),
    ]
    for case in reversed(cases):
        test = example(request=case)(test)
    return test


# --- the checks ---------------------------------------------------------------------------------


async def _relay_state(service: PortexApp, bot_id: int) -> tuple[Any, ...] | None:
    row = await service.pool.fetchrow(
        """
        SELECT allowed_updates, confirmed_offset, poll_generation, webhook_url, webhook_secret
        FROM relay_bots WHERE bot_id = $1
        """,
        bot_id,
    )
    return None if row is None else tuple(row)


def _strays(fake: FakeBotApi, since: int, caller: str, others: list[str]) -> list[str]:
    """What the fake received since `since` that the proxy must never send: anything naming
    another token, any path that is not a Bot API method or file path, a method of the caller's
    that is not a legal name or that the proxy serves itself."""
    wrong = []
    for request in fake.requests[since:]:
        path = request.path.partition("?")[0]
        if any(token in path for token in others):
            wrong.append(path)
            continue
        if caller not in path and path.startswith(("/bot", "/file/bot")):
            continue  # another test's bot, by its own calls (the service's background work)
        method = _LEGAL_METHOD.fullmatch(path)
        legal = method or _LEGAL_FILE.fullmatch(path)
        if (
            legal is None
            or legal["token"] != caller
            or (method and path.rpartition("/")[2].lower() in OWN_AT_TELEGRAM)
            or any(segment in (".", "..") for segment in path.split("/"))
        ):
            wrong.append(path)
    return wrong


async def _check(
    service: PortexApp, fake: FakeBotApi, tokens: dict[str, str], request: Request
) -> int:
    caller = tokens["T"]
    others = [tokens["O"], tokens["U"]]
    bot_id = int(caller.partition(":")[0])
    since = len(fake.requests)
    before = await _relay_state(service, bot_id)
    target = request.target.format(**tokens)
    headers = {"Content-Type": request.content_type} if request.content_type else {}
    assert service.http_port is not None
    answer = await send(
        service.http_port,
        target,
        method=request.method,
        headers=headers,
        body=request.body,
        chunk=request.chunk,
        timeout=10.0,
    )
    what = request.describe(tokens)
    assert answer.status < 500, f"{answer.status} {answer.body[:300]!r} for {what}"
    strays = [path.replace(caller, "{T}") for path in _strays(fake, since, caller, others)]
    assert not strays, f"reached {strays} for {what}"
    if answer.status >= 400:
        assert await _relay_state(service, bot_id) == before, f"refused, yet changed: {what}"
    return answer.status


async def test_no_request_to_the_proxy_gets_a_5xx_or_reaches_anything_but_the_bots_methods(
    service: PortexApp, make_app, fake_telegram: FakeBotApi
) -> None:
    shop: TestApp = await make_app()
    other: TestApp = await make_app()
    unbound = new_bot_token()
    fake_telegram.add_bot(unbound)
    bot_id, _, secret = shop.bot_token.partition(":")
    tokens = {
        "T": shop.bot_token,
        "Tc": f"{bot_id}%3A{secret}",
        "O": other.bot_token,
        "U": unbound,
    }
    loop = asyncio.get_running_loop()
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(request=requests())
    @_issue_examples
    def property_holds(request: Request) -> None:
        check = _check(service, fake_telegram, tokens, request)
        statuses[asyncio.run_coroutine_threadsafe(check, loop).result(timeout=30)] += 1

    # Hypothesis drives a synchronous function; it runs in a worker thread and hands each request
    # to the session loop, which serves the in-process service.
    await asyncio.to_thread(property_holds)

    # The run reached the own methods (200, 400), the refusals (404) and no 5xx.
    assert statuses.total() >= EXAMPLES and {200, 400, 404} <= statuses.keys(), statuses
    for token in (shop.bot_token, other.bot_token, unbound):
        for method in OWN_AT_TELEGRAM:
            assert fake_telegram.calls_for(method, token) == [], method
    session = await new_session()
    try:
        info = await BotApiClient(session, fake_telegram.base_url, 5.0).call(
            shop.bot_token, "getWebhookInfo", {}
        )
    finally:
        await session.close()
    assert info["url"] == ""
