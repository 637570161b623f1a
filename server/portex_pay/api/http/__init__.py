"""The HTTP side (aiohttp): liveness now; Telegram webhooks and metrics later."""
