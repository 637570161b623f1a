"""The Bot API client against the fake Bot API over real HTTP."""

from __future__ import annotations

import pytest

from portex_pay.adapters.telegram.client import (
    BotApiClient,
    TelegramApiError,
    TelegramNetworkError,
    new_session,
)
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import new_bot_token


@pytest.fixture
async def bot(fake_telegram: FakeBotApi):
    token = new_bot_token()
    fake_telegram.add_bot(token)
    session = await new_session()
    try:
        yield token, session
    finally:
        await session.close()


async def test_the_test_environment_puts_test_after_the_token(bot, fake_telegram):
    token, session = bot
    for test_environment in (False, True):
        client = BotApiClient(
            session, fake_telegram.base_url, 2.0, test_environment=test_environment
        )
        me = await client.get_me(token)
        assert me["id"] == int(token.split(":")[0])
        assert (
            fake_telegram.calls_for("getMe", token=token)[-1].test_environment is test_environment
        )


async def test_telegram_errors_carry_code_description_and_retry_after(bot, fake_telegram):
    token, session = bot
    fake_telegram.fail_next(
        "getMe", error_code=429, description="Too Many Requests: retry after 7", retry_after=7
    )
    with pytest.raises(TelegramApiError) as raised:
        await BotApiClient(session, fake_telegram.base_url, 2.0).get_me(token)
    assert (raised.value.error_code, raised.value.retry_after) == (429, 7)
    assert "Too Many Requests" in raised.value.description


@pytest.mark.parametrize("fault", ["drop", "timeout", "refused"])
async def test_network_failures_never_carry_the_token(bot, fake_telegram, fault):
    token, session = bot
    base = fake_telegram.base_url
    if fault == "drop":
        fake_telegram.drop_connection("getMe")
    elif fault == "timeout":
        fake_telegram.delay("getMe", 2.0, times=1)
    else:
        base = "http://127.0.0.1:9"  # nothing listens on the discard port
    with pytest.raises(TelegramNetworkError) as raised:
        await BotApiClient(session, base, 0.5).get_me(token)
    text = f"{raised.value!s} {raised.value!r} {raised.value.reason}"
    assert token not in text
    assert token.split(":")[1] not in text
    fake_telegram.clear_faults()
