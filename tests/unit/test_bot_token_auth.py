"""Bot tokens authenticate the application's own bot (service/auth.py, BotTokenAuthenticator): only
the bound token of a known bot, looked up by the id before its colon, and only tokens of Telegram's
shape are looked up at all."""

from __future__ import annotations

import uuid

import pytest

from portex_pay.domain.application import Application, Bot
from portex_pay.domain.errors import Unauthenticated
from portex_pay.service.auth import BotTokenAuthenticator
from portex_pay.service.cache import ApplicationCache

TOKEN = "777:secret-part_of-the-token"
APPLICATION = Application(id=uuid.uuid4(), name="shop", bot=Bot(777, TOKEN))
UNBOUND = Application(id=uuid.uuid4(), name="no bot")


class Applications:
    def __init__(self, *known: tuple[int, Application]) -> None:
        self.known = dict(known)
        self.lookups: list[int] = []

    async def by_bot_id(self, bot_id: int) -> Application | None:
        self.lookups.append(bot_id)
        return self.known.get(bot_id)


def authenticator(applications: Applications) -> BotTokenAuthenticator:
    return BotTokenAuthenticator(ApplicationCache(applications.by_bot_id, 60.0))


async def test_the_bound_token_is_its_application_looked_up_once() -> None:
    applications = Applications((777, APPLICATION))
    bot_tokens = authenticator(applications)
    assert await bot_tokens.authenticate(TOKEN) is APPLICATION
    assert await bot_tokens.authenticate(TOKEN) is APPLICATION
    assert applications.lookups == [777]


@pytest.mark.parametrize(
    "token",
    [TOKEN + "x", "777:other", "888:secret-part_of-the-token", "42:unbound-bot"],
)
async def test_another_token_of_the_shape_is_unauthenticated(token: str) -> None:
    applications = Applications((777, APPLICATION), (42, UNBOUND))
    with pytest.raises(Unauthenticated):
        await authenticator(applications).authenticate(token)


@pytest.mark.parametrize(
    "token", ["", "777", "777:", ":abc", "x777:abc", "777:a/b", "7" * 19 + ":a"]
)
async def test_a_token_not_of_telegrams_shape_is_refused_without_a_lookup(token: str) -> None:
    applications = Applications((777, APPLICATION))
    with pytest.raises(Unauthenticated):
        await authenticator(applications).authenticate(token)
    assert applications.lookups == []


async def test_a_failed_lookup_is_raised_as_it_is() -> None:
    failure = ConnectionError("database down")

    async def failing(_bot_id: int) -> Application | None:
        raise failure

    with pytest.raises(ConnectionError) as raised:
        await BotTokenAuthenticator(ApplicationCache(failing, 60.0)).authenticate(TOKEN)
    assert raised.value is failure
