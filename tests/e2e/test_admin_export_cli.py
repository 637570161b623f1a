"""`portex-pay admin export` as finance runs it: a real process writing CSV or JSON lines.

Orders are seeded straight into PostgreSQL (2,500 of them in a few statements, with runs of equal
create times so that batch boundaries fall inside a run), then exported through the real command
and compared with the database row by row: every order of the range once, in create-time order,
with its state as a reader sees it (an unpaid order past its expiry is EXPIRED). The bounds, the
other application's orders, the stable header, JSON lines, `--output` and bad arguments follow.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from portex_pay.app import PortexApp
from portex_pay.service.export import ORDER_COLUMNS, TRANSACTION_COLUMNS
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import DATA_KEY, PAYLOAD_SECRET, TestApp

START = datetime(2025, 3, 1, tzinfo=UTC)
END = START + timedelta(days=1)
HEADER = [
    "tg_payment_id",
    "create_time",
    "state",
    "tg_use_id",
    "amount",
    "label",
    "title",
    "telegram_payment_charge_id",
    "paid_time",
    "fulfilled_time",
    "refund_time",
    "cancel_time",
    "expire_time",
    "metadata",
]
# Seeded order i is, by i % 5: pending and payable, pending past its expiry, paid (and
# fulfilled when i % 10 == 2), refunded, cancelled.
STATES = ("PENDING", "EXPIRED", "PAID", "REFUNDED", "CANCELLED")

_SEED = """
INSERT INTO orders (application_id, tg_use_id, amount, label, title, description, state,
                    expires_at, created_at, updated_at, paid_at, telegram_payment_charge_id,
                    refunded_at, cancelled_at, fulfilled_at, metadata)
SELECT $1::uuid, 1000 + i % 7, 1 + i % 50, 'item-' || i, 'Title ' || i, 'd',
       (ARRAY['pending', 'pending', 'paid', 'refunded', 'cancelled'])[i % 5 + 1],
       CASE WHEN i % 5 = 1 THEN now() - interval '1 day' ELSE now() + interval '1 day' END,
       created, created, paid, CASE WHEN paid IS NULL THEN NULL ELSE $4 || i END,
       CASE WHEN i % 5 = 3 THEN created + interval '2 hours' END,
       CASE WHEN i % 5 = 4 THEN created + interval '3 minutes' END,
       CASE WHEN i % 10 = 2 THEN created + interval '5 minutes' END,
       CASE WHEN i % 3 = 0 THEN jsonb_build_object('sku', 'gem-' || i, 'note', 'ü,"x"')
            ELSE '{}' END
FROM generate_series($2::int, $3::int - 1) AS i,
     -- Runs of 7 orders share a create time: a batch of 1000 ends inside a run.
     LATERAL (SELECT $5::timestamptz + (i / 7) * interval '1 second' AS created) c,
     LATERAL (SELECT CASE WHEN i % 5 IN (2, 3) THEN created + interval '1 minute' END AS paid) p
RETURNING tg_payment_id
"""


async def seed(
    service: PortexApp, app: TestApp, first: int, count: int, at: datetime = START
) -> list[int]:
    """Orders `first` .. `first + count - 1` of `app` (see STATES), created from `at` on."""
    rows = await service.pool.fetch(
        _SEED, app.id, first, first + count, f"stx-{uuid.uuid4().hex[:8]}-", at
    )
    return [row["tg_payment_id"] for row in rows]


async def portex_pay(
    database_url: str, fake: FakeBotApi, *args: str, cwd: Path | None = None
) -> tuple[int, str, str]:
    """`portex-pay ARGS` against the test database and fake Bot API: exit status, stdout,
    stderr."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORTEX_TELEGRAM_API_URL": fake.base_url,
        "PORTEX_LOG_FORMAT": "json",
        "PORTEX_PAYLOAD_SECRET": PAYLOAD_SECRET,
        "PORTEX_DATA_KEY": DATA_KEY,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "portex_pay", *args,
        env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return int(process.returncode or 0), out.decode(), err.decode()


async def export(
    database_url: str, fake: FakeBotApi, *args: str, cwd: Path | None = None
) -> tuple[int, str, str]:
    """`portex-pay admin export ARGS`: exit status, stdout, stderr."""
    return await portex_pay(database_url, fake, "admin", "export", *args, cwd=cwd)


def range_args(app: TestApp, start: datetime = START, end: datetime = END) -> list[str]:
    bounds = ["--from", start.isoformat(), "--to", end.isoformat()]
    return ["--app", app.id, "--what", "orders", *bounds]


def utc(moment: datetime | None) -> str | None:
    """How the export writes a time: RFC 3339 in UTC with Z, microseconds when there are any."""
    if moment is None:
        return None
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{moment.microsecond:06d}" if moment.microsecond else "") + "Z"


async def database_rows(service: PortexApp, app: TestApp) -> list[dict[str, Any]]:
    """The application's orders of [START, END) as the export should write them (JSON lines)."""
    rows = await service.pool.fetch(
        "SELECT * FROM orders WHERE application_id = $1::uuid AND created_at >= $2 "
        "AND created_at < $3 ORDER BY created_at, tg_payment_id",
        app.id,
        START,
        END,
    )
    return [
        {
            "tg_payment_id": row["tg_payment_id"],
            "create_time": utc(row["created_at"]),
            "state": STATES[int(row["label"].removeprefix("item-")) % 5],
            "tg_use_id": row["tg_use_id"],
            "amount": row["amount"],
            "label": row["label"],
            "title": row["title"],
            "telegram_payment_charge_id": row["telegram_payment_charge_id"],
            "paid_time": utc(row["paid_at"]),
            "fulfilled_time": utc(row["fulfilled_at"]),
            "refund_time": utc(row["refunded_at"]),
            "cancel_time": utc(row["cancelled_at"]),
            "expire_time": utc(row["expires_at"]),
            "metadata": row["metadata"],
        }
        for row in rows
    ]


def csv_rows(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    return header, [dict(zip(header, values, strict=True)) for values in reader]


def as_csv(row: dict[str, Any]) -> dict[str, str]:
    """A JSON-lines row as its CSV cells: null empty, metadata as JSON text."""
    cells = {}
    for name, value in row.items():
        if value is None:
            cells[name] = ""
        elif name == "metadata":
            cells[name] = json.dumps(
                dict(sorted(value.items())), ensure_ascii=False, separators=(",", ":")
            )
        else:
            cells[name] = str(value)
    return cells


async def test_2500_orders_across_batches_are_exported_once_each_in_order_as_json_lines(
    database_url: str, fake_telegram: FakeBotApi, service: PortexApp, make_app: Any
) -> None:
    """2,500 orders (three batches, boundaries inside runs of equal create times) come out as
    2,500 JSON lines equal to the database's rows, each order once, by create time then id, with
    the state a reader sees; another application's orders of the same range are absent."""
    app: TestApp = await make_app(bot=False)
    other: TestApp = await make_app(bot=False)
    seeded = await seed(service, app, 0, 2500)
    theirs = await seed(service, other, 0, 40)

    args = [*range_args(app), "--format", "jsonl"]
    code, out, err = await export(database_url, fake_telegram, *args)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 2500
    assert sorted(line["tg_payment_id"] for line in lines) == sorted(seeded)
    assert not {line["tg_payment_id"] for line in lines} & set(theirs)
    assert lines == await database_rows(service, app)
    assert [list(line) for line in lines[:1]] == [HEADER]
    assert {line["state"] for line in lines} == set(STATES)
    assert lines[3]["metadata"] == {"sku": "gem-3", "note": 'ü,"x"'}
    assert lines[1]["metadata"] == {}


async def test_csv_has_the_documented_header_and_the_same_rows(
    database_url: str, fake_telegram: FakeBotApi, service: PortexApp, make_app: Any
) -> None:
    """CSV starts with the documented header (the README table's names, in order) and holds the
    same rows as JSON lines: empty cells for what is unset, metadata as JSON text, quoted where
    CSV needs it."""
    app: TestApp = await make_app(bot=False)
    await seed(service, app, 0, 30)

    code, out, err = await export(database_url, fake_telegram, *range_args(app))
    assert code == 0, err
    header, rows = csv_rows(out)
    assert header == HEADER == [column.name for column in ORDER_COLUMNS]
    assert out.startswith(",".join(HEADER) + "\r\n")
    assert rows == [as_csv(row) for row in await database_rows(service, app)]
    assert rows[0]["paid_time"] == ""
    assert rows[0]["metadata"] == '{"note":"ü,\\"x\\"","sku":"gem-0"}'


async def test_from_is_inclusive_to_is_exclusive_and_a_bare_date_is_its_midnight_utc(
    database_url: str, fake_telegram: FakeBotApi, service: PortexApp, make_app: Any
) -> None:
    """An order made exactly at --from is exported, one made exactly at --to is not, nor one a
    microsecond before --from; `--from 2025-03-01 --to 2025-03-02` is that UTC day."""
    app: TestApp = await make_app(bot=False)
    # Orders 0-6 are made at the time given (a run of 7 shares one).
    [at_start] = await seed(service, app, 0, 1, START)
    [at_end] = await seed(service, app, 1, 1, END)
    [before] = await seed(service, app, 2, 1, START - timedelta(microseconds=1))
    [inside] = await seed(service, app, 3, 1, END - timedelta(microseconds=1))

    for bounds in (range_args(app), ["--app", app.id, "--what", "orders",
                                     "--from", "2025-03-01", "--to", "2025-03-02"]):  # fmt: skip
        code, out, err = await export(database_url, fake_telegram, *bounds, "--format", "jsonl")
        assert code == 0, err
        exported = [json.loads(line)["tg_payment_id"] for line in out.splitlines()]
        assert exported == [at_start, inside]
    assert before not in exported and at_end not in exported
    offset = ["--from", "2025-03-01T02:00:00+02:00", "--to", "2025-03-01T23:59:59.999999Z"]
    code, out, err = await export(
        database_url, fake_telegram, "--app", app.id, "--what", "orders", *offset
    )
    assert code == 0, err
    assert [int(row["tg_payment_id"]) for row in csv_rows(out)[1]] == [at_start]


async def test_output_writes_the_file_whole_and_prints_a_summary(
    database_url: str, fake_telegram: FakeBotApi, service: PortexApp, make_app: Any, tmp_path: Path
) -> None:
    """`--output FILE` writes the rows to FILE (no FILE.partial left) and prints one JSON summary
    with the row count; an export that fails leaves no file."""
    app: TestApp = await make_app(bot=False)
    await seed(service, app, 0, 12)
    target = tmp_path / "orders.csv"
    code, out, err = await export(
        database_url, fake_telegram, *range_args(app), "--output", str(target)
    )
    assert code == 0, err
    assert json.loads(out) == {
        "application_id": app.id,
        "what": "orders",
        "rows": 12,
        "output": str(target),
    }
    assert csv_rows(target.read_text(encoding="utf-8"))[1] == [
        as_csv(row) for row in await database_rows(service, app)
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["orders.csv"]  # noqa: ASYNC240

    missing = tmp_path / "never.csv"
    unknown = ["--app", str(uuid.uuid4()), "--what", "orders", "--from", "2025-03-01"]
    code, _, _ = await export(
        database_url, fake_telegram, *unknown, "--to", "2025-03-02", "--output", str(missing)
    )
    assert code == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == ["orders.csv"]  # noqa: ASYNC240


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "yesterday", "--to", "2025-03-02"], "argument --from: not an RFC 3339 time"),
        (["--from", "2025-03-01T00:00:00", "--to", "2025-03-02"], "with its offset"),
        (["--from", "2025-02-30", "--to", "2025-03-02"], "argument --from: "),
        (["--from", "2025-03-01", "--to", "2025-03-01T25:00:00Z"], "argument --to: "),
        (["--from", "2025-03-02", "--to", "2025-03-01"], "--from must be earlier than --to"),
        (["--from", "2025-03-01", "--to", "2025-03-01"], "--from must be earlier than --to"),
        (["--from", "2025-03-01"], "the following arguments are required: --to"),
        (["--from", "2025-03-01", "--to", "2025-03-02", "--format", "xml"], "invalid choice"),
    ],
)
async def test_bad_arguments_exit_2_with_a_clear_message_and_print_nothing(
    database_url: str, fake_telegram: FakeBotApi, app: TestApp, args: list[str], message: str
) -> None:
    code, out, err = await export(
        database_url, fake_telegram, "--app", app.id, "--what", "orders", *args
    )
    assert (code, out) == (2, "")
    assert message in err


async def test_an_unknown_application_exits_2(
    database_url: str, fake_telegram: FakeBotApi, app: TestApp
) -> None:
    """An application that does not exist is a bad --app (exit 2, named)."""
    unknown = str(uuid.uuid4())
    days = ["--from", "2025-03-01", "--to", "2025-03-02"]
    code, out, err = await export(
        database_url, fake_telegram, "--app", unknown, "--what", "orders", *days
    )
    assert (code, out) == (2, "")
    assert err.strip().splitlines()[-1] == (
        f"portex-pay admin export: error: --app: no application {unknown}"
    )


async def test_transactions_are_the_ledgers_rows_of_the_range_oldest_first(
    database_url: str, fake_telegram: FakeBotApi, app: TestApp, make_app: Any
) -> None:
    """`--what transactions` writes what the Star ledger read (`admin reconcile` here), by date:
    a withdrawal, an ads payment and a payment nobody's order accounts for; the range's bounds
    hold, and another application's transactions are not there."""
    day = int(START.timestamp())
    kinds = [
        {"id": "wd-1", "amount": 40, "date": day - 1,
         "receiver": {"type": "fragment", "withdrawal_state": {"type": "pending"}}},
        {"id": "ads-1", "amount": 7, "date": day, "receiver": {"type": "telegram_ads"}},
        {"id": "pay-1", "amount": 5, "nanostar_amount": 250, "date": day + 60,
         "source": {"type": "user", "transaction_type": "invoice_payment",
                    "user": {"id": 77, "is_bot": False, "first_name": "A"},
                    "invoice_payload": "not-ours"}},
        {"id": "ads-2", "amount": 3, "date": int(END.timestamp()),
         "receiver": {"type": "telegram_ads"}},
    ]  # fmt: skip
    other: TestApp = await make_app()
    for transaction in kinds:
        fake_telegram.add_star_transaction(app.bot_token, transaction)
    fake_telegram.add_star_transaction(other.bot_token, {**kinds[1], "id": "ads-other"})
    for each in (app, other):
        code, _, err = await portex_pay(
            database_url, fake_telegram, "admin", "reconcile", "--app", each.id
        )
        assert code == 0, err

    code, out, err = await export(
        database_url, fake_telegram, "--app", app.id, "--what", "transactions",
        "--from", START.isoformat(), "--to", END.isoformat(), "--format", "jsonl",
    )  # fmt: skip
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [list(row) for row in rows[:1]] == [[c.name for c in TRANSACTION_COLUMNS]]
    assert [
        (r["id"], r["direction"], r["date"], r["amount"], r["nanostar_amount"], r["partner_type"])
        for r in rows
    ] == [
        ("ads-1", "outgoing", utc(START), 7, 0, "telegram_ads"),
        ("pay-1", "incoming", utc(START + timedelta(minutes=1)), 5, 250, "user"),
    ]
    payment = rows[1]
    assert (payment["transaction_type"], payment["partner_id"], payment["match"]) == (
        "invoice_payment",
        77,
        "unmatched",
    )
    assert payment["invoice_payload"] == "not-ours" and payment["raw"]["id"] == "pay-1"

    code, out, err = await export(
        database_url, fake_telegram, "--app", app.id, "--what", "transactions",
        "--from", "2025-02-28", "--to", "2025-03-03",
    )  # fmt: skip
    assert code == 0, err
    table = list(csv.reader(io.StringIO(out)))
    assert table[0] == [c.name for c in TRANSACTION_COLUMNS]
    assert [row[0] for row in table[1:]] == ["wd-1", "ads-1", "pay-1", "ads-2"]
    assert table[1][9] == "pending"  # withdrawal_state
