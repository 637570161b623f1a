"""`make run`: the service on a fresh machine, with nothing configured.

When `DATABASE_URL` is unset it starts a private PostgreSQL in `.data/postgres` (kept between runs).
When `PORTEX_TELEGRAM_API_URL` is unset it starts the Telegram sandbox (the fake Bot API, accepting
any well-formed bot token) on `PORTEX_SANDBOX_ADDR` (default 127.0.0.1:8081), points the service
at it, and serves the demo Mini App at `/demo/` on the HTTP address (demo/) unless
`PORTEX_DEV_BOT_TOKEN` is given (the demo signs initData with the bot's token, so only the
sandbox's own bot is used for it). It keeps a payload
secret in `.data/`, ensures an application named `dev` (bound to a sandbox bot, or to
`PORTEX_DEV_BOT_TOKEN` when given), prints the demo's address, its API key and a grpcurl line to
try, and serves until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from portex_pay.adapters.postgres.migrations import migrate, wait_for_database
from portex_pay.adapters.telegram.client import new_session
from portex_pay.app import application_admin, serve, telegram_client
from portex_pay.cli import run_loop
from portex_pay.config import DEV_DATA_DIR, ConfigError, Settings
from portex_pay.domain.catalog import CatalogItem
from portex_pay.domain.sealing import new_data_key
from portex_pay.logging import configure_logging
from portex_pay_devtools.demo import DemoShop, signed_init_data
from portex_pay_devtools.fake_bot_api import FakeBotApi
from portex_pay_devtools.pgcluster import PgCluster

DATA_DIR = DEV_DATA_DIR
DEV_APP = "dev"
DEV_ITEM = CatalogItem(key="item", amount=5, title="Book", description="Magic book")
DEV_USER = 42


def _private_file(path: Path, make: str) -> str:
    """Reads a generated value kept in .data, creating it (mode 0600) the first time."""
    if path.exists():
        return path.read_text().strip()
    path.write_text(make + "\n")
    path.chmod(0o600)
    return make


async def _ensure_dev_app(
    settings: Settings, bot_token: str | None, origins: list[str]
) -> tuple[str, str]:
    """The dev application's id and API key; it sells DEV_ITEM (catalog pricing, the default)
    and allows `origins` (the demo page's) in place of the loopback and localhost origins it had
    (earlier runs' demo pages), besides its other ones."""
    conn = await wait_for_database(settings.db.url, settings.db.connect_timeout)
    session = await new_session()
    try:
        await migrate(conn)
        admin = application_admin(
            conn,
            telegram_client(session, settings),
            data_keys=settings.sealing.data_keys(),
            max_amount=settings.payments.max_amount,
        )
        key_file = DATA_DIR / "dev-api-key"
        existing = next(
            (
                listing.application
                for listing in await admin.list_apps()
                if listing.application.name == DEV_APP
            ),
            None,
        )
        if existing is None:
            application, key = await admin.create_app(DEV_APP, bot_token)
            await admin.set_item(application.id, DEV_ITEM)
            if origins:
                await admin.set_origins(application.id, origins)
            key_file.write_text(key + "\n")
            key_file.chmod(0o600)
            return str(application.id), key
        existing_id = existing.id
        wanted = _with_demo_origins(existing.allowed_origins, origins)
        if wanted != list(existing.allowed_origins):
            await admin.set_origins(existing_id, wanted)
        if all(item.key != DEV_ITEM.key for item in await admin.list_items(existing_id)):
            await admin.set_item(existing_id, DEV_ITEM)
        if not key_file.exists():
            # The key is stored only hashed; mint a new one when the local copy is gone.
            key_file.write_text(await admin.rotate_key(existing_id) + "\n")
            key_file.chmod(0o600)
        return str(existing_id), key_file.read_text().strip()
    finally:
        await session.close()
        await conn.close()


def run_dev() -> int:
    """Starts the private PostgreSQL (blocking, before the event loop), then serves."""
    DATA_DIR.mkdir(exist_ok=True)
    env = dict(os.environ)
    cluster: PgCluster | None = None
    if not env.get("DATABASE_URL"):
        cluster = PgCluster(DATA_DIR.resolve() / "postgres")
        cluster.start()
        env["DATABASE_URL"] = cluster.dsn
    try:
        try:
            uvloop = Settings.from_env(env, serving=False).grpc.uvloop
        except ConfigError:
            uvloop = False  # _serve_dev reports the error
        return run_loop(_serve_dev(env), uvloop=uvloop)
    finally:
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.stop()


async def _serve_dev(env: dict[str, str]) -> int:
    sandbox: FakeBotApi | None = None
    bot_token = env.get("PORTEX_DEV_BOT_TOKEN")
    try:
        if not env.get("PORTEX_TELEGRAM_API_URL"):
            host, _, port = env.get("PORTEX_SANDBOX_ADDR", "127.0.0.1:8081").rpartition(":")
            sandbox = FakeBotApi(host=host, port=int(port), accept_any_token=True)
            await sandbox.start()
            env["PORTEX_TELEGRAM_API_URL"] = sandbox.base_url
            bot_token = bot_token or _private_file(
                DATA_DIR / "sandbox-bot-token", f"7000000001:{secrets.token_urlsafe(27)}"
            )
        # Development receivers listen on this machine: let callbacks reach loopback and LAN.
        env.setdefault("PORTEX_CALLBACK_ALLOW_PRIVATE", "true")
        env.setdefault(
            "PORTEX_PAYLOAD_SECRET",
            _private_file(DATA_DIR / "payload-secret", secrets.token_urlsafe(32)),
        )
        env.setdefault("PORTEX_DATA_KEY", _private_file(DATA_DIR / "data-key", new_data_key()))
        try:
            settings = Settings.from_env(env)
        except ConfigError as error:
            print(error, file=sys.stderr)
            return 2
        configure_logging(settings.log.format, settings.log.level)
        # The demo signs initData for any user id with the bot's token: only the sandbox's own
        # bot may be used so, never one given in PORTEX_DEV_BOT_TOKEN (it may be a real bot).
        sandbox_bot = sandbox is not None and not env.get("PORTEX_DEV_BOT_TOKEN")
        page = _demo_page(settings) if sandbox_bot else None
        origins = _demo_origins(settings) if page is not None else []
        application_id, api_key = await _ensure_dev_app(settings, bot_token, origins)
        banner = _banner(settings, application_id, api_key, sandbox, bot_token, page)
        print(banner, file=sys.stderr, flush=True)
        demo = None
        if sandbox is not None and sandbox_bot and bot_token:
            demo = DemoShop(application_id, bot_token, sandbox, settings.db.url).mount
        await serve(settings, http_extension=demo)
    finally:
        if sandbox is not None:
            await sandbox.stop()
    return 0


def _demo_page(settings: Settings) -> str:
    """The demo Mini App's address on this machine (a wildcard HTTP address is reached on
    loopback)."""
    host, _, port = settings.http.addr.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):  # noqa: S104 - read, not bound
        host = "127.0.0.1"
    return f"http://{host}:{port}/demo/"


def _demo_origins(settings: Settings) -> list[str]:
    """The origins the demo page may be opened at: browsers send an Origin with its POSTs to the
    edge, which grants only the application's allowed origins."""
    page = _demo_page(settings).removesuffix("/demo/")
    port = page.rpartition(":")[2]
    return list(dict.fromkeys([page, f"http://127.0.0.1:{port}", f"http://localhost:{port}"]))


def _with_demo_origins(allowed: Sequence[str], origins: list[str]) -> list[str]:
    """`allowed` with the demo's `origins` in place of its loopback and localhost ones (earlier
    runs' demo pages, an HTTP port of their own each: appended, they would grow past
    set_origins' cap and stop `make run` at start); `allowed` as it is when there is no demo."""
    if not origins:
        return list(allowed)
    return list(dict.fromkeys([*(o for o in allowed if not _loopback_origin(o)), *origins]))


def _loopback_origin(origin: str) -> bool:
    """Whether `origin` is a page on this machine (http on loopback or localhost, any port): the
    demo's origins, replaced on each run."""
    parsed = urlsplit(origin)
    return parsed.scheme == "http" and parsed.hostname in ("127.0.0.1", "localhost", "::1")


def _banner(
    settings: Settings,
    application_id: str,
    api_key: str,
    sandbox: FakeBotApi | None,
    bot_token: str | None,
    page: str | None,
) -> str:
    example = json.dumps(
        {"tg_use_id": 42, "amount": 5, "label": "item", "title": "Book", "description": "Magic"}
    )
    lines = [""]
    if page is not None:
        lines += [f"Demo Mini App   {page}   (open it in a browser: a shop in the sandbox)", ""]
    lines += [
        "portex-pay is running (development)",
        f"  gRPC            {settings.grpc.addr}",
        f"  HTTP            {settings.http.addr}",
        f"  application id  {application_id}",
        f"  API key         {api_key}   (also in .data/dev-api-key)",
        "",
        "Try it:",
        f"  grpcurl -plaintext -H 'authorization: Bearer {api_key}' -d '{example}' \\",
        f"    {settings.grpc.addr} portex.payment.v1.PaymentService/Pay",
    ]
    if bot_token:
        init_data = signed_init_data(DEV_USER, bot_token)
        edge = f"http://{settings.http.addr}/v1"
        body = json.dumps(
            {"tg_use_id": DEV_USER, "amount": DEV_ITEM.amount, "label": DEV_ITEM.key,
             "title": "Book", "description": "Magic book"}
        )  # fmt: skip
        lines += [
            "",
            f"The Mini App edge (the Portex JS SDK's API), as Telegram user {DEV_USER}"
            " (initData signed now, valid 24 h;",
            f"  `portex-pay dev init-data --user {DEV_USER}` signs a fresh one):",
            f"  curl -s {edge}/createTgPayment -H 'X-App-Id: {application_id}' \\",
            f"    -H 'X-Tg-InitData: {init_data}' \\",
            f"    -H 'Content-Type: application/json' -d '{body}'",
        ]
    if sandbox is not None:
        lines += [
            "",
            f"Telegram sandbox (fake Bot API) at {sandbox.base_url}; play a user who pays:",
            f'  curl -s {sandbox.base_url}/_fake/pay -d \'{{"link": "<tg_payment_url>", '
            '"user_id": 42}\'',
            "Real Telegram: set PORTEX_TELEGRAM_API_URL=https://api.telegram.org and "
            "PORTEX_DEV_BOT_TOKEN (or `portex-pay admin set-bot-token`).",
        ]
    return "\n".join(lines) + "\n"
