"""The Telegram Bot API client (the service's Telegram port, on aiohttp)."""

from portex_pay.adapters.telegram.client import BotApiClient, new_session

__all__ = ["BotApiClient", "new_session"]
