"""The `portex-pay` command: serve | migrate | healthcheck | admin ... | dev.

`serve` runs the service until SIGTERM/SIGINT, then shuts down gracefully and exits 0. `admin`
commands print JSON (one object, or a list) so that scripts can read them; they never print a bot
token in full. `dev` is what `make run` calls: it supplies a private PostgreSQL and the Telegram
sandbox when none is configured, ensures a development application, and serves.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import aiohttp
import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from portex_pay.adapters.postgres.applications import ApplicationRepository
from portex_pay.adapters.postgres.dead_letters import DeadLetterRepository
from portex_pay.adapters.postgres.migrations import migrate
from portex_pay.adapters.postgres.payments import PaymentRepository
from portex_pay.adapters.postgres.pool import create_pool
from portex_pay.adapters.telegram.client import new_session
from portex_pay.app import PortexApp, telegram_client, wait_for_database
from portex_pay.config import DEFAULT_GRPC_ADDR, ConfigError, Settings
from portex_pay.logging import configure_logging, register_secret
from portex_pay.service.applications import AdminError, ApplicationAdmin
from portex_pay.service.payments import utcnow
from portex_pay.service.reconcile import reconcile
from portex_pay.service.updates import UpdateProcessor

log = structlog.get_logger(__name__)


async def serve(
    settings: Settings, before_stop: Callable[[], Awaitable[None]] | None = None
) -> None:
    app = PortexApp(settings)
    await app.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await app.stop()
        if before_stop is not None:
            await before_stop()


async def run_migrate(settings: Settings) -> None:
    conn = await wait_for_database(settings.database_url, settings.db_connect_timeout)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    print(json.dumps({"applied": applied}))


async def run_admin(settings: Settings, options: argparse.Namespace) -> None:
    conn = await wait_for_database(settings.database_url, settings.db_connect_timeout)
    session = await new_session()
    try:
        await migrate(conn)
        admin = ApplicationAdmin(
            ApplicationRepository(conn),
            telegram_client(session, settings),
        )
        result: Any
        if options.admin_command == "create-app":
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
            bound_app = await ApplicationRepository(conn).get(options.app)
            own_mode = bound_app.updates_mode if bound_app else None
            if settings.public_url and (own_mode or settings.telegram_updates) == "webhook":
                # A bot bound in webhook mode is pointed at us at once.
                result["webhook_url"] = await admin.register_webhook(
                    options.app, settings.public_url
                )
        elif options.admin_command == "set-webhook":
            if not settings.public_url:
                raise AdminError("set PORTEX_PUBLIC_URL: the https address Telegram can reach")
            url = await admin.register_webhook(options.app, settings.public_url)
            result = {"application_id": str(options.app), "webhook_url": url}
        elif options.admin_command == "set-updates":
            mode = None if options.mode == "default" else options.mode
            await admin.set_updates_mode(options.app, mode)
            result = {"application_id": str(options.app), "updates": options.mode}
        elif options.admin_command == "signing-secret":
            result = {
                "application_id": str(options.app),
                "signing_secret": await admin.signing_secret(options.app),
            }
        elif options.admin_command == "reconcile":
            result = await _reconcile(settings, options.app, session)
        else:
            result = await admin.list_apps()
        print(json.dumps(result, default=str, indent=None))
    finally:
        await session.close()
        await conn.close()


async def _reconcile(
    settings: Settings, application_id: UUID, session: aiohttp.ClientSession
) -> dict[str, Any]:
    if len(settings.payload_secret) < 32:
        raise AdminError("reconcile verifies invoice payloads: set PORTEX_PAYLOAD_SECRET")
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        application = await ApplicationRepository(pool).get(application_id)
        if application is None or not application.bot_token:
            raise AdminError(f"no application {application_id} with a bot")
        bot_api = telegram_client(session, settings)
        processor = UpdateProcessor(
            PaymentRepository(pool),
            DeadLetterRepository(pool),
            bot_api,
            settings.payload_secret.encode(),
            decision_timeout=settings.checkout_decision_timeout,
            auto_refund=settings.auto_refund,
            clock=utcnow,
        )
        report = await reconcile(application, bot_api, processor)
        return {"application_id": str(application_id), **dataclasses.asdict(report)}
    finally:
        await pool.close()


async def run_healthcheck(grpc_addr: str) -> int:
    async with grpc.aio.insecure_channel(grpc_addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.aio.AioRpcError as error:
            print(f"not serving: {error.code().name}", file=sys.stderr)
            return 1
    serving = response.status == health_pb2.HealthCheckResponse.SERVING
    print("serving" if serving else "not serving")
    return 0 if serving else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portex-pay", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve gRPC and HTTP until SIGTERM")
    commands.add_parser("migrate", help="apply pending database migrations")
    commands.add_parser("healthcheck", help="exit 0 when the local server is SERVING")
    commands.add_parser("dev", help="what `make run` runs: private PostgreSQL + sandbox + serve")
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
    reconcile_app = admin.add_parser(
        "reconcile", help="record payments Telegram made that we missed (getStarTransactions)"
    )
    reconcile_app.add_argument("--app", type=UUID, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    if options.command == "healthcheck":  # needs no database settings: the container probe
        return asyncio.run(run_healthcheck(os.environ.get("PORTEX_GRPC_ADDR", DEFAULT_GRPC_ADDR)))
    try:
        if options.command == "dev":
            from portex_pay.devtools.run import run_dev

            return run_dev()
        settings = Settings.from_env(serving=options.command == "serve")
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    register_secret(settings.payload_secret)
    try:
        if options.command == "serve":
            asyncio.run(serve(settings))
        elif options.command == "migrate":
            asyncio.run(run_migrate(settings))
        else:
            asyncio.run(run_admin(settings, options))
    except (AdminError, ConnectionError) as error:
        print(f"error: {_one_line(str(error))}", file=sys.stderr)
        return 1
    return 0


def _one_line(text: str) -> str:
    """The message with line breaks and other control characters escaped: one line, always."""
    return "".join(
        char if char.isprintable() or char == " " else char.encode("unicode_escape").decode()
        for char in text
    )


__all__ = ["main", "serve"]
