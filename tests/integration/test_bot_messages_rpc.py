"""GetBotMessages and SetBotMessages through real gRPC: defaults naming the bot, partial changes,
resets, validation, and tenant isolation; the texts set are the ones the bot answers with."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from portex.payment.v1 import payment_pb2
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp
from tests.integration.helpers import details, eventually

USER = 8080


async def _get(stub: Any, app: TestApp) -> payment_pb2.BotMessages:
    got: payment_pb2.BotMessages = await stub.GetBotMessages(
        payment_pb2.GetBotMessagesRequest(), metadata=app.metadata
    )
    return got


async def _set(stub: Any, app: TestApp, **fields: Any) -> payment_pb2.BotMessages:
    request = payment_pb2.SetBotMessagesRequest(**fields)
    changed: payment_pb2.BotMessages = await stub.SetBotMessages(request, metadata=app.metadata)
    return changed


async def test_the_defaults_name_the_bot_and_buyer_messages_are_off(
    stub, make_app, fake_telegram: FakeBotApi
) -> None:
    app: TestApp = await make_app()
    messages = await _get(stub, app)
    username = await fake_telegram_username(fake_telegram, app)
    assert f"@{username}" in messages.support_text and f"@{username}" in messages.terms_text
    assert messages.support_text_default and messages.terms_text_default
    assert not messages.buyer_messages
    assert "{order_id}" in messages.paid_message and messages.paid_message_default
    assert "{order_id}" in messages.refunded_message and messages.refunded_message_default


async def fake_telegram_username(fake: FakeBotApi, app: TestApp) -> str:
    session = await new_session()
    try:
        me = await BotApiClient(session, fake.base_url, 5.0).get_me(app.bot_token)
    finally:
        await session.close()
    return str(me.username)


async def test_a_change_names_what_it_changes_and_an_empty_text_resets(stub, make_app) -> None:
    app: TestApp = await make_app()
    changed = await _set(stub, app, support_text="  Mail help@example.com  ", buyer_messages=True)
    assert changed.support_text == "Mail help@example.com" and not changed.support_text_default
    assert changed.buyer_messages and changed.terms_text_default  # the rest is unchanged
    changed = await _set(stub, app, terms_text="Be nice", paid_message="Thanks, {title}!")
    assert changed.support_text == "Mail help@example.com"  # still
    assert (changed.terms_text, changed.paid_message) == ("Be nice", "Thanks, {title}!")
    reset = await _set(stub, app, support_text="", buyer_messages=False)
    assert reset.support_text_default and "support" in reset.support_text.lower()
    assert not reset.buyer_messages and reset.terms_text == "Be nice"
    assert await _get(stub, app) == reset


async def _refused(stub: Any, app: TestApp, **fields: Any) -> dict[str, Any]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _set(stub, app, **fields)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return details(raised.value)


async def test_bad_texts_and_empty_changes_are_invalid_argument(stub, make_app) -> None:
    app: TestApp = await make_app()
    found = await _refused(stub, app, support_text="x" * 4097, refunded_message="a\x00b")
    violations = {v.field: v.description for v in found["BadRequest"].field_violations}
    assert set(violations) == {"support_text", "refunded_message"}
    assert "4096" in violations["support_text"] and "U+0000" in violations["refunded_message"]
    found = await _refused(stub, app)
    assert [v.field for v in found["BadRequest"].field_violations] == ["request"]
    assert (await _get(stub, app)).support_text_default  # nothing was changed
    assert len((await _set(stub, app, support_text="y" * 4096)).support_text) == 4096


async def test_one_application_never_sees_or_changes_anothers_messages(stub, make_app) -> None:
    first: TestApp = await make_app()
    second: TestApp = await make_app()
    await _set(stub, first, support_text="First's support", buyer_messages=True)
    theirs = await _get(stub, second)
    assert theirs.support_text_default and not theirs.buyer_messages
    await _set(stub, second, support_text="Second's support")
    assert (await _get(stub, first)).support_text == "First's support"


async def test_the_bot_answers_with_the_text_set_over_grpc(
    stub, make_app, fake_telegram: FakeBotApi
) -> None:
    shop: TestApp = await make_app(updates="webhook")
    await _set(stub, shop, support_text="Write to help@example.com")
    await fake_telegram.send_user_message(shop.bot_token, USER, "/paysupport")
    await fake_telegram.drain(shop.bot_token)
    replies = await eventually(
        lambda: [m["text"] for m in fake_telegram.sent_messages(shop.bot_token, chat_id=USER)]
    )
    assert replies == ["Write to help@example.com"]
