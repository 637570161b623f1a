"""Administering applications: create, bind a bot, rotate and revoke API keys, list.

Setting a bot token always checks it with getMe first, so a typo is caught at the command line,
not at the first payment. What the commands print, and how, is the CLI's (cli.py).

Every refusal is an AdminError with a one-line message: bad input (a name that is blank, too long
or carries control characters), a name already taken, a bot already bound to another application
(one bot serves one application: the unique index `applications_bot_id`); only a catalog item
the catalog refuses is its InvalidArgument, field by field, for the caller to word. Uniqueness is
decided by the database's constraints, not by a check before the write, so concurrent commands
cannot both win; the constraint violation is turned into the conflict it means.

Callback signing secrets are rotated here, the replaced one signing too for an overlap.
The unfulfilled-order policy is switched on (with its deadline) and off here, and the Mini App
edge's settings are managed here too: the pricing mode, the allowed browser origins
(normalised as browsers send them, at most MAX_ORIGINS), the allowed callback prefixes (at most
MAX_CALLBACK_PREFIXES) and the catalog's items (through CatalogService, the same use case as the
catalog RPCs). A list is replaced as a whole; duplicates (after normalisation) are kept once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from portex_pay.domain.application import AlreadyTaken, Application, ApplicationListing
from portex_pay.domain.callbacks import parse_overlap
from portex_pay.domain.catalog import (
    MAX_CALLBACK_PREFIXES,
    MAX_ORIGINS,
    CatalogItem,
    PricingMode,
    normalize_callback_prefix,
    normalize_origin,
)
from portex_pay.domain.errors import ApplicationNotFound
from portex_pay.domain.fulfilment import parse_deadline
from portex_pay.domain.init_data import sign_init_data
from portex_pay.domain.relay import telegram_allowed_updates
from portex_pay.domain.telegram import TelegramApiError, TelegramError, TelegramNetworkError
from portex_pay.domain.text import single_line_problem
from portex_pay.service.auth import new_api_key, new_secret
from portex_pay.service.catalog import CatalogService
from portex_pay.service.ports import Applications, TelegramBot

APP_NAME_MAX_CHARS = 100  # the CHECK on applications.name


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


def _normalized_list(
    values: list[str], normalize: Callable[[str], str], what: str, plural: str, limit: int
) -> list[str]:
    """Each value normalised (the first bad one refused by name), duplicates dropped, in order."""
    found: list[str] = []
    for value in values:
        try:
            normal = normalize(value)
        except ValueError as error:
            raise InvalidAdminInput(f"invalid {what} {value!r}: {error}") from None
        if normal not in found:
            found.append(normal)
    if len(found) > limit:
        raise InvalidAdminInput(f"at most {limit} {plural} per application, not {len(found)}")
    return found


class ApplicationAdmin:
    def __init__(
        self,
        applications: Applications,
        bot_api: TelegramBot,
        catalog: CatalogService | None = None,
    ) -> None:
        self._applications = applications
        self._bot_api = bot_api
        self._catalog = catalog

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
        return BotIdentity(me.id, me.username)

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
        except AlreadyTaken as error:
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
        except AlreadyTaken as error:
            raise await self._conflict(error, None, bot) from None
        if not bound:
            raise AdminError(f"no application {application_id}")
        return bot

    def _name_taken(self, name: str, existing: Application | None) -> ApplicationNameTaken:
        holder = f" ({existing.id})" if existing is not None else ""
        return ApplicationNameTaken(f"an application named {name!r} already exists{holder}")

    async def _conflict(
        self, error: AlreadyTaken, name: str | None, bot: BotIdentity | None
    ) -> Exception:
        """The conflict a unique rule of applications means (the error itself when it is not
        about what this change set: that is a bug, not a conflict)."""
        if error.what == "name" and name is not None:
            return self._name_taken(name, await self._applications.get_by_name(name))
        if error.what == "bot" and bot is not None:
            holder = next(
                (a for a in await self._applications.with_bots() if a.bot_id == bot.bot_id), None
            )
            where = f"application {holder.id} ({holder.name!r})" if holder else "an application"
            return BotAlreadyBound(f"bot {_bot_label(bot)} is already bound to {where}")
        return error

    async def register_webhook(self, application_id: UUID, public_url: str) -> str:
        """Points the application's bot at our webhook (setWebhook with its secret token and the
        update kinds we need, with those the app's own bot asked the relay for); returns the
        URL."""
        application = await self._applications.get(application_id)
        if application is None or application.bot is None:
            raise AdminError(f"no application {application_id} with a bot")
        url = f"{public_url.rstrip('/')}/telegram/webhook/{application.id}"
        allowed = await self._applications.relay_allowed_updates(application.id)
        try:
            await self._bot_api.set_webhook(
                application.bot,
                url,
                secret_token=application.webhook_secret,
                allowed_updates=telegram_allowed_updates(allowed),
            )
        except TelegramError as error:
            raise AdminError(f"setWebhook failed: {error}") from None
        return url

    async def signing_secret(self, application_id: UUID) -> str:
        """The key that signs this application's callbacks (receivers verify with it)."""
        secret = await self._applications.signing_secret(application_id)
        if secret is None:
            raise AdminError(f"no application {application_id}")
        return secret

    async def rotate_signing_secret(
        self, application_id: UUID, overlap: str
    ) -> tuple[str, datetime]:
        """A new signing secret for the application's callbacks (returned once) and the time
        until which the one it replaces still signs them too (`overlap` from now, e.g. `24h`)."""
        try:
            length = parse_overlap(overlap)
        except ValueError as error:
            raise InvalidAdminInput(f"invalid --overlap {overlap!r}: {error}") from None
        secret = new_secret()
        until = await self._applications.rotate_signing_secret(application_id, secret, length)
        if until is None:
            raise AdminError(f"no application {application_id}")
        return secret, until

    async def set_updates_mode(self, application_id: UUID, mode: str | None) -> None:
        if not await self._applications.set_updates_mode(application_id, mode):
            raise AdminError(f"no application {application_id}")

    async def updates_mode(self, application_id: UUID) -> str | None:
        """How the application's bot gets updates, when it chose (None: the server's default,
        PORTEX_TELEGRAM_UPDATES, or no such application)."""
        application = await self._applications.get(application_id)
        return application.updates_mode if application is not None else None

    async def list_apps(self) -> list[ApplicationListing]:
        return await self._applications.list()

    # --- The Mini App edge ------------------------------------------------------------------

    async def _set_edge(
        self,
        application_id: UUID,
        *,
        pricing_mode: PricingMode | None = None,
        allowed_origins: list[str] | None = None,
        callback_prefixes: list[str] | None = None,
    ) -> Application:
        application = await self._applications.set_edge(
            application_id,
            pricing_mode=pricing_mode,
            allowed_origins=allowed_origins,
            callback_prefixes=callback_prefixes,
        )
        if application is None:
            raise AdminError(f"no application {application_id}")
        return application

    async def set_pricing(self, application_id: UUID, mode: str) -> Application:
        """`catalog` (browser Pays must name a catalog item, at its price; the default) or
        `open` (browser amounts are taken as they are: test applications only)."""
        try:
            pricing = PricingMode(mode)
        except ValueError:
            choices = ", ".join(m.value for m in PricingMode)
            raise InvalidAdminInput(f"invalid pricing mode {mode!r}: one of {choices}") from None
        return await self._set_edge(application_id, pricing_mode=pricing)

    async def set_origins(self, application_id: UUID, origins: list[str]) -> Application:
        """Replaces the Mini App origins allowed to call the edge (CORS); [] allows none."""
        found = _normalized_list(origins, normalize_origin, "origin", "origins", MAX_ORIGINS)
        return await self._set_edge(application_id, allowed_origins=found)

    async def set_callback_prefixes(self, application_id: UUID, prefixes: list[str]) -> Application:
        """Replaces the prefixes a browser-supplied callback_url must start with; [] allows
        no browser callback_url at all."""
        found = _normalized_list(
            prefixes,
            normalize_callback_prefix,
            "callback prefix",
            "callback prefixes",
            MAX_CALLBACK_PREFIXES,
        )
        return await self._set_edge(application_id, callback_prefixes=found)

    # --- The unfulfilled-order policy (domain/fulfilment.py) -------------------------------

    async def set_unfulfilled_refund(self, application_id: UUID, after: str | None) -> Application:
        """Refunds the application's paid orders left unacknowledged `after` (e.g. `72h`) from
        now on, or (None) never again; a changed deadline applies to orders paid since the
        policy was first switched on."""
        deadline = None
        if after is not None:
            try:
                deadline = parse_deadline(after)
            except ValueError as error:
                raise InvalidAdminInput(f"invalid deadline {after!r}: {error}") from None
        application = await self._applications.set_unfulfilled_refund(application_id, deadline)
        if application is None:
            raise AdminError(f"no application {application_id}")
        return application

    def _catalog_service(self) -> CatalogService:
        if self._catalog is None:
            raise AdminError("the catalog is not available to this command")
        return self._catalog

    async def _existing(self, application_id: UUID) -> Application:
        application = await self._applications.get(application_id)
        if application is None:
            raise AdminError(f"no application {application_id}")
        return application

    async def set_item(self, application_id: UUID, item: CatalogItem) -> CatalogItem:
        """Adds the catalog item, or replaces the one with its key (every field); the catalog's
        InvalidArgument for a bad item."""
        try:
            return await self._catalog_service().set_item(application_id, item)
        except ApplicationNotFound:
            raise AdminError(f"no application {application_id}") from None

    async def delete_item(self, application_id: UUID, key: str) -> None:
        """Removes the item; the catalog's InvalidArgument for a key no item can have."""
        catalog = self._catalog_service()
        await self._existing(application_id)
        if not await catalog.delete_item(application_id, key):
            raise AdminError(f"no item {key!r} in application {application_id}")

    async def list_items(self, application_id: UUID) -> list[CatalogItem]:
        catalog = self._catalog_service()
        await self._existing(application_id)
        return await catalog.list_items(application_id)

    async def sign_init_data(self, application_id: UUID, fields: dict[str, str]) -> str:
        """`fields` signed as Telegram signs a Mini App's initData, with the application's bot
        token (development: to try the edge without Telegram). The token never leaves here."""
        application = await self._existing(application_id)
        if application.bot is None:
            raise AdminError(f"application {application_id} has no bot")
        return sign_init_data(fields, bot_token=application.bot.token)
