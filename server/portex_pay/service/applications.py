"""Administering applications: create, bind a bot, rotate and revoke API keys, list.

Setting a bot token always checks it with getMe first, so a typo is caught at the command line,
not at the first payment. Listings show tokens masked (`123456:…wxyz`), never in full.

Every refusal is an AdminError with a one-line message: bad input (a name that is blank, too long
or carries control characters), a name already taken, a bot already bound to another application
(one bot serves one application: the unique index `applications_bot_id`). Uniqueness is decided by
the database's constraints, not by a check before the write, so concurrent commands cannot both
win; the constraint violation is turned into the conflict it means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from portex_pay.adapters.postgres.applications import Application, ApplicationRepository
from portex_pay.adapters.telegram import BotApiClient, TelegramApiError, TelegramNetworkError
from portex_pay.adapters.telegram.client import ALLOWED_UPDATES
from portex_pay.domain.text import single_line_problem
from portex_pay.service.auth import new_api_key, new_secret

APP_NAME_MAX_CHARS = 100  # the CHECK on applications.name

# The unique constraints of `applications` (migrations/0001_initial.sql).
_NAME_CONSTRAINT = "applications_name_key"
_BOT_CONSTRAINT = "applications_bot_id"


class AdminError(Exception):
    """An admin command cannot be carried out; the message (one line) says why."""


class InvalidAdminInput(AdminError):
    """An argument breaks a rule (e.g. an application name with a control character)."""


class ApplicationNameTaken(AdminError):
    """Another application already has this name."""


class BotAlreadyBound(AdminError):
    """The bot serves another application already (one bot, one application)."""


@dataclass(frozen=True, slots=True)
class BotIdentity:
    bot_id: int
    username: str | None


def _bot_label(bot: BotIdentity) -> str:
    return f"@{bot.username} (id {bot.bot_id})" if bot.username else f"id {bot.bot_id}"


def check_app_name(name: str) -> None:
    """Refuses a name the applications table cannot take, or that would garble listings."""
    problem = single_line_problem(name)
    if problem is None and not (name.strip() and len(name) <= APP_NAME_MAX_CHARS):
        problem = f"must be 1-{APP_NAME_MAX_CHARS} characters, not blank"
    if problem is not None:
        raise InvalidAdminInput(f"invalid application name: {problem}")


def check_bot_token_text(token: str) -> None:
    """Refuses a token with characters no bot token has, before sending it anywhere."""
    problem = single_line_problem(token)
    if problem is not None:
        raise InvalidAdminInput(f"invalid bot token: {problem}")


def mask_token(token: str | None) -> str | None:
    if not token:
        return None
    bot_id, _, secret = token.partition(":")
    return f"{bot_id}:…{secret[-4:]}" if len(secret) > 8 else "…"


class ApplicationAdmin:
    def __init__(self, applications: ApplicationRepository, bot_api: BotApiClient) -> None:
        self._applications = applications
        self._bot_api = bot_api

    async def check_bot_token(self, token: str) -> BotIdentity:
        check_bot_token_text(token)
        try:
            me = await self._bot_api.get_me(token)
        except TelegramApiError as error:
            raise AdminError(f"Telegram refused the bot token: {error.description}") from None
        except TelegramNetworkError as error:
            raise AdminError(
                f"could not reach Telegram to check the token: {error.reason}"
            ) from None
        return BotIdentity(int(me["id"]), me.get("username"))

    async def create_app(self, name: str, bot_token: str | None) -> tuple[Application, str]:
        """Creates an application and its first API key; returns the key (shown once)."""
        check_app_name(name)
        existing = await self._applications.get_by_name(name)
        if existing is not None:  # early, before asking Telegram; the constraint decides
            raise self._name_taken(name, existing)
        bot = await self.check_bot_token(bot_token) if bot_token else None
        try:
            application = await self._applications.create(
                name,
                webhook_secret=new_secret(),
                signing_secret=new_secret(),
                bot_token=bot_token,
                bot_id=bot.bot_id if bot else None,
                bot_username=bot.username if bot else None,
            )
        except asyncpg.UniqueViolationError as error:
            raise await self._conflict(error, name, bot) from None
        return application, await self.rotate_key(application.id)

    async def rotate_key(self, application_id: UUID) -> str:
        """Adds a new key; older keys stay valid until revoked."""
        if await self._applications.get(application_id) is None:
            raise AdminError(f"no application {application_id}")
        key_id, key, key_hash = new_api_key()
        await self._applications.add_key(application_id, key_id, key_hash)
        return key

    async def revoke_key(self, application_id: UUID, key_id: str) -> None:
        if not await self._applications.revoke_key(application_id, key_id):
            raise AdminError(f"no live key {key_id!r} for application {application_id}")

    async def set_bot_token(self, application_id: UUID, token: str) -> BotIdentity:
        bot = await self.check_bot_token(token)
        try:
            bound = await self._applications.set_bot(
                application_id, token, bot.bot_id, bot.username
            )
        except asyncpg.UniqueViolationError as error:
            raise await self._conflict(error, None, bot) from None
        if not bound:
            raise AdminError(f"no application {application_id}")
        return bot

    def _name_taken(self, name: str, existing: Application | None) -> ApplicationNameTaken:
        holder = f" ({existing.id})" if existing is not None else ""
        return ApplicationNameTaken(f"an application named {name!r} already exists{holder}")

    async def _conflict(
        self, error: asyncpg.UniqueViolationError, name: str | None, bot: BotIdentity | None
    ) -> Exception:
        """The conflict a unique violation of `applications` means (the error itself when it
        is another constraint: that is a bug, not a conflict)."""
        if error.constraint_name == _NAME_CONSTRAINT and name is not None:
            return self._name_taken(name, await self._applications.get_by_name(name))
        if error.constraint_name == _BOT_CONSTRAINT and bot is not None:
            holder = next(
                (a for a in await self._applications.with_bots() if a.bot_id == bot.bot_id), None
            )
            where = f"application {holder.id} ({holder.name!r})" if holder else "an application"
            return BotAlreadyBound(f"bot {_bot_label(bot)} is already bound to {where}")
        return error

    async def register_webhook(self, application_id: UUID, public_url: str) -> str:
        """Points the application's bot at our webhook (setWebhook with its secret token and the
        update kinds we need); returns the URL."""
        application = await self._applications.get(application_id)
        if application is None or not application.bot_token:
            raise AdminError(f"no application {application_id} with a bot")
        url = f"{public_url.rstrip('/')}/telegram/webhook/{application.id}"
        try:
            await self._bot_api.call(
                application.bot_token,
                "setWebhook",
                {
                    "url": url,
                    "secret_token": application.webhook_secret,
                    "allowed_updates": ALLOWED_UPDATES,
                },
            )
        except (TelegramApiError, TelegramNetworkError) as error:
            raise AdminError(f"setWebhook failed: {error}") from None
        return url

    async def signing_secret(self, application_id: UUID) -> str:
        """The key that signs this application's callbacks (receivers verify with it)."""
        secret = await self._applications.signing_secret(application_id)
        if secret is None:
            raise AdminError(f"no application {application_id}")
        return secret

    async def set_updates_mode(self, application_id: UUID, mode: str | None) -> None:
        if not await self._applications.set_updates_mode(application_id, mode):
            raise AdminError(f"no application {application_id}")

    async def list_apps(self) -> list[dict[str, Any]]:
        return [
            {
                "application_id": str(listing.application.id),
                "name": listing.application.name,
                "bot_username": listing.application.bot_username,
                "bot_token": mask_token(listing.application.bot_token),
                "created_at": listing.created_at.isoformat(),
                "api_keys": [
                    {
                        "key_id": key.id,
                        "created_at": key.created_at.isoformat(),
                        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
                    }
                    for key in listing.keys
                ],
            }
            for listing in await self._applications.list()
        ]
