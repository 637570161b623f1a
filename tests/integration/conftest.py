"""Integration fixtures: faults injected into the fake Bot API never leak into the next test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from portex_pay_devtools.fake_bot_api import FakeBotApi


@pytest.fixture(autouse=True)
async def _clear_telegram_faults(fake_telegram: FakeBotApi) -> AsyncIterator[None]:
    fake_telegram.clear_faults()
    yield
    fake_telegram.clear_faults()
