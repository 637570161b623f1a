"""/paysupport and /terms are answered by portex-pay (Bot Developer Terms 6.2.1), once per
message, through the real webhook and the fake Bot API."""

from __future__ import annotations

import pytest

from portex_pay_devtools.fake_bot_api import FakeBotApi

USER = 5150


def _texts(fake: FakeBotApi, token: str, chat_id: int) -> list[str]:
    return [m["text"] for m in fake.sent_messages(token, chat_id=chat_id) if "text" in m]


@pytest.mark.parametrize(("command", "says"), [("/paysupport", "support"), ("/terms", "Terms")])
async def test_a_support_command_is_answered_once_naming_the_bot(
    make_app, fake_telegram: FakeBotApi, command: str, says: str
) -> None:
    shop = await make_app(updates="webhook")
    update_id = await fake_telegram.send_user_message(shop.bot_token, USER, command)
    assert update_id is not None
    await fake_telegram.drain(shop.bot_token)
    await fake_telegram.redeliver(update_id, token=shop.bot_token)  # Telegram delivers twice
    await fake_telegram.drain(shop.bot_token)
    [reply] = _texts(fake_telegram, shop.bot_token, USER)
    assert says in reply
    username = next(iter(fake_telegram.sent_messages(shop.bot_token)))["from"]["username"]
    assert f"@{username}" in reply


@pytest.mark.parametrize(
    "text", ["hello", "/start", "/paysupportx", "/paysupport@someone_else_bot", "paysupport"]
)
async def test_other_messages_get_no_reply(make_app, fake_telegram: FakeBotApi, text: str) -> None:
    shop = await make_app(updates="webhook")
    await fake_telegram.send_user_message(shop.bot_token, USER, text)
    await fake_telegram.drain(shop.bot_token)
    assert _texts(fake_telegram, shop.bot_token, USER) == []


async def test_the_command_addressed_to_this_bot_is_answered(
    make_app, fake_telegram: FakeBotApi
) -> None:
    shop = await make_app(updates="webhook")
    await fake_telegram.send_user_message(shop.bot_token, USER, "/paysupport")
    await fake_telegram.drain(shop.bot_token)
    username = fake_telegram.sent_messages(shop.bot_token)[0]["from"]["username"]
    await fake_telegram.send_user_message(shop.bot_token, USER + 1, f"/terms@{username} please")
    await fake_telegram.drain(shop.bot_token)
    assert len(_texts(fake_telegram, shop.bot_token, USER + 1)) == 1
