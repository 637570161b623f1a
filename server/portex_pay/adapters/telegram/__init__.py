"""The Telegram Bot API client."""

from portex_pay.adapters.telegram.client import (
    BotApiClient,
    TelegramApiError,
    TelegramNetworkError,
)

__all__ = ["BotApiClient", "TelegramApiError", "TelegramNetworkError"]
