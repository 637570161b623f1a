"""The `portex-pay` command: serve | migrate | healthcheck | admin ... | dev [init-data].

`serve` runs the service until SIGTERM/SIGINT, then shuts down gracefully and exits 0. `admin`
commands print JSON (one object, or a list) so that scripts can read them; they never print a bot
token in full. `admin export` prints the rows themselves (CSV or JSON lines) unless `--output`
names a file. `dev` is what `make run` calls: it supplies a private PostgreSQL and the Telegram
sandbox when none is configured, ensures a development application, and serves. `dev init-data`
prints a freshly signed Mini App initData (one line, the bare string) to try the HTTP edge with
curl: `-H "X-Tg-InitData: $(portex-pay dev init-data --user 42)"`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar
from uuid import UUID

import structlog

from portex_pay.adapters.postgres.migrations import apply_migrations, migrate, wait_for_database
from portex_pay.adapters.postgres.pool import create_pool
from portex_pay.adapters.postgres.sealed import prepare_sealed_secrets, reseal
from portex_pay.config import DEFAULT_GRPC_ADDR, DEV_DATA_DIR, ConfigError, Settings
from portex_pay.domain.application import Application, ApplicationListing
from portex_pay.domain.callbacks import standard_webhooks_secret
from portex_pay.domain.catalog import CatalogItem
from portex_pay.domain.errors import ApplicationNotFound, InvalidArgument
from portex_pay.domain.fulfilment import format_deadline
from portex_pay.domain.init_data import init_data_fields, sign_init_data
from portex_pay.domain.sealing import SealingError
from portex_pay.domain.text import single_line_problem
from portex_pay.domain.timestamps import parse_rfc3339
from portex_pay.logging import configure_logging, register_secrets
from portex_pay.processes import serve_worker, supervise_workers, usable_cores
from portex_pay.service.applications import (
    AdminError,
    ApplicationAdmin,
    InvalidAdminInput,
    check_bot_token_text,
)
from portex_pay.service.bot_messages import TEXT_FIELDS, BotMessagesService
from portex_pay.service.clock import utcnow
from portex_pay.service.export import KINDS, AccountingExport, ExportKind

if TYPE_CHECKING:
    import aiohttp

    from portex_pay.service.callbacks import CallbackAdmin

# Only what `serve --workers N`'s supervisor needs is imported here (processes.py): gRPC, aiohttp
# and the service's wiring (portex_pay.app) are imported by the commands that use them, so the
# supervisor starts its workers a fraction of a second after it starts.

T = TypeVar("T")

log = structlog.get_logger(__name__)


async def run_migrate(settings: Settings) -> None:
    print(
        json.dumps(
            {"applied": await apply_migrations(settings.db.url, settings.db.connect_timeout)}
        )
    )


async def run_admin(settings: Settings, options: argparse.Namespace) -> None:
    from portex_pay.adapters.telegram.client import new_session
    from portex_pay.app import (
        accounting_export,
        application_admin,
        bot_messages_admin,
        callback_admin,
        telegram_client,
    )

    data_keys = settings.sealing.data_keys()  # every admin command reads or writes secrets
    conn = await wait_for_database(settings.db.url, settings.db.connect_timeout)
    session = await new_session()
    try:
        await migrate(conn)
        await prepare_sealed_secrets(conn, data_keys)
        admin = application_admin(
            conn,
            telegram_client(session, settings),
            data_keys=data_keys,
            max_amount=settings.payments.max_amount,
        )
        result: Any
        if options.admin_command == "export":
            summary = await _export(accounting_export(conn, data_keys), options)
            if summary is not None:
                print(json.dumps(summary))
            return
        if options.admin_command in _EDGE_COMMANDS:
            result = await _edge_admin(admin, options)
        elif options.admin_command in ("show-bot-messages", "set-bot-messages"):
            result = await _bot_messages_admin(bot_messages_admin(conn, data_keys), options)
        elif options.admin_command == "create-app":
            application, key = await admin.create_app(options.name, options.bot_token)
            result = {"application_id": str(application.id), "api_key": key}
        elif options.admin_command == "rotate-key":
            result = {"application_id": options.app, "api_key": await admin.rotate_key(options.app)}
        elif options.admin_command == "revoke-key":
            await admin.revoke_key(options.app, options.key_id)
            result = {"application_id": str(options.app), "revoked": options.key_id}
        elif options.admin_command == "set-bot-token":
            bot = await admin.set_bot_token(options.app, options.bot_token)
            result = {
                "application_id": str(options.app),
                "bot_id": bot.bot_id,
                "bot_username": bot.username,
            }
            own_mode = await admin.updates_mode(options.app)
            if settings.http.public_url and (own_mode or settings.telegram.updates) == "webhook":
                # A bot bound in webhook mode is pointed at us at once.
                result["webhook_url"] = await admin.register_webhook(
                    options.app, settings.http.public_url
                )
        elif options.admin_command == "set-webhook":
            if not settings.http.public_url:
                raise AdminError("set PORTEX_PUBLIC_URL: the https address Telegram can reach")
            url = await admin.register_webhook(options.app, settings.http.public_url)
            result = {"application_id": str(options.app), "webhook_url": url}
        elif options.admin_command == "set-updates":
            mode = None if options.mode == "default" else options.mode
            await admin.set_updates_mode(options.app, mode)
            result = {"application_id": str(options.app), "updates": options.mode}
        elif options.admin_command == "signing-secret":
            result = {"application_id": str(options.app)}
            result.update(_signing_json(await admin.signing_secret(options.app)))
        elif options.admin_command in ("callbacks", "replay-callback"):
            result = await _callbacks_admin(callback_admin(conn, data_keys), options)
        elif options.admin_command == "rotate-signing-secret":
            secret, until = await admin.rotate_signing_secret(options.app, options.overlap)
            result = {"application_id": str(options.app), **_signing_json(secret)}
            result["previous_signs_until"] = until.isoformat()
        elif options.admin_command == "set-unfulfilled-refund":
            application = await admin.set_unfulfilled_refund(
                options.app, None if options.off else options.after
            )
            result = {"application_id": str(options.app), **_unfulfilled_json(application)}
        elif options.admin_command == "reconcile":
            result = await _reconcile(settings, options.app, session)
        elif options.admin_command == "rotate-data-key":
            # Batch by batch, each value only if unchanged since read: safe while serving.
            resealed = await reseal(conn, data_keys, plaintext_only=False)
            result = {"resealed": resealed, "key_id": data_keys.current_id}
        else:
            result = [_listing_json(listing) for listing in await admin.list_apps()]
        print(json.dumps(result, default=str, indent=None))
    finally:
        await session.close()
        await conn.close()


_EDGE_COMMANDS = frozenset(
    {
        "set-pricing",
        "set-origins",
        "set-callback-prefixes",
        "set-item",
        "delete-item",
        "list-items",
    }
)


async def _callbacks_admin(admin: CallbackAdmin, options: argparse.Namespace) -> dict[str, Any]:
    """`admin callbacks --failed` (a page, newest first) and `admin replay-callback`."""
    if options.admin_command == "replay-callback":
        requeued = await admin.replay(options.event_id, options.app)
        return {"event_id": str(options.event_id), "requeued": requeued, "state": "pending"}
    page = await admin.failed(options.app, before=options.before, limit=options.limit)
    # Event ids as strings, as callbacks send them (64-bit ids do not fit JavaScript numbers).
    failed = [
        {
            **dataclasses.asdict(c),
            "event_id": str(c.event_id),
            "application_id": str(c.application_id),
        }
        for c in page
    ]
    full = len(page) == options.limit
    return {"failed": failed, "next_before": failed[-1]["event_id"] if full else None}


def _signing_json(secret: str) -> dict[str, str]:
    """A signing secret as it is shown: as Portex-Signature uses it, and in the `whsec_` form
    that Standard Webhooks libraries take."""
    return {"signing_secret": secret, "standard_webhooks_secret": standard_webhooks_secret(secret)}


def _mask_token(token: str | None) -> str | None:
    if not token:
        return None
    bot_id, _, secret = token.partition(":")
    return f"{bot_id}:…{secret[-4:]}" if len(secret) > 8 else "…"


def _listing_json(listing: ApplicationListing) -> dict[str, Any]:
    """One application of `list-apps`: its bot token masked, its keys by id only."""
    application = listing.application
    return {
        "application_id": str(application.id),
        "name": application.name,
        "bot_username": application.bot_username,
        "bot_token": _mask_token(application.bot_token),
        "created_at": listing.created_at.isoformat(),
        **_unfulfilled_json(application),
        "api_keys": [
            {
                "key_id": key.id,
                "created_at": key.created_at.isoformat(),
                "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
            }
            for key in listing.keys
        ],
    }


def _unfulfilled_json(application: Application) -> dict[str, Any]:
    """The application's unfulfilled-order policy: its deadline (`72h` as `3d`) and since when
    it holds, both None while it is off."""
    after, since = application.unfulfilled_refund_after, application.unfulfilled_refund_since
    return {
        "unfulfilled_refund_after": None if after is None else format_deadline(after),
        "unfulfilled_refund_since": None if since is None else since.isoformat(),
    }


def _edge_json(application: Application) -> dict[str, Any]:
    """An application's Mini App edge settings, as the edge commands print them."""
    return {
        "application_id": str(application.id),
        "pricing_mode": application.pricing_mode.value,
        "allowed_origins": list(application.allowed_origins),
        "callback_prefixes": list(application.callback_prefixes),
    }


def _item_json(item: CatalogItem) -> dict[str, Any]:
    return {
        "key": item.key,
        "amount": item.amount,
        "title": item.title,
        "description": item.description,
        "photo_url": item.photo_url,
        "metadata": dict(item.metadata),
        "subscription_period": item.subscription_period,
    }


def _item_metadata(pairs: list[str]) -> dict[str, str]:
    """`--metadata KEY=VALUE` options (the value may hold `=`; a key given twice is refused)."""
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals:
            raise InvalidAdminInput("invalid item: --metadata takes KEY=VALUE")
        if key in metadata:
            raise InvalidAdminInput("invalid item: a --metadata key is given twice")
        metadata[key] = value
    return metadata


def _item_option(field: str) -> str:
    """The command-line name of an item field a violation names (`metadata[k]`: `--metadata
    k:`)."""
    if field.startswith("metadata["):
        return f"--metadata {field.removeprefix('metadata[').removesuffix(']')}:"
    return _ITEM_OPTIONS.get(field, "--" + field)


# How the item fields are named on the command line (`admin set-item`).
_ITEM_OPTIONS = {
    "key": "--key",
    "amount": "--amount",
    "title": "--title",
    "description": "--description",
    "photo_url": "--photo-url",
    "subscription_period": "--subscription-period",
}


async def _edge_admin(admin: ApplicationAdmin, options: argparse.Namespace) -> dict[str, Any]:
    """The Mini App edge's admin commands: each answers one JSON object."""
    app_id: UUID = options.app
    command = options.admin_command
    if command == "set-pricing":
        return _edge_json(await admin.set_pricing(app_id, options.mode))
    if command == "set-origins":
        return _edge_json(await admin.set_origins(app_id, [] if options.none else options.origin))
    if command == "set-callback-prefixes":
        return _edge_json(
            await admin.set_callback_prefixes(app_id, [] if options.none else options.prefix)
        )
    if command == "set-item":
        try:
            item = await admin.set_item(
                app_id,
                CatalogItem(
                    key=options.key,
                    amount=options.amount,
                    title=options.title,
                    description=options.description,
                    photo_url=options.photo_url,
                    metadata=_item_metadata(options.metadata),
                    subscription_period=options.subscription_period,
                ),
            )
        except InvalidArgument as error:
            problems = "; ".join(
                f"{_item_option(v.field)} {v.description}" for v in error.violations
            )
            raise InvalidAdminInput(f"invalid item: {problems}") from None
        return {"application_id": str(app_id), "item": _item_json(item)}
    if command == "delete-item":
        try:
            await admin.delete_item(app_id, options.key)
        except InvalidArgument as error:
            raise InvalidAdminInput(f"invalid --key: {error.violations[0].description}") from None
        return {"application_id": str(app_id), "deleted": options.key}
    items = await admin.list_items(app_id)
    return {"application_id": str(app_id), "items": [_item_json(item) for item in items]}


_TEXT_OPTIONS = {name: "--" + name.replace("_", "-") for name in TEXT_FIELDS}


async def _bot_messages_admin(
    service: BotMessagesService, options: argparse.Namespace
) -> dict[str, Any]:
    """`show-bot-messages` / `set-bot-messages`: the messages as the bot sends them."""
    app_id: UUID = options.app
    try:
        if options.admin_command == "show-bot-messages":
            messages = await service.get(app_id)
        else:
            texts: dict[str, str | None] = {name: getattr(options, name) for name in TEXT_FIELDS}
            for option in options.default or []:
                name = option.replace("-", "_")
                if texts[name] is not None:
                    raise InvalidAdminInput(f"--{option} is both set and reset (--default)")
                texts[name] = ""
            buyer = None if options.buyer_messages is None else options.buyer_messages == "on"
            messages = await service.set(app_id, texts, buyer)
    except InvalidArgument as error:
        problems = "; ".join(
            f"{_TEXT_OPTIONS.get(v.field, 'the command')} {v.description}" for v in error.violations
        )
        raise InvalidAdminInput(f"invalid bot messages: {problems}") from None
    except ApplicationNotFound:
        raise AdminError(f"no application {app_id}") from None
    return {"application_id": str(app_id), **dataclasses.asdict(messages)}


# --- admin export ------------------------------------------------------------------------------


class UsageError(AdminError):
    """An argument the command cannot use, found once it looked: exit 2, as argparse's errors."""


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _export_time(text: str) -> datetime:
    """`--from` / `--to`: an RFC 3339 time with its offset, or a bare date (its midnight UTC, so
    that `--from 2026-11-01 --to 2026-12-01` is November in UTC)."""
    try:
        if _DATE.fullmatch(text.strip()):
            return datetime.combine(date.fromisoformat(text.strip()), datetime.min.time(), UTC)
        return parse_rfc3339(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


async def _export(export: AccountingExport, options: argparse.Namespace) -> dict[str, Any] | None:
    """`admin export`: the rows to stdout (nothing else goes there), or to `--output` FILE, written
    as FILE.partial and renamed once complete (a failed export leaves no FILE behind); then a
    JSON summary, which the caller prints."""
    kind = KINDS[options.what]
    if options.output is None:
        if isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(encoding="utf-8", newline="")  # csv writes its own line ends
        try:
            await _write_export(export, kind, options, sys.stdout)
        finally:
            sys.stdout.flush()
        return None
    target = Path(options.output)
    partial = target.with_name(target.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as out:
            rows = await _write_export(export, kind, options, out)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return {
        "application_id": str(options.app),
        "what": kind.name,
        "rows": rows,
        "output": str(target),
    }


async def _write_export(
    export: AccountingExport, kind: ExportKind[Any], options: argparse.Namespace, out: TextIO
) -> int:
    try:
        return await export.write(
            kind, options.app, options.start, options.end, options.format, out
        )
    except InvalidArgument:
        raise UsageError("--from must be earlier than --to") from None
    except ApplicationNotFound:
        raise UsageError(f"--app: no application {options.app}") from None


async def run_init_data(options: argparse.Namespace) -> str:
    """`dev init-data`: a Mini App initData for `--user`, signed as Telegram signs it, dated
    `--age` seconds ago. The bot token: the application's (`--app`, from DATABASE_URL), or
    `--bot-token`, or else `make run`'s (PORTEX_DEV_BOT_TOKEN, then the sandbox bot's token in
    .data/sandbox-bot-token)."""
    if not 0 < options.user < 2**63:
        raise AdminError("--user must be a positive Telegram user id")
    user: dict[str, Any] = {"id": options.user, "first_name": options.first_name}
    if options.username is not None:
        user["username"] = options.username
    for field, value in user.items():
        if isinstance(value, str) and (problem := single_line_problem(value)):
            raise AdminError(f"invalid --{field.replace('_', '-')}: {problem}")
    try:
        auth_date = utcnow() - timedelta(seconds=options.age)
    except OverflowError:
        raise AdminError("--age is out of range") from None
    fields = init_data_fields(user, auth_date=auth_date)
    if options.app is not None:
        from portex_pay.adapters.telegram.client import new_session
        from portex_pay.app import application_admin, telegram_client

        settings = Settings.from_env(serving=False)
        configure_logging(settings.log.format, settings.log.level)
        conn = await wait_for_database(settings.db.url, settings.db.connect_timeout)
        session = await new_session()
        try:
            await migrate(conn)
            data_keys = settings.sealing.data_keys()
            await prepare_sealed_secrets(conn, data_keys)
            admin = application_admin(conn, telegram_client(session, settings), data_keys=data_keys)
            return await admin.sign_init_data(options.app, fields)
        finally:
            await session.close()
            await conn.close()
    token = options.bot_token or os.environ.get("PORTEX_DEV_BOT_TOKEN") or _sandbox_bot_token()
    if not token:
        raise AdminError(
            "no bot token: give --app ID or --bot-token TOKEN (or run `make run` here first)"
        )
    check_bot_token_text(token)
    return sign_init_data(fields, bot_token=token)


def _sandbox_bot_token() -> str | None:
    """The sandbox bot `make run` binds the development application to, when it has run here."""
    path = DEV_DATA_DIR / "sandbox-bot-token"
    return path.read_text().strip() if path.is_file() else None


async def _reconcile(
    settings: Settings, application_id: UUID, session: aiohttp.ClientSession
) -> dict[str, Any]:
    """One catch-up run of the Star ledger's reader for the application's bot, at once (the
    serving replicas' jobs run the same code every PORTEX_LEDGER_INTERVAL seconds)."""
    from portex_pay.app import Sessions, wire

    if len(settings.payments.payload_secret) < 32:
        raise AdminError("reconcile verifies invoice payloads: set PORTEX_PAYLOAD_SECRET")
    pool = await create_pool(settings.db.url, min_size=1, max_size=2)
    try:
        # The serving replicas' wiring: charges found here are recorded, refunded and relayed
        # exactly as the webhook would have (their workers pick up what this queues).
        replica = f"admin-reconcile:{os.getpid()}"
        wiring = wire(settings, pool, Sessions(session), replica=replica)
        application = await wiring.applications.get(application_id)
        if application is None or application.bot is None:
            raise AdminError(f"no application {application_id} with a bot")
        # A replica reading the bot right now holds its lease for one run (seconds): wait it out.
        deadline = time.monotonic() + settings.ledger.lease_seconds
        while (report := await wiring.ledger_reader.catch_up(application, force=True)) is None:
            if time.monotonic() > deadline:
                raise AdminError("another replica keeps reading this bot's ledger; try again")
            await asyncio.sleep(1.0)
        if report.error is not None:
            raise AdminError(f"Telegram failed after {report.pages} page(s): {report.error}")
        return {"application_id": str(application_id), **dataclasses.asdict(report)}
    finally:
        await pool.close()


async def run_healthcheck(grpc_addr: str) -> int:
    """Exit status 0 when the server at `grpc_addr` is SERVING. Over TLS when the environment
    says the server listens with it (PORTEX_GRPC_TLS_*, see api/grpc/tls.py)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from portex_pay.api.grpc.tls import TlsError, healthcheck_credentials

    try:
        tls = healthcheck_credentials(os.environ)
    except TlsError as error:
        print(f"not serving: {error}", file=sys.stderr)
        return 1
    if tls is None:
        channel = grpc.aio.insecure_channel(grpc_addr)
    else:
        channel = grpc.aio.secure_channel(grpc_addr, tls[0], options=tls[1])
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.aio.AioRpcError as error:
            print(f"not serving: {error.code().name}", file=sys.stderr)
            return 1
    serving = response.status == health_pb2.HealthCheckResponse.SERVING
    print("serving" if serving else "not serving")
    return 0 if serving else 1


def check_tls_files(settings: Settings) -> None:
    """Reads the gRPC TLS files once before serving: a pair that cannot be served is a
    configuration error (exit 2), not a worker failing at each of its restarts."""
    if not settings.grpc.tls_cert:
        return  # grpc is not imported: the workers' supervisor starts them sooner
    from portex_pay.api.grpc.tls import TlsError, TlsFiles, read_material

    files = TlsFiles.configured(settings.grpc)
    assert files is not None
    try:
        read_material(files)
    except TlsError as error:
        raise ConfigError(f"invalid configuration:\n  {error}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portex-pay", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_command = commands.add_parser("serve", help="serve gRPC and HTTP until SIGTERM")
    serve_command.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="processes sharing the gRPC and HTTP ports (default: PORTEX_WORKERS, else one per "
        "core); 1 serves in this process",
    )
    # How the workers' supervisor starts each of them (processes.py); not for people.
    serve_command.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    commands.add_parser("migrate", help="apply pending database migrations")
    commands.add_parser("healthcheck", help="exit 0 when the local server is SERVING")
    dev = commands.add_parser(
        "dev", help="what `make run` runs: private PostgreSQL + sandbox + serve"
    ).add_subparsers(dest="dev_command")
    init_data = dev.add_parser(
        "init-data", help="print a freshly signed Mini App initData, to try the edge with curl"
    )
    init_data.add_argument("--user", type=int, required=True, help="the Telegram user id")
    signer = init_data.add_mutually_exclusive_group()
    signer.add_argument("--app", type=UUID, help="sign with this application's bot token")
    signer.add_argument("--bot-token", help="sign with this bot token")
    init_data.add_argument("--first-name", default="Dev")
    init_data.add_argument("--username")
    init_data.add_argument(
        "--age", type=int, default=0, help="date it this many seconds ago (negative: ahead)"
    )
    admin = commands.add_parser("admin", help="manage applications").add_subparsers(
        dest="admin_command", required=True
    )
    create = admin.add_parser("create-app", help="create an application and its first API key")
    create.add_argument("--name", required=True)
    create.add_argument("--bot-token", help="checked with getMe before it is stored")
    rotate = admin.add_parser("rotate-key", help="add a new API key (old keys stay valid)")
    rotate.add_argument("--app", type=UUID, required=True)
    revoke = admin.add_parser("revoke-key", help="revoke one API key")
    revoke.add_argument("--app", type=UUID, required=True)
    revoke.add_argument("--key-id", required=True)
    bot = admin.add_parser("set-bot-token", help="bind a bot (checked with getMe)")
    bot.add_argument("--app", type=UUID, required=True)
    bot.add_argument("--bot-token", required=True)
    admin.add_parser("list-apps", help="list applications and key ids (tokens masked)")
    webhook = admin.add_parser(
        "set-webhook", help="register the webhook (PORTEX_PUBLIC_URL) with the app's bot"
    )
    webhook.add_argument("--app", type=UUID, required=True)
    updates = admin.add_parser(
        "set-updates", help="how the app's bot delivers updates (default: PORTEX_TELEGRAM_UPDATES)"
    )
    updates.add_argument("--app", type=UUID, required=True)
    updates.add_argument("--mode", choices=["webhook", "polling", "default"], required=True)
    signing = admin.add_parser(
        "signing-secret", help="print the key that signs the app's callbacks"
    )
    signing.add_argument("--app", type=UUID, required=True)
    rotate_signing = admin.add_parser(
        "rotate-signing-secret",
        help="a new callback signing secret (printed once); the old one signs too for --overlap",
    )
    rotate_signing.add_argument("--app", type=UUID, required=True)
    rotate_signing.add_argument(
        "--overlap", metavar="DURATION", default="24h", help="e.g. 24h, 7d; 0 for a leaked secret"
    )
    _callback_commands(admin)
    unfulfilled = admin.add_parser(
        "set-unfulfilled-refund",
        help="refund paid orders not acknowledged (AcknowledgeOrder) in time; off by default",
    )
    unfulfilled.add_argument("--app", type=UUID, required=True)
    deadline = unfulfilled.add_mutually_exclusive_group(required=True)
    deadline.add_argument(
        "--after", metavar="DURATION", help="e.g. 72h, 3d, 1d12h (orders paid from now on)"
    )
    deadline.add_argument("--off", action="store_true", help="refund no order for this again")
    reconcile_app = admin.add_parser(
        "reconcile",
        help="read the bot's new Star transactions now (getStarTransactions, from the ledger's "
        "checkpoint) and record what we missed",
    )
    reconcile_app.add_argument("--app", type=UUID, required=True)
    admin.add_parser(
        "rotate-data-key",
        help="re-seal every stored secret under PORTEX_DATA_KEY (then its retired keys can go)",
    )

    _edge_commands(admin)
    _bot_messages_commands(admin)
    _export_command(admin)
    return parser


def _callback_commands(admin: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`admin callbacks --failed` and `admin replay-callback` (README: Callbacks)."""
    listing = admin.add_parser("callbacks", help="list given-up callback deliveries, newest first")
    listing.add_argument("--failed", action="store_true", required=True)
    listing.add_argument("--app", type=UUID, help="only this application's")
    listing.add_argument(
        "--limit", type=_positive_int, default=100, help="at most this many (1-1000)"
    )
    listing.add_argument(
        "--before", type=_event_id, metavar="EVENT_ID", help="the next page: a page's next_before"
    )
    replay = admin.add_parser(
        "replay-callback", help="send a given-up callback again, with a fresh retry schedule"
    )
    replay.add_argument("event_id", type=_event_id, metavar="EVENT_ID")
    replay.add_argument("--app", type=UUID, help="refuse it unless it is this application's")


def _export_command(admin: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`admin export`: every row of a time range, for accounting (README: the columns)."""
    export = admin.add_parser(
        "export", help="write every order (or transaction) of a time range as CSV or JSON lines"
    )
    export.add_argument("--app", type=UUID, required=True)
    export.add_argument("--what", choices=sorted(KINDS), required=True)
    export.add_argument(
        "--from",
        dest="start",
        type=_export_time,
        required=True,
        metavar="TIME",
        help="from this time on (inclusive): RFC 3339 with offset, or a date (midnight UTC)",
    )
    export.add_argument(
        "--to",
        dest="end",
        type=_export_time,
        required=True,
        metavar="TIME",
        help="until this time (exclusive), as --from",
    )
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    export.add_argument("--output", metavar="FILE", help="write here (default: stdout)")


def _edge_commands(admin: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The Mini App edge's commands (HTTP /v1/ for the Portex JS SDK)."""
    pricing = admin.add_parser(
        "set-pricing", help="catalog: browser Pays at catalog prices (default); open: any amount"
    )
    pricing.add_argument("--app", type=UUID, required=True)
    pricing.add_argument("--mode", choices=["catalog", "open"], required=True)
    origins = admin.add_parser(
        "set-origins", help="replace the Mini App origins allowed to call the edge (CORS)"
    )
    origins.add_argument("--app", type=UUID, required=True)
    origin_values = origins.add_mutually_exclusive_group(required=True)
    origin_values.add_argument(
        "--origin", action="append", metavar="URL", help="e.g. https://game.example.com; repeat"
    )
    origin_values.add_argument("--none", action="store_true", help="allow no origin")
    prefixes = admin.add_parser(
        "set-callback-prefixes",
        help="replace the prefixes a browser-supplied callback_url must start with",
    )
    prefixes.add_argument("--app", type=UUID, required=True)
    prefix_values = prefixes.add_mutually_exclusive_group(required=True)
    prefix_values.add_argument(
        "--prefix", action="append", metavar="URL", help="e.g. https://api.example.com/hooks/"
    )
    prefix_values.add_argument("--none", action="store_true", help="allow no browser callback")
    set_item = admin.add_parser("set-item", help="add or replace a catalog item (a price)")
    set_item.add_argument("--app", type=UUID, required=True)
    set_item.add_argument("--key", required=True, help="what the SDK's PaymentOptions.label names")
    set_item.add_argument("--amount", type=int, required=True, help="the price in Stars")
    set_item.add_argument("--title")
    set_item.add_argument("--description")
    set_item.add_argument("--photo-url")
    set_item.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="copied onto every order made for the item (repeat for more keys)",
    )
    set_item.add_argument(
        "--subscription-period",
        type=int,
        metavar="SECONDS",
        help="sell the item as a Stars subscription renewed every SECONDS (2592000 only)",
    )
    delete_item = admin.add_parser("delete-item", help="remove a catalog item")
    delete_item.add_argument("--app", type=UUID, required=True)
    delete_item.add_argument("--key", required=True)
    list_items = admin.add_parser("list-items", help="the application's catalog")
    list_items.add_argument("--app", type=UUID, required=True)


def _bot_messages_commands(admin: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The bot's messages: /paysupport, /terms and the optional buyer messages."""
    show_messages = admin.add_parser(
        "show-bot-messages", help="the texts the bot answers /paysupport and /terms with, and more"
    )
    show_messages.add_argument("--app", type=UUID, required=True)
    set_messages = admin.add_parser(
        "set-bot-messages", help="change the support texts and the buyer messages"
    )
    set_messages.add_argument("--app", type=UUID, required=True)
    set_messages.add_argument("--support-text", help="answered to /paysupport")
    set_messages.add_argument("--terms-text", help="answered to /terms")
    set_messages.add_argument(
        "--paid-message", help="sent to the buyer when paid; {bot} {order_id} {amount} {title}"
    )
    set_messages.add_argument("--refunded-message", help="sent to the buyer when refunded")
    set_messages.add_argument(
        "--buyer-messages", choices=["on", "off"], help="send the buyer messages (default off)"
    )
    set_messages.add_argument(
        "--default",
        action="append",
        choices=[option.removeprefix("--") for option in _TEXT_OPTIONS.values()],
        help="put this text back to the default; repeat",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _event_id(text: str) -> int:
    """An event id: a positive PostgreSQL bigint."""
    value = _positive_int(text)
    if value >= 2**63:
        raise argparse.ArgumentTypeError("is not an event id")
    return value


def run_serve(settings: Settings, options: argparse.Namespace) -> int:
    """`serve`: in this process (one worker, as `make run` does), N workers under a supervisor
    (processes.py), or one of those workers."""
    if options.worker_index is not None:
        structlog.contextvars.bind_contextvars(worker=options.worker_index)
        run_loop(serve_worker(settings), uvloop=settings.grpc.uvloop)
        return 0
    workers = options.workers or settings.grpc.workers or usable_cores()
    if workers == 1:
        from portex_pay.app import serve

        run_loop(serve(settings), uvloop=settings.grpc.uvloop)
        return 0
    return asyncio.run(supervise_workers(settings, workers))


def event_loop_factory(uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when asked for and importable, else None (asyncio's own)."""
    if not uvloop:
        return None
    try:
        import uvloop as uv  # optional: not on Windows
    except ImportError:
        return None
    return uv.new_event_loop


def run_loop(main: Coroutine[Any, Any, T], *, uvloop: bool) -> T:
    """asyncio.run on uvloop's loop (PORTEX_UVLOOP) when it imports."""
    with asyncio.Runner(loop_factory=event_loop_factory(uvloop)) as runner:
        return runner.run(main)


def main(argv: list[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    if options.command == "healthcheck":  # needs no database settings: the container probe
        return asyncio.run(run_healthcheck(os.environ.get("PORTEX_GRPC_ADDR", DEFAULT_GRPC_ADDR)))
    if options.command == "dev" and options.dev_command == "init-data":
        try:
            print(asyncio.run(run_init_data(options)))
        except ConfigError as error:
            print(error, file=sys.stderr)
            return 2
        except (AdminError, ConnectionError) as error:
            print(f"error: {_one_line(str(error))}", file=sys.stderr)
            return 1
        return 0
    try:
        if options.command == "dev":
            try:
                from portex_pay_devtools.run import run_dev
            except ImportError:
                print(
                    "portex-pay dev needs the development tools (portex-pay-devtools); "
                    "run it from a checkout with `make run`",
                    file=sys.stderr,
                )
                return 2
            return run_dev()
        settings = Settings.from_env(serving=options.command == "serve")
        if options.command == "serve":
            check_tls_files(settings)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    configure_logging(settings.log.format, settings.log.level)
    register_secrets(settings.secret_texts())
    try:
        if options.command == "serve":
            return run_serve(settings, options)
        if options.command == "migrate":
            asyncio.run(run_migrate(settings))
        else:
            asyncio.run(run_admin(settings, options))
    except UsageError as error:
        print(
            f"portex-pay admin {options.admin_command}: error: {_one_line(str(error))}",
            file=sys.stderr,
        )
        return 2
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    except (AdminError, ConnectionError, SealingError) as error:
        print(f"error: {_one_line(str(error))}", file=sys.stderr)
        return 1
    return 0


def _one_line(text: str) -> str:
    """The message with line breaks and other control characters escaped: one line, always."""
    return "".join(
        char if char.isprintable() or char == " " else char.encode("unicode_escape").decode()
        for char in text
    )


__all__ = ["main", "run_loop"]
