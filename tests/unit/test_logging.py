"""Logging: one JSON pipeline for our logs and the libraries', with secrets redacted."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import pty
import secrets
import string
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock
from urllib.parse import quote, urlencode

import pytest
import structlog
from aiohttp.http_exceptions import LineTooLong
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from portex_pay import logging as portex_logging
from portex_pay.logging import (
    REDACTED,
    OwnText,
    RateLimitedWarnings,
    configure_logging,
    redact,
    redact_event,
    register_secret,
    register_secrets,
)

TOKEN = "123456789:AAH8kLmN0pQrStUvWxYz_abcdefghijklmn"
KEY = "ppk_Zx9yW8vU7tS6rQ5pO4nM3lK2jI1hG0fE"
BASE64URL = string.ascii_letters + string.digits + "-_"


def test_redact_removes_bot_tokens_api_keys_and_bearer_values() -> None:
    text = redact(f"POST https://api.telegram.org/bot{TOKEN}/getMe key={KEY} Bearer abc.def")
    assert TOKEN not in text
    assert KEY not in text
    assert "abc.def" not in text
    assert "getMe" in text


def test_library_and_structlog_lines_are_json_without_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "info")
    try:
        structlog.get_logger("portex_pay.test").info("calling", url=f"/bot{TOKEN}/getMe")
        logging.getLogger("aiohttp.client").warning("failed %s", f"/bot{TOKEN}/x key {KEY}")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert [line["event"].split()[0] for line in lines] == ["calling", "failed"]
    assert lines[1]["logger"] == "aiohttp.client"
    assert all(TOKEN not in json.dumps(line) and KEY not in json.dumps(line) for line in lines)


def test_a_line_of_a_disabled_level_is_dropped_before_any_processor_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls: list[str] = []

    def counting(_logger: Any, method: str, event_dict: Any) -> Any:
        calls.append(method)
        return event_dict

    configure_logging("json", "info")
    structlog.get_config()["processors"].insert(0, counting)
    try:
        log = structlog.get_logger("portex_pay.test")
        log.debug("not wanted", value="x")
        log.info("wanted", value="y")
        # The level is the stdlib logger's at the time of the call, not when the logger was made.
        logging.getLogger().setLevel(logging.WARNING)
        log.info("no longer wanted")
        log.warning("still wanted")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert calls == ["info", "warning"]
    assert [line["event"] for line in lines] == ["wanted", "still wanted"]


def test_our_info_lines_skip_the_stdlib_and_our_warnings_reach_its_handlers(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Info and debug lines (the per-RPC line) are written directly; warnings and above go
    through the stdlib logger, so every handler (caplog here, which tests read for errors) sees
    them. Both are the same JSON line on stderr, redacted alike."""
    configure_logging("json", "info")
    logging.getLogger().addHandler(caplog.handler)  # configure_logging replaced the handlers
    try:
        with caplog.at_level(logging.INFO):
            log = structlog.get_logger("portex_pay.test")
            log.info("direct", url=f"/bot{TOKEN}/getMe")
            log.warning("through the stdlib", url=f"/bot{TOKEN}/getMe")
            log.error("an error", key=KEY)
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert [(r.levelname, r.name) for r in caplog.records] == [
        ("WARNING", "portex_pay.test"),
        ("ERROR", "portex_pay.test"),
    ]
    assert [(line["event"], line["level"], line["logger"]) for line in lines] == [
        ("direct", "info", "portex_pay.test"),
        ("through the stdlib", "warning", "portex_pay.test"),
        ("an error", "error", "portex_pay.test"),
    ]
    assert lines[0].keys() == lines[1].keys() and "timestamp" in lines[0]
    assert all(TOKEN not in json.dumps(line) and KEY not in json.dumps(line) for line in lines)


def test_auto_format_is_json_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("auto", "info")  # pytest's captured stderr is not a terminal
    try:
        structlog.get_logger("portex_pay.test").info("hello", answer=42)
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert (line["event"], line["answer"], line["level"]) == ("hello", 42, "info")


def test_forced_console_format_is_for_people_and_still_redacts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("console", "info")
    try:
        log = structlog.get_logger("portex_pay.test")
        log.info("hello", answer=42, token=TOKEN)
        log.warning("careful", url=f"https://api.telegram.org/bot{TOKEN}/getMe")
        portex_logging.flush_logs()
        err = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    for line in lines:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
    assert "hello" in lines[0] and "answer=42" in lines[0] and "info" in lines[0]
    assert "careful" in lines[1] and "warning" in lines[1]
    assert TOKEN not in err and REDACTED in lines[0]


_ON_A_TERMINAL = """
import structlog
from portex_pay.logging import configure_logging, flush_logs
configure_logging("auto", "info")
structlog.get_logger("portex_pay.test").info("hello", answer=42)
flush_logs()
"""


def test_auto_format_is_the_console_renderer_when_stderr_is_a_terminal() -> None:
    """What `make run` in a terminal shows: structlog's console lines, not JSON."""
    controller, terminal = pty.openpty()
    try:
        child = subprocess.run(
            [sys.executable, "-c", _ON_A_TERMINAL],
            stderr=terminal,
            stdout=subprocess.DEVNULL,
            timeout=60,
            check=True,
        )
        os.close(terminal)
        terminal = -1
        out = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other end is closed, all was read
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert child.returncode == 0
    text = out.decode()
    assert "hello" in text and "answer" in text, text
    assert not text.lstrip().startswith("{"), text  # not a JSON line
    assert "\x1b[" in text  # colours, on a terminal


def test_a_line_queued_on_a_loop_closed_before_its_flush_does_not_hold_back_later_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A loop stopped by hand and closed never runs the flush its line queued; the next loop's
    lines (and that one) are still written by the next loop's flush, not at exit."""
    configure_logging("json", "info")
    try:
        log = structlog.get_logger("portex_pay.test")
        loop = asyncio.new_event_loop()

        def stop_then_log() -> None:
            loop.stop()
            log.info("first")  # its flush is queued for a pass this loop never runs

        loop.call_soon(stop_then_log)
        loop.run_forever()
        loop.close()

        async def second() -> None:
            log.info("second")

        asyncio.run(second())
        events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    finally:
        portex_logging.flush_logs()
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert events == ["first", "second"]


# --- The registry of known secrets -------------------------------------------------------------


def _many_registry() -> portex_logging._SecretRegistry:
    """A registry past the few-secrets threshold: lines are scanned position by position."""
    registry = portex_logging._SecretRegistry()
    for _ in range(portex_logging._FEW_SECRETS + 6):
        registry.add(secrets.token_urlsafe(32))
    return registry


_MANY = _many_registry()


@pytest.fixture(params=["few", "many"])
def registry(request: pytest.FixtureRequest) -> Iterator[str]:
    """A registry of this test's own, in each of its two search modes (str.find per secret, or
    one scan of the line for any number of secrets); `redact` uses it."""
    fresh = portex_logging._SecretRegistry() if request.param == "few" else _many_registry()
    with mock.patch.object(portex_logging, "_registry", fresh):
        yield str(request.param)


def new_secret() -> str:
    return secrets.token_urlsafe(32)  # as the service makes webhook and signing secrets


@pytest.mark.parametrize(
    "line",
    [
        "{secret}",
        "secret_token={secret}&url=x",
        "compare failed for {secret} (401)",
        "got b'{secret}'",
        "prefix-glued-xx{secret}yy-suffix",  # inside a longer word
        "{secret}{secret}",
        "{secret}" + "x" * 9000,  # an over-long header value that starts with the secret
        "line one\nline two {secret}\n",
    ],
)
def test_a_registered_secret_is_redacted_wherever_it_is(registry: str, line: str) -> None:
    secret = new_secret()
    assert register_secret(secret)
    text = redact(line.format(secret=secret))
    assert secret[:8] not in text
    assert REDACTED in text


@pytest.mark.parametrize("kept", [8, 9, 20, 42])
def test_the_truncated_start_of_a_registered_secret_is_redacted(registry: str, kept: int) -> None:
    secret = new_secret()
    register_secret(secret)
    for line in (f"b'{secret[:kept]}...'", f"value {secret[:kept]}", f"xx{secret[:kept]}"):
        text = redact(line)
        assert secret[:8] not in text, line
        assert text.endswith(("...'", REDACTED)), text


def test_a_value_logged_clean_before_its_secret_was_registered_is_redacted_after(
    registry: str,
) -> None:
    """Values found clean are remembered (lines repeat them); a registration forgets them."""
    secret = new_secret()
    line = f"peer {secret}"
    assert redact(line) == line  # not a secret yet: found clean, remembered
    assert redact(line) == line
    register_secret(secret)
    assert secret[:8] not in redact(line)


def test_less_than_8_characters_of_a_secret_are_not_looked_for(registry: str) -> None:
    secret = new_secret()
    register_secret(secret)
    assert redact(f"starts {secret[:7]} here") == f"starts {secret[:7]} here"


def test_a_short_registered_value_is_ignored(registry: str) -> None:
    assert not register_secret("abc1234")
    assert not register_secret("")
    assert not register_secret(None)
    assert redact("the value abc1234 stays abc1234") == "the value abc1234 stays abc1234"


def test_secrets_register_as_text_or_bytes_and_repeatedly(registry: str) -> None:
    one, two, three = new_secret(), new_secret(), "+/=" + new_secret()  # `three`: not base64url
    register_secrets([one.encode(), two, two, None, three])
    text = redact(f"{one} {two} {three} {three[:10]}")
    assert not any(part in text for part in (one[:8], two[:8], three[:8]))
    assert text == " ".join([REDACTED] * 4)


def test_the_bot_id_part_of_a_token_is_not_a_secret(registry: str) -> None:
    # The applications register a token's part after the colon: the bot id stays readable.
    register_secret(TOKEN.partition(":")[2])
    assert redact("bot_id=123456789 ok") == "bot_id=123456789 ok"
    assert TOKEN.partition(":")[2][:8] not in redact(f"token {TOKEN}")


# --- Secret-bearing names -----------------------------------------------------------------------

VALUE = "s3cr3t-Value_0123456789"  # not registered: redacted because of the name before it


@pytest.mark.parametrize(
    "line",
    [
        f"X-Telegram-Bot-Api-Secret-Token: {VALUE}",
        f"x-telegram-bot-api-secret-token:{VALUE}",
        f"X-Telegram-Bot-Api-Secret-Token = {VALUE}",
        f"headers {dict([('x-telegram-bot-api-secret-token', VALUE), ('host', 'h')])}",
        f"{('X-Telegram-Bot-Api-Secret-Token', VALUE)}",
        f"{[(b'X-Telegram-Bot-Api-Secret-Token', VALUE.encode())]}",
        f"{CIMultiDictProxy(CIMultiDict({'X-Telegram-Bot-Api-Secret-Token': VALUE}))}",
        json.dumps({"X-Telegram-Bot-Api-Secret-Token": VALUE}),
        f"X-Tg-InitData: {VALUE}",
        f"x-tg-initdata={VALUE}",
        f"Portex-Signature: t=1700000000,v1={VALUE}",
        f"Authorization: Basic {VALUE}",
        f"{dict(authorization=f'Bearer {VALUE}')}",
        f"setWebhook {dict(url='https://x.example/hook', secret_token=VALUE)}",
        f"webhook_secret={VALUE}",
        f"WEBHOOK-SECRET: {VALUE}",
        f"signingSecret={VALUE}",
        f"PORTEX_PAYLOAD_SECRET={VALUE}",
        f"PORTEX_PAYLOAD_SECRETS_RETIRED={VALUE},{VALUE}",
        f"{dict(payload_secrets_retired=VALUE)}",
        f"bot_token='{VALUE}'",
        f"api_key={VALUE}",
        f"password: {VALUE}",
        f'{{"initData": "{VALUE}"}}',
        f"tgWebAppData={VALUE}",
    ],
)
def test_the_value_after_a_secret_bearing_name_is_redacted(line: str) -> None:
    text = redact(line)
    assert VALUE not in text
    assert VALUE[:8] not in text
    assert REDACTED in text


def test_only_the_value_after_a_name_is_redacted() -> None:
    assert redact(f"x-telegram-bot-api-secret-token={VALUE} status=401 path=/x") == (
        f"x-telegram-bot-api-secret-token={REDACTED} status=401 path=/x"
    )
    # Authorization's value is `<scheme> <credentials>`: both go, and only those.
    assert redact(f"Authorization: Basic {VALUE} from 10.0.0.1") == (
        f"Authorization: {REDACTED} from 10.0.0.1"
    )


# --- Mini App init data -------------------------------------------------------------------------


def init_data(query_id: str = "AAHdF6IQAAAAAN0XohDhrOrc") -> tuple[str, str]:
    """Init data as Telegram.WebApp.initData holds it (URL-encoded fields, sorted), and its
    hash."""
    user = json.dumps(
        {"id": 279058397, "first_name": "Vlad", "username": "vdk"}, separators=(",", ":")
    )
    fields = {
        "auth_date": "1662771648",
        "query_id": query_id,
        "signature": secrets.token_urlsafe(64),
        "user": user,
    }
    check = "\n".join(f"{key}={value}" for key, value in sorted(fields.items()))
    key = hmac.new(b"WebAppData", b"bot-token", hashlib.sha256).digest()
    digest = hmac.new(key, check.encode(), hashlib.sha256).hexdigest()
    return urlencode({**fields, "hash": digest}), digest


QUERY_ID = "AAHdF6IQAAAAAN0XohDhrOrc"


@pytest.mark.parametrize(
    "shape",
    [
        "{data}",
        "init data: {data} (bad hash)",
        "GET /app?{data} HTTP/1.1",
        "'{data}'",
        "https://app.example/#tgWebAppData={encoded}&tgWebAppVersion=7.0",
        "launch params {encoded}",
        "{{'X-Tg-InitData': '{data}'}}",
    ],
)
def test_init_data_plain_or_url_encoded_is_redacted(shape: str) -> None:
    data, digest = init_data()
    line = shape.format(data=data, encoded=quote(data, safe=""))
    text = redact(line)
    assert digest not in text
    assert QUERY_ID not in text
    assert "279058397" not in text
    assert REDACTED in text


def test_init_data_without_its_hash_is_still_redacted() -> None:
    data, digest = init_data()
    partial = data.replace(f"&hash={digest}", "")
    assert "query_id" in partial and digest not in partial
    assert QUERY_ID not in redact(f"truncated: {partial}")
    # Only the hash (what authenticates it) is enough too.
    assert digest not in redact(f"hash={digest}")


# --- aiohttp's echo of refused request bytes ----------------------------------------------------


def test_the_bytes_aiohttp_echoes_for_a_refused_request_are_redacted() -> None:
    # The C parser quotes the first 100 bytes of an over-long header value, without its name.
    too_long = str(LineTooLong((VALUE + "x" * 9000).encode()[:100] + b"...", 8190))
    assert VALUE in too_long
    assert VALUE not in redact(too_long)
    assert "Got more than 8190 bytes when reading: " in redact(too_long)
    assert VALUE not in redact(f"Invalid HTTP header: b'{VALUE}\\x00'")
    # llhttp quotes the line around the offending byte.
    line = f"400, message:\n  Invalid header value char:\n\n    b'X-Custom: {VALUE}\\x01'\n    ^"
    assert VALUE not in redact(line)
    assert "Invalid header value char" in redact(line)


# --- Lines without secrets ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "webhook update processed",
        "callback delivery failed host=127.0.0.1 status=503 attempt=2 gave_up=False",
        "GET /healthz?verbose=1&page=2 HTTP/1.1",
        "application 3f2b9c1e-8a4d-4e6b-9f0a-1c2d3e4f5a6b bound to bot 7000000001",
        "2026-05-09T07:35:25.123456Z",
        "authorization failed: unknown api key",
        "request without X-Telegram-Bot-Api-Secret-Token refused",
        "hash mismatch for update 42; user=alice",
        "{'update_id': 1, 'message': {'text': 'hello world', 'date': 1700000000}}",
        "Error handling request from 127.0.0.1",
        "",
        "short",
        "ünïcödé ✓ text\twith\ttabs",
    ],
)
def test_ordinary_lines_are_unchanged(registry: str, line: str) -> None:
    register_secrets([new_secret(), new_secret()])
    assert redact(line) == line


# --- Structured events --------------------------------------------------------------------------


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class _Holder:
    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"_Holder({self.value!r})"


def test_events_are_redacted_at_any_depth_and_by_key(registry: str) -> None:
    secret = new_secret()
    register_secret(secret)
    data, digest = init_data()
    event: dict[str, Any] = {
        "event": f"sending with {secret}",
        "level": "info",
        "logger": "portex_pay.test",
        "timestamp": "2026-05-09T07:35:25Z",
        "count": 3,
        "ratio": 0.5,
        "ok": True,
        "missing": None,
        "webhook_secret": "unregistered-but-named-value",
        "X-Telegram-Bot-Api-Secret-Token": "also-named-value",
        "signing_secret": None,
        "request": {
            "headers": {
                "Authorization": "Bearer abc",
                "x-tg-initdata": data,
                "Host": "example",
            },
            "attempts": [
                {"body": f"b'{secret[:12]}...'"},
                (f"t={secret}", 42),
                {"nested": {"deeper": [[{"initData": "query_id=..."}]]}},
            ],
        },
        "holder": _Holder(secret),
        "odd": _Unprintable(),
        "keyed_by_tuple": {(1, "a"): "x", 2: "y"},
    }
    redacted = redact_event(None, "info", event)
    rendered = json.dumps(redacted)
    assert secret[:8] not in rendered
    assert digest not in rendered and QUERY_ID not in rendered
    assert "named-value" not in rendered and "abc" not in rendered
    assert redacted["webhook_secret"] == REDACTED
    assert redacted["X-Telegram-Bot-Api-Secret-Token"] == REDACTED
    assert redacted["signing_secret"] is None  # nothing to hide: the absence stays visible
    headers = redacted["request"]["headers"]
    assert headers == {"Authorization": REDACTED, "x-tg-initdata": REDACTED, "Host": "example"}
    assert redacted["request"]["attempts"][1] == [f"t={REDACTED}", 42]
    nested = redacted["request"]["attempts"][2]["nested"]["deeper"][0][0]
    assert nested == {"initData": REDACTED}
    assert (redacted["count"], redacted["ratio"], redacted["ok"], redacted["missing"]) == (
        3,
        0.5,
        True,
        None,
    )
    assert redacted["event"] == f"sending with {REDACTED}"
    assert redacted["timestamp"] == "2026-05-09T07:35:25Z"
    assert redacted["holder"] == f"_Holder('{REDACTED}')"
    assert redacted["odd"] == "<_Unprintable object>"
    assert redacted["keyed_by_tuple"] == {"(1, 'a')": "x", 2: "y"}


def test_a_line_that_fails_to_format_is_dropped_without_its_content(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "info")
    try:
        # Too few arguments for the format: logging's default handler would print both raw.
        logging.getLogger("aiohttp.server").error("boom %s %s", VALUE)
        err = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert VALUE not in err
    assert "logging error: TypeError" in err and "aiohttp.server" in err


def test_exception_text_of_a_library_line_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    try:
        try:
            raise LineTooLong((VALUE + "x" * 200).encode()[:100] + b"...", 8190)
        except LineTooLong:
            logging.getLogger("aiohttp.server").exception("Error handling request from %s", "::1")
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert line["level"] == "error" and "LineTooLong" in line["exception"]
    assert VALUE not in json.dumps(line)
    assert f"when reading: {REDACTED}" in line["exception"]


# --- Properties ---------------------------------------------------------------------------------

# A secret of any characters but "[" and "]" (which "[REDACTED]" itself holds), base64url (what
# the service generates) or anything else (an operator's payload secret).
_secrets = st.one_of(
    st.text(alphabet=BASE64URL, min_size=8, max_size=80),
    st.text(alphabet=st.characters(exclude_characters="[]"), min_size=8, max_size=80),
).filter(lambda secret: secret != "REDACTED")


@given(text=st.text())
def test_redact_never_raises(text: str) -> None:
    assert isinstance(redact(text), str)


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=20) | st.integers(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(event=st.dictionaries(st.text(max_size=20), _values, max_size=6))
def test_redact_event_never_raises_and_renders(event: dict[str, Any]) -> None:
    json.dumps(redact_event(None, "info", dict(event)))


def _registry_for(mode: str) -> portex_logging._SecretRegistry:
    return portex_logging._SecretRegistry() if mode == "few" else _MANY


@settings(max_examples=300)
@given(
    mode=st.sampled_from(["few", "many"]),
    secret=_secrets,
    before=st.text(),
    after=st.text(),
    data=st.data(),
)
def test_a_registered_secret_never_survives_anywhere(
    mode: str, secret: str, before: str, after: str, data: st.DataObject
) -> None:
    kept = data.draw(st.integers(min_value=8, max_value=len(secret)), label="kept")
    with mock.patch.object(portex_logging, "_registry", _registry_for(mode)):
        register_secret(secret)
        assert secret not in redact(before + secret + after)
        assert secret[:kept] not in redact(before + secret[:kept] + after)
        assert secret not in json.dumps(
            redact_event(None, "info", {"event": "x", "nested": [{"k": before + secret}]}),
            ensure_ascii=False,
        )


# --- Linear time on hostile input ---------------------------------------------------------------

_N = 100_000
_HOSTILE: dict[str, Callable[[], str]] = {
    "digits then a token tail": lambda: "1" * (_N // 2) + "x:" + "a" * 30 + "1" * (_N // 2),
    "digit runs": lambda: ("1" * 50 + "x") * (_N // 51) + ":" + "a" * 30,
    "a name then spaces": lambda: "authorization" + " " * _N,
    "names without values": lambda: "x-telegram-bot-api-secret-token" * (_N // 31),
    "names and separators": lambda: "authorization: " * (_N // 15),
    "an unclosed quote of escapes": lambda: "secret_token: '" + "\\" * _N,
    "comma runs": lambda: "portex-signature=" + ",a" * (_N // 2),
    "spaced words": lambda: "authorization=" + "a " * (_N // 2),
    "a mark then a long run": lambda: "auth_date" + "a" * _N,
    "a long run then a mark": lambda: "a" * _N + "&auth_date=",
    "marks": lambda: "hash=" * (_N // 5),
    "encoded marks": lambda: "%26hash%3D" * (_N // 10),
    "hex after hash": lambda: ("hash=" + "a" * 63 + "&") * (_N // 69),
    "echo of escapes": lambda: "when reading: b'" + "\\" * _N,
    "bearers": lambda: "bearer " * (_N // 7),
    "api key starts": lambda: "ppk_" * (_N // 4),
    "one long word": lambda: "a" * _N,
    "a secret's start repeated": lambda: "hostile-" * (_N // 8),
    "printable soup": lambda: "".join(chr(32 + (i * 7919) % 95) for i in range(_N)),
}


# A hang guard, not a benchmark: these take milliseconds; a quadratic pattern takes tens of
# seconds on 100 KB (the bot token pattern did, on a long run of digits).
@pytest.mark.timeout(15)
@pytest.mark.parametrize("name", sorted(_HOSTILE))
def test_redact_is_linear_on_hostile_input(registry: str, name: str) -> None:
    register_secrets(["hostile-secret-value", new_secret()])
    text = _HOSTILE[name]()
    assert len(text) >= _N - 100
    assert isinstance(redact(text), str)


def test_rate_limited_warnings_say_once_per_key_and_interval_and_count_the_rest() -> None:
    now = [0.0]
    with structlog.testing.capture_logs() as logs:
        warnings = RateLimitedWarnings(
            structlog.get_logger("t"), interval=60.0, max_keys=2, clock=lambda: now[0]
        )
        assert warnings.warn("a", "garbage", peer="a")
        assert not warnings.warn("a", "garbage", peer="a")
        assert not warnings.warn("a", "garbage", peer="a")
        assert warnings.warn("b", "garbage", peer="b")  # another key is not held back
        now[0] = 61.0
        assert warnings.warn("a", "garbage", peer="a")
        # Bounded: a third key forgets the least recently warned one ("b"), which is new again.
        assert warnings.warn("c", "garbage", peer="c")
        assert warnings.warn("b", "garbage", peer="b")
    assert [(e["peer"], e["suppressed"], e["log_level"]) for e in logs] == [
        ("a", 0, "warning"),
        ("b", 0, "warning"),
        ("a", 2, "warning"),
        ("c", 0, "warning"),
        ("b", 0, "warning"),
    ]


class _Text(str):
    __slots__ = ()


def test_only_own_text_passes_redaction_and_never_under_a_secret_name(registry: str) -> None:
    secret = new_secret()
    register_secret(secret)
    token = "123456789:" + "A" * 35
    event: dict[str, Any] = {
        "event": "rpc",
        "request_id": OwnText("rpc-0123456789ab"),
        "client_id": f"id-{secret}",  # a plain str, as a client's request_id is
        "subclass": _Text(f"id-{token}"),  # a str of another kind is scanned like any str
        "webhook_secret": OwnText("named"),  # a secret-bearing name wins over OwnText
    }
    redacted = redact_event(None, "info", event)
    assert redacted["request_id"] == "rpc-0123456789ab"
    assert redacted["client_id"] == f"id-{REDACTED}"
    assert redacted["subclass"] == f"id-{REDACTED}"
    assert redacted["webhook_secret"] == REDACTED
    # Rendered like any str.
    assert json.loads(json.dumps(redacted))["request_id"] == "rpc-0123456789ab"
