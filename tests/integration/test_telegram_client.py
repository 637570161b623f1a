"""The Bot API client against the fake Bot API over real HTTP."""

from __future__ import annotations

import pytest

from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.domain.application import Bot
from portex_pay.domain.telegram import (
    ChargeAlreadyRefunded,
    TelegramApiError,
    TelegramNetworkError,
    TelegramTooManyRequests,
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
        assert me.id == int(token.split(":")[0])
        assert (
            fake_telegram.calls_for("getMe", token=token)[-1].test_environment is test_environment
        )


async def test_telegram_errors_carry_code_description_and_retry_after(bot, fake_telegram):
    token, session = bot
    fake_telegram.fail_next(
        "getMe", error_code=429, description="Too Many Requests: retry after 7", retry_after=7
    )
    with pytest.raises(TelegramTooManyRequests) as raised:
        await BotApiClient(session, fake_telegram.base_url, 2.0).get_me(token)
    assert (raised.value.error_code, raised.value.retry_after) == (429, 7)
    assert "Too Many Requests" in raised.value.description
    # Flood control without a retry_after still tells the caller how long to wait.
    fake_telegram.fail_next("getMe", error_code=429, description="Too Many Requests")
    with pytest.raises(TelegramTooManyRequests) as raised:
        await BotApiClient(session, fake_telegram.base_url, 2.0).get_me(token)
    assert raised.value.retry_after == 1
    fake_telegram.fail_next("getMe", error_code=400, description="Bad Request: chat not found")
    with pytest.raises(TelegramApiError) as other:
        await BotApiClient(session, fake_telegram.base_url, 2.0).get_me(token)
    assert type(other.value) is TelegramApiError and other.value.retry_after is None


async def test_a_charge_refunded_before_is_its_own_error(bot, fake_telegram):
    token, session = bot
    client = BotApiClient(session, fake_telegram.base_url, 2.0)
    with pytest.raises(TelegramApiError) as unknown:
        await client.refund_star_payment(token, 42, "no-such-charge")
    assert not isinstance(unknown.value, ChargeAlreadyRefunded)
    fake_telegram.fail_next(
        "refundStarPayment", error_code=400, description="Bad Request: CHARGE_ALREADY_REFUNDED"
    )
    with pytest.raises(ChargeAlreadyRefunded):
        await client.refund_star_payment(token, 42, "no-such-charge")


async def test_typed_methods_send_what_the_bot_api_expects(bot, fake_telegram):
    token, session = bot
    client = BotApiClient(session, fake_telegram.base_url, 2.0)
    me = await client.get_me(token)
    bound = Bot(me.id, token, me.username)
    assert await client.webhook_url(bound) is None
    await client.set_webhook(
        bound, "https://example.com/hook", secret_token="s3cret", allowed_updates=["message"]
    )
    assert await client.webhook_url(bound) == "https://example.com/hook"
    (call,) = fake_telegram.calls_for("setWebhook", token=token)
    assert call.params["allowed_updates"] in (["message"], '["message"]')
    await client.delete_webhook(bound)
    assert await client.webhook_url(bound) is None
    assert await client.get_star_transactions(bound, offset=0, limit=100) == []


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
