"""Adapters: PostgreSQL and the Telegram Bot API."""
