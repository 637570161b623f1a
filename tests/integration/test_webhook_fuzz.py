"""Fuzz of the Telegram webhook door (issue 16): a few hundred updates with the application's
secret, built from what breaks parsers (odd ids, unknown and known kinds, wrong types, NUL, lone
surrogates, numbers beyond 64 bits, deep nesting, bodies that are not JSON objects), sent to the
real service over real HTTP.

For every one: never a 5xx (the database is up: 503 would mean it was not), and nothing logged at
error level but a dead-lettered payment (someone paid: that is for a person to look at). What
could not be used is dead-lettered and acknowledged, so it never blocks the bot's next update."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portex_pay.app import PortexApp
from tests.conftest import TestApp, stored_secret

EXAMPLES = 200

odd_text = st.sampled_from(
    ["", "x", "\x00", "\ud800", "\udfff", "a\u0000b", "é" * 300, "\u202e", "9" * 30, "%00"]
)
odd_number = st.sampled_from(
    [0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 1.5, 1e308]
)
scalars = st.one_of(st.none(), st.booleans(), odd_number, odd_text)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["id", "text", "from", "chat", "x"]), inner, max_size=3),
    ),
    max_leaves=8,
)
KINDS = [
    "message",
    "edited_message",
    "pre_checkout_query",
    "callback_query",
    "subscription",
    "brand_new_kind",
    "BAD KIND",
    "",
]


def message(draw: st.DrawFn) -> dict[str, Any]:
    fields = {
        "message_id": draw(odd_number),
        "date": draw(odd_number),
        "chat": {"id": draw(odd_number), "type": draw(odd_text)},
        "from": {"id": draw(odd_number), "is_bot": False, "first_name": draw(odd_text)},
        "text": draw(odd_text),
        "successful_payment": {
            "currency": draw(st.sampled_from(["XTR", "USD", "\x00"])),
            "total_amount": draw(odd_number),
            "invoice_payload": draw(odd_text),
            "telegram_payment_charge_id": draw(odd_text),
        },
        "refunded_payment": {"total_amount": draw(values)},
    }
    keep = draw(st.sets(st.sampled_from(sorted(fields)), min_size=1))
    return {name: fields[name] for name in keep}


@st.composite
def updates(draw: st.DrawFn) -> bytes:
    shape = draw(st.integers(0, 9))
    if shape == 0:
        return draw(st.sampled_from([b"[]", b"1", b'"x"', b"null", b"\xff\xfe", b"{", b""]))
    if shape == 1:
        return b'{"update_id": 1, "message": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    update: dict[str, Any] = {}
    if draw(st.integers(0, 5)):
        update["update_id"] = draw(st.one_of(odd_number, odd_text, st.just(None)))
    kind = draw(st.sampled_from(KINDS))
    if kind in ("message", "edited_message"):
        update[kind] = message(draw)
    elif kind == "pre_checkout_query":
        update[kind] = {
            "id": draw(odd_text),
            "from": {"id": draw(odd_number), "first_name": draw(odd_text)},
            "currency": "XTR",
            "total_amount": draw(odd_number),
            "invoice_payload": draw(odd_text),
        }
    else:
        update[kind] = draw(values)
    if draw(st.booleans()):
        update[draw(st.sampled_from(KINDS))] = draw(values)
    return json.dumps(update).encode()


async def test_no_webhook_update_gets_a_5xx_or_an_error_line(
    service: PortexApp, make_app: Any
) -> None:
    app: TestApp = await make_app()
    secret = await stored_secret(service.pool, app.id, "webhook_secret")
    url = f"http://127.0.0.1:{service.http_port}/telegram/webhook/{app.id}"
    statuses: list[int] = []

    loop = asyncio.get_running_loop()

    async def check(http: aiohttp.ClientSession, body: bytes) -> None:
        with structlog.testing.capture_logs() as logs:
            async with http.post(
                url,
                data=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Telegram-Bot-Api-Secret-Token": secret,
                },
            ) as reply:
                await reply.read()
        statuses.append(reply.status)
        assert reply.status < 500, (reply.status, body[:200])
        errors = [
            line
            for line in logs
            if line["log_level"] in ("error", "critical")
            and not (
                line["event"] == "update dead-lettered" and line["kind"] == "successful_payment"
            )
        ]
        assert errors == [], (errors, body[:200])

    async with aiohttp.ClientSession() as http:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
            database=None,
        )
        @given(body=updates())
        def property_holds(body: bytes) -> None:
            # Hypothesis runs synchronously: each request runs on the session's loop, which
            # serves the in-process service.
            asyncio.run_coroutine_threadsafe(check(http, body), loop).result(timeout=30)

        await asyncio.to_thread(property_holds)
    # The fuzz reached both outcomes: acknowledged updates and refused bodies.
    assert {200, 400} <= set(statuses)
