"""The Mini App edge's operator commands as an operator runs them (real processes): `portex-pay
admin set-pricing / set-origins / set-callback-prefixes / set-item / delete-item / list-items`
print one JSON object on success and one `error: ...` line (exit 1) otherwise; `portex-pay dev
init-data` prints one initData line that verifies with the bot's token."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from portex_pay.app import PortexApp
from portex_pay.domain.catalog import MAX_CALLBACK_PREFIXES, MAX_ORIGINS
from portex_pay.domain.init_data import verify_init_data
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import DATA_KEY, PAYLOAD_SECRET, TestApp, new_bot_token
from tests.e2e.conftest import ServerFactory

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or "grpcurl"
SERVICE = "portex.payment.v1.PaymentService"


async def cli(
    database_url: str,
    fake: FakeBotApi,
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[int, str, str]:
    """`portex-pay ARGS...`: exit code, stdout, stderr."""
    environment = {
        **{k: v for k, v in os.environ.items() if k != "PORTEX_DEV_BOT_TOKEN"},
        "DATABASE_URL": database_url,
        "PORTEX_TELEGRAM_API_URL": fake.base_url,
        "PORTEX_LOG_FORMAT": "json",
        "PORTEX_PAYLOAD_SECRET": PAYLOAD_SECRET,
        "PORTEX_DATA_KEY": DATA_KEY,
        **(env or {}),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "portex_pay", *args,
        env=environment, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def admin(database_url: str, fake: FakeBotApi, *args: str) -> tuple[int, Any, str]:
    code, out, err = await cli(database_url, fake, "admin", *args)
    if code == 0:
        assert len(out.strip().splitlines()) == 1, out  # one JSON object, one line
        parsed = json.loads(out)
        assert isinstance(parsed, dict)
        return code, parsed, err
    return code, out or None, err


def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


async def refused(database_url: str, fake: FakeBotApi, *args: str) -> str:
    code, out, err = await admin(database_url, fake, *args)
    assert (code, out) == (1, None), err
    return one_error_line(err)


async def new_app(database_url: str, fake: FakeBotApi, *, bot: bool = True) -> tuple[str, str]:
    """(application id, bot token) of an application made with `admin create-app`."""
    token = new_bot_token()
    args = ["create-app", "--name", f"edge-{uuid.uuid4().hex[:8]}"]
    if bot:
        fake.add_bot(token)
        args += ["--bot-token", token]
    code, created, err = await admin(database_url, fake, *args)
    assert code == 0, err
    return created["application_id"], token


async def edge_row(service: PortexApp, app_id: str) -> tuple[str, list[str], list[str]]:
    row = await service.pool.fetchrow(
        "SELECT pricing_mode, allowed_origins, callback_prefixes FROM applications "
        "WHERE id = $1::uuid",
        app_id,
    )
    assert row is not None
    return row["pricing_mode"], list(row["allowed_origins"]), list(row["callback_prefixes"])


# --- Pricing, origins, callback prefixes ----------------------------------------------------------


async def test_set_pricing_switches_between_catalog_and_open(
    database_url, fake_telegram, service: PortexApp
):
    app_id, _ = await new_app(database_url, fake_telegram)
    assert (await edge_row(service, app_id))[0] == "catalog"  # the safe default
    code, shown, err = await admin(
        database_url, fake_telegram, "set-pricing", "--app", app_id, "--mode", "open"
    )
    assert code == 0, err
    assert shown == {
        "application_id": app_id,
        "pricing_mode": "open",
        "allowed_origins": [],
        "callback_prefixes": [],
    }
    assert (await edge_row(service, app_id))[0] == "open"
    code, shown, _ = await admin(
        database_url, fake_telegram, "set-pricing", "--app", app_id, "--mode", "catalog"
    )
    assert (code, shown["pricing_mode"]) == (0, "catalog")
    assert (await edge_row(service, app_id))[0] == "catalog"


async def test_set_pricing_refuses_another_mode_with_usage(database_url, fake_telegram):
    app_id, _ = await new_app(database_url, fake_telegram)
    code, out, err = await admin(
        database_url, fake_telegram, "set-pricing", "--app", app_id, "--mode", "free"
    )
    assert (code, out) == (2, None)
    assert "usage:" in err and "invalid choice" in err


async def test_set_origins_normalises_dedupes_replaces_and_clears(
    database_url, fake_telegram, service: PortexApp
):
    app_id, _ = await new_app(database_url, fake_telegram)
    code, shown, err = await admin(
        database_url, fake_telegram, "set-origins", "--app", app_id,
        "--origin", "HTTPS://Game.Example.com:443/",
        "--origin", "https://game.example.com",
        "--origin", "http://localhost:5173",
    )  # fmt: skip
    assert code == 0, err
    assert shown["allowed_origins"] == ["https://game.example.com", "http://localhost:5173"]
    assert shown["pricing_mode"] == "catalog"
    assert (await edge_row(service, app_id))[1] == shown["allowed_origins"]

    code, shown, _ = await admin(
        database_url, fake_telegram, "set-origins", "--app", app_id,
        "--origin", "https://other.example.com",
    )  # fmt: skip
    assert (code, shown["allowed_origins"]) == (0, ["https://other.example.com"])

    code, shown, _ = await admin(
        database_url, fake_telegram, "set-origins", "--app", app_id, "--none"
    )
    assert (code, shown["allowed_origins"]) == (0, [])
    assert (await edge_row(service, app_id))[1] == []


@pytest.mark.parametrize(
    "bad",
    [
        "game.example.com",
        "https://game.example.com/path",
        "https://game.example.com/?q=1",
        "https://user@game.example.com",
        "ftp://game.example.com",
        "https://game.example.com\n",
        "https://evil\x1b[2J.example.com",
    ],
)
async def test_set_origins_refuses_a_bad_origin_by_name_and_changes_nothing(
    database_url, fake_telegram, service: PortexApp, bad: str
):
    app_id, _ = await new_app(database_url, fake_telegram)
    await admin(
        database_url, fake_telegram, "set-origins", "--app", app_id,
        "--origin", "https://kept.example.com",
    )  # fmt: skip
    line = await refused(
        database_url, fake_telegram, "set-origins", "--app", app_id,
        "--origin", "https://fine.example.com", "--origin", bad,
    )  # fmt: skip
    assert line.startswith(f"error: invalid origin {bad!r}: ")
    assert "\x1b" not in line
    assert (await edge_row(service, app_id))[1] == ["https://kept.example.com"]


async def test_set_origins_refuses_more_than_the_limit(
    database_url, fake_telegram, service: PortexApp
):
    app_id, _ = await new_app(database_url, fake_telegram)
    args: list[str] = []
    for n in range(MAX_ORIGINS + 1):
        args += ["--origin", f"https://app{n}.example.com"]
    line = await refused(database_url, fake_telegram, "set-origins", "--app", app_id, *args)
    assert line == f"error: at most {MAX_ORIGINS} origins per application, not {MAX_ORIGINS + 1}"
    assert (await edge_row(service, app_id))[1] == []
    code, shown, err = await admin(
        database_url, fake_telegram, "set-origins", "--app", app_id, *args[:-2]
    )
    assert code == 0, err
    assert len(shown["allowed_origins"]) == MAX_ORIGINS


@pytest.mark.parametrize("command", ["set-origins", "set-callback-prefixes"])
async def test_a_list_or_none_is_required(database_url, fake_telegram, command: str):
    app_id, _ = await new_app(database_url, fake_telegram)
    code, _, err = await admin(database_url, fake_telegram, command, "--app", app_id)
    assert code == 2 and "usage:" in err
    flag = "--origin" if command == "set-origins" else "--prefix"
    code, _, err = await admin(
        database_url, fake_telegram, command, "--app", app_id, "--none",
        flag, "https://a.example.com",
    )  # fmt: skip
    assert code == 2 and "not allowed with" in err


async def test_set_callback_prefixes_replaces_and_clears(
    database_url, fake_telegram, service: PortexApp
):
    app_id, _ = await new_app(database_url, fake_telegram)
    code, shown, err = await admin(
        database_url, fake_telegram, "set-callback-prefixes", "--app", app_id,
        "--prefix", "https://api.example.com/hooks/",
        "--prefix", "https://api.example.com/hooks/",
        "--prefix", "http://127.0.0.1:9000/cb",
    )  # fmt: skip
    assert code == 0, err
    assert shown["callback_prefixes"] == [
        "https://api.example.com/hooks/",
        "http://127.0.0.1:9000/cb",
    ]
    assert set(shown) == {"application_id", "pricing_mode", "allowed_origins", "callback_prefixes"}
    assert (await edge_row(service, app_id))[2] == shown["callback_prefixes"]
    code, shown, _ = await admin(
        database_url, fake_telegram, "set-callback-prefixes", "--app", app_id, "--none"
    )
    assert (code, shown["callback_prefixes"]) == (0, [])


@pytest.mark.parametrize(
    "bad",
    [
        "api.example.com/hooks",
        "https://api.example.com/hooks?token=1",
        "https://api.example.com/hooks#x",
        "mailto:ops@example.com",
        "https://api.example.com/\x01",
    ],
)
async def test_set_callback_prefixes_refuses_a_bad_prefix_by_name(
    database_url, fake_telegram, service: PortexApp, bad: str
):
    app_id, _ = await new_app(database_url, fake_telegram)
    line = await refused(
        database_url, fake_telegram, "set-callback-prefixes", "--app", app_id, "--prefix", bad
    )
    assert line.startswith(f"error: invalid callback prefix {bad!r}: ")
    assert (await edge_row(service, app_id))[2] == []


async def test_set_callback_prefixes_refuses_more_than_the_limit(database_url, fake_telegram):
    app_id, _ = await new_app(database_url, fake_telegram)
    args: list[str] = []
    for n in range(MAX_CALLBACK_PREFIXES + 1):
        args += ["--prefix", f"https://api.example.com/hooks/{n}/"]
    line = await refused(
        database_url, fake_telegram, "set-callback-prefixes", "--app", app_id, *args
    )
    assert line == (
        f"error: at most {MAX_CALLBACK_PREFIXES} callback prefixes per application, "
        f"not {MAX_CALLBACK_PREFIXES + 1}"
    )


# --- The catalog ---------------------------------------------------------------------------------


async def test_set_item_list_items_and_delete_item(database_url, fake_telegram, service: PortexApp):
    app_id, _ = await new_app(database_url, fake_telegram)
    code, listed, err = await admin(database_url, fake_telegram, "list-items", "--app", app_id)
    assert (code, listed) == (0, {"application_id": app_id, "items": []}), err

    code, shown, err = await admin(
        database_url, fake_telegram, "set-item", "--app", app_id, "--key", "sword",
        "--amount", "25", "--title", "Sword", "--description", "Sharp.",
        "--photo-url", "https://cdn.example.com/sword.png",
        "--metadata", "sku=SW-1", "--metadata", "formula=a=b",
    )  # fmt: skip
    assert code == 0, err
    sword = {
        "key": "sword",
        "amount": 25,
        "title": "Sword",
        "description": "Sharp.",
        "photo_url": "https://cdn.example.com/sword.png",
        "metadata": {"sku": "SW-1", "formula": "a=b"},
        "subscription_period": None,
    }
    assert shown == {"application_id": app_id, "item": sword}
    code, shown, _ = await admin(
        database_url, fake_telegram, "set-item", "--app", app_id, "--key", "axe", "--amount", "7"
    )
    axe = {
        "key": "axe",
        "amount": 7,
        "title": None,
        "description": None,
        "photo_url": None,
        "metadata": {},
        "subscription_period": None,
    }
    assert (code, shown["item"]) == (0, axe)
    code, shown, err = await admin(
        database_url, fake_telegram, "set-item", "--app", app_id, "--key", "vip",
        "--amount", "100", "--subscription-period", "2592000",
    )  # fmt: skip
    vip = {**axe, "key": "vip", "amount": 100, "subscription_period": 2592000}
    assert (code, shown["item"]) == (0, vip), err

    code, listed, _ = await admin(database_url, fake_telegram, "list-items", "--app", app_id)
    assert (code, listed["items"]) == (0, [axe, sword, vip])

    # Replacing sets every field: what is not given is cleared.
    code, shown, _ = await admin(
        database_url, fake_telegram, "set-item", "--app", app_id, "--key", "sword",
        "--amount", "30",
    )  # fmt: skip
    assert code == 0
    row = await service.pool.fetchrow(
        "SELECT amount, title FROM catalog_items WHERE application_id = $1::uuid AND key = $2",
        app_id,
        "sword",
    )
    assert row is not None
    assert (row["amount"], row["title"]) == (30, None)

    code, gone, err = await admin(
        database_url, fake_telegram, "delete-item", "--app", app_id, "--key", "sword"
    )
    assert (code, gone) == (0, {"application_id": app_id, "deleted": "sword"}), err
    line = await refused(
        database_url, fake_telegram, "delete-item", "--app", app_id, "--key", "sword"
    )
    assert line == f"error: no item 'sword' in application {app_id}"
    code, listed, _ = await admin(database_url, fake_telegram, "list-items", "--app", app_id)
    assert (code, listed["items"]) == (0, [axe, vip])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--amount", "0"], "error: invalid item: --amount must be a whole number of Stars"),
        (["--amount", "10001"], "error: invalid item: --amount must be a whole number of Stars"),
        (["--key", "x" * 65], "error: invalid item: --key must be 1-64 characters"),
        (["--key", "two\nlines"], "error: invalid item: --key must be a single line"),
        (["--title", "t" * 33], "error: invalid item: --title must be 1-32 characters"),
        (["--title", "evil\x1b[2J"], "error: invalid item: --title must be a single line"),
        (["--description", "nul\x7f"], "error: invalid item: --description must not contain"),
        (["--photo-url", "ftp://x.example/a.png"], "error: invalid item: --photo-url must be"),
        (["--metadata", "sku"], "error: invalid item: --metadata takes KEY=VALUE"),
        (
            ["--subscription-period", "86400"],
            "error: invalid item: --subscription-period must be 2592000 (30 days)",
        ),
        (["--metadata", "sku=" + "v" * 501], "error: invalid item: --metadata sku: the value must"),
        (["--metadata", "k" * 41 + "=v"], "error: invalid item: --metadata " + "k" * 40 + "…: "),
    ],
)
async def test_set_item_refuses_a_bad_item_in_one_line_and_stores_nothing(
    database_url, fake_telegram, service: PortexApp, args: list[str], expected: str
):
    app_id, _ = await new_app(database_url, fake_telegram)
    base = {"--key": "gem", "--amount": "5"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [part for pair in base.items() for part in pair]
    line = await refused(database_url, fake_telegram, "set-item", "--app", app_id, *flat)
    assert line.startswith(expected), line
    assert "\x1b" not in line
    count = await service.pool.fetchval(
        "SELECT count(*) FROM catalog_items WHERE application_id = $1::uuid", app_id
    )
    assert count == 0


async def test_set_item_reports_every_bad_field(database_url, fake_telegram):
    app_id, _ = await new_app(database_url, fake_telegram)
    line = await refused(
        database_url, fake_telegram, "set-item", "--app", app_id, "--key", "",
        "--amount", "-1", "--photo-url", "nope",
    )  # fmt: skip
    assert line.startswith("error: invalid item: --key ")
    assert "; --amount " in line and "; --photo-url " in line


async def test_set_item_amount_must_be_a_number(database_url, fake_telegram):
    app_id, _ = await new_app(database_url, fake_telegram)
    code, _, err = await admin(
        database_url, fake_telegram, "set-item", "--app", app_id, "--key", "k", "--amount", "ten"
    )
    assert code == 2 and "usage:" in err


@pytest.mark.parametrize(
    "args",
    [
        ["set-pricing", "--mode", "open"],
        ["set-origins", "--origin", "https://a.example.com"],
        ["set-origins", "--none"],
        ["set-callback-prefixes", "--prefix", "https://a.example.com/"],
        ["set-item", "--key", "k", "--amount", "1"],
        ["delete-item", "--key", "k"],
        ["list-items"],
    ],
)
async def test_an_unknown_application_is_one_error_line(database_url, fake_telegram, args):
    missing = str(uuid.uuid4())
    line = await refused(database_url, fake_telegram, args[0], "--app", missing, *args[1:])
    assert line == f"error: no application {missing}"


async def test_catalog_set_by_the_cli_is_what_grpc_lists_through_reflection(
    database_url, fake_telegram, start_server: ServerFactory, app: TestApp
):
    code, _, err = await admin(
        database_url, fake_telegram, "set-item", "--app", app.id, "--key", "potion",
        "--amount", "3", "--title", "Potion",
    )  # fmt: skip
    assert code == 0, err
    server = await start_server()
    process = await asyncio.create_subprocess_exec(
        GRPCURL, "-plaintext", "-H", f"authorization: Bearer {app.api_key}", "-d", "{}",
        server.target, f"{SERVICE}/ListCatalogItems",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err_bytes = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err_bytes.decode()
    assert json.loads(out) == {"items": [{"key": "potion", "amount": "3", "title": "Potion"}]}


# --- dev init-data ------------------------------------------------------------------------------


def verified(init_data: str, token: str, **kwargs: Any) -> Any:
    return verify_init_data(
        init_data,
        bot_token=token,
        bot_id=int(token.split(":")[0]),
        now=datetime.now(UTC),
        **kwargs,
    )


async def init_data(
    database_url: str, fake: FakeBotApi, *args: str, **kwargs: Any
) -> tuple[int, str, str]:
    return await cli(database_url, fake, "dev", "init-data", *args, **kwargs)


async def test_init_data_for_an_application_verifies_with_its_bot_token(
    database_url, fake_telegram
):
    app_id, token = await new_app(database_url, fake_telegram)
    code, out, err = await init_data(
        database_url, fake_telegram, "--user", "42", "--app", app_id,
        "--first-name", "Ann", "--username", "ann_42",
    )  # fmt: skip
    assert code == 0, err
    assert out.endswith("\n") and len(out.splitlines()) == 1
    line = out.strip()
    assert token.split(":")[1] not in line  # signed with the token, never carrying it
    data = verified(line, token)
    assert (data.user.id, data.user.first_name, data.user.username) == (42, "Ann", "ann_42")
    assert abs(datetime.now(UTC) - data.auth_date) < timedelta(seconds=30)
    assert data.method == "hmac"
    # It is the bare query string an SDK would send in X-Tg-InitData.
    assert set(parse_qs(line)) == {"user", "auth_date", "hash"}


async def test_init_data_with_a_bot_token_and_an_age(database_url, fake_telegram):
    token = new_bot_token()
    code, out, err = await init_data(
        database_url, fake_telegram, "--user", "7", "--bot-token", token, "--age", "7200"
    )
    assert code == 0, err
    data = verified(out.strip(), token)
    assert data.user.id == 7 and data.user.first_name == "Dev"
    age = datetime.now(UTC) - data.auth_date
    assert timedelta(seconds=7190) < age < timedelta(seconds=7230)
    with pytest.raises(Exception) as raised:
        verified(out.strip(), token, max_age=timedelta(hours=1))
    assert getattr(raised.value, "reason", None) == "INIT_DATA_EXPIRED"
    with pytest.raises(Exception) as raised:
        verified(out.strip(), new_bot_token())
    assert getattr(raised.value, "reason", None) == "INIT_DATA_INVALID"


async def test_init_data_defaults_to_make_runs_bot(database_url, fake_telegram, tmp_path: Path):
    # Neither --app nor --bot-token: PORTEX_DEV_BOT_TOKEN, then the sandbox bot of `make run`.
    code, _, err = await init_data(database_url, fake_telegram, "--user", "42", cwd=tmp_path)
    assert code == 1
    assert one_error_line(err).startswith("error: no bot token: give --app ID or --bot-token")
    sandbox = new_bot_token()
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "sandbox-bot-token").write_text(sandbox + "\n")
    code, out, err = await init_data(database_url, fake_telegram, "--user", "42", cwd=tmp_path)
    assert code == 0, err
    assert verified(out.strip(), sandbox).user.id == 42
    chosen = new_bot_token()
    code, out, err = await init_data(
        database_url, fake_telegram, "--user", "42", cwd=tmp_path,
        env={"PORTEX_DEV_BOT_TOKEN": chosen},
    )  # fmt: skip
    assert code == 0, err
    assert verified(out.strip(), chosen).user.id == 42


async def test_init_data_refusals_are_one_error_line(database_url, fake_telegram):
    missing = str(uuid.uuid4())
    code, out, err = await init_data(database_url, fake_telegram, "--user", "42", "--app", missing)
    assert (code, out) == (1, "")
    assert one_error_line(err) == f"error: no application {missing}"

    botless, _ = await new_app(database_url, fake_telegram, bot=False)
    code, out, err = await init_data(database_url, fake_telegram, "--user", "42", "--app", botless)
    assert (code, out) == (1, "")
    assert one_error_line(err) == f"error: application {botless} has no bot"

    token = new_bot_token()
    for args in (["--user", "0"], ["--user", "-3"], ["--user", "1", "--first-name", "a\nb"]):
        code, out, err = await init_data(database_url, fake_telegram, *args, "--bot-token", token)
        assert (code, out) == (1, ""), args
        one_error_line(err)

    code, _, err = await init_data(
        database_url, fake_telegram, "--user", "1", "--app", botless, "--bot-token", token
    )
    assert code == 2 and "not allowed with" in err
