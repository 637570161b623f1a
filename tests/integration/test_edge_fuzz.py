"""Fuzzing the Mini App edge (issue 16) over real HTTP against the running service.

A seeded generator (`PORTEX_EDGE_FUZZ_SEED`, `PORTEX_EDGE_FUZZ_REQUESTS` to explore further) sends
a few hundred requests: routes under /v1/ known and unknown, odd methods; X-App-Id valid, unknown
or garbage; Origin allowed, allowed by another application, unknown or garbage; X-Tg-InitData
genuinely signed for random users whose fields carry NUL, lone surrogates, emoji or too much
text, signed for another bot, expired, tampered or garbage; JSON bodies with wrong types, NUL,
lone surrogates (escaped, and as CESU-8 bytes), huge integers, floats, deep nesting, non-objects,
bytes that are not UTF-8, cut or oversized bodies; and some requests written byte by byte with
header values that are not UTF-8.

What must hold for every answer: no 5xx (the database is up), every body is the SDK's envelope
(but a granted preflight's 204 and HEAD's empty body), a CORS grant only ever for the origin sent
and only when an application allows it (the request's own application, once it is known), and
nothing logged as an error. And for the whole run: the orders in PostgreSQL are exactly the ones
the 200 createTgPayment answers named, the users saved exactly the ones the 200 saveTgUser answers
named, and the fake Bot API saw only one createInvoiceLink per new order.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import structlog
from yarl import URL

from portex_pay.adapters.postgres.applications import ApplicationRepository
from portex_pay.adapters.postgres.catalog import CatalogRepository
from portex_pay.app import PortexApp
from portex_pay.domain.catalog import CatalogItem, PricingMode, normalize_origin
from portex_pay.domain.init_data import sign_init_data
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import DATA_KEYS, TestApp, new_bot_token

FUZZ_SEED = int(os.environ.get("PORTEX_EDGE_FUZZ_SEED", "16"))
FUZZ_REQUESTS = int(os.environ.get("PORTEX_EDGE_FUZZ_REQUESTS", "500"))

ROUTES = ("saveTgUser", "createTgPayment", "getTgPayment", "reportInvoiceClosed")
UNKNOWN_ROUTES = (
    "getLeaderboard",
    "",
    "saveTgUser/",
    "saveTgUser/x",
    "SAVETGUSER",
    "createtgpayment",
    "a/b/c",
    "%00",
    "%ff%fe",
    "createTgPayment%20",
    "%E2%80%A8",
    "getTgPayment;x",
)
ODD_METHODS = ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "PROPFIND")
PIECES = (
    "",
    "item",
    "Book",
    "\x00",
    "\ud800",
    "\udfff",
    "\ude00\ud83d",
    "\U0001f600",
    "\u200d",
    "\u2028",
    "\t",
    "\n",
    "\x7f",
    "\x85",
    "é",
    "..%2f",
    "%00",
    "\\",
    "' OR 1=1 --",
    "null",
    "x" * 70,
    "y" * 3000,
)
# aiohttp refuses a header line over 8190 bytes itself (400, before any handler: not the edge's
# answer), as it refuses control bytes in a header value: the fuzz stays within what reaches us.
MAX_HEADER_CHARS = 8000
TEXT_FIELDS = ("label", "title", "description", "payload", "photo_url", "callback_url", "status")
VALID_STATUSES = ("cancelled", "failed", "paid", "pending")
HEADER_SAFE = "abcXYZ019-_.:/ ~!*()é€😀"


@dataclass
class Shop:
    app: TestApp
    id: uuid.UUID
    origin: str
    users: list[int]


@dataclass
class Planned:
    method: str
    path: str
    headers: dict[str, str] | list[tuple[bytes, bytes]]
    body: bytes | None
    shop: Shop | None  # the application X-App-Id names, when it names one
    origin: str | None


@dataclass
class Seen:
    orders: set[int] = field(default_factory=set)
    users: set[tuple[uuid.UUID, int]] = field(default_factory=set)
    placed: list[tuple[Shop, int, int]] = field(default_factory=list)  # shop, user, order
    statuses: Counter[int] = field(default_factory=Counter)


class Generator:
    def __init__(self, rng: random.Random, shops: list[Shop], elsewhere_origin: str) -> None:
        self.rng = rng
        self.shops = shops
        self.elsewhere_origin = elsewhere_origin  # allowed by an application not fuzzed

    # --- values ----------------------------------------------------------------------------------

    def code_points(self, count: int) -> str:
        rng = self.rng
        ranges = [(0x20, 0x7F), (0, 0x20), (0x80, 0x800), (0xD800, 0xE000), (0x10000, 0x110000)]
        return "".join(chr(rng.randrange(*rng.choice(ranges))) for _ in range(count))

    def text(self) -> str:
        rng = self.rng
        if rng.random() < 0.2:
            return self.code_points(rng.randrange(1, 12))
        return "".join(rng.choice(PIECES) for _ in range(rng.randrange(1, 4)))

    def value(self, depth: int = 0) -> Any:
        rng = self.rng
        kind = rng.randrange(14 if depth < 3 else 11)
        if kind == 0:
            return None
        if kind == 1:
            return rng.choice([True, False])
        if kind == 2:
            return rng.choice([0, 1, -1, 5, 2**63 - 1, 2**63, -(2**63), 10**30])
        if kind == 3:
            return 10 ** rng.randrange(18, 500) * rng.choice([1, -1])
        if kind == 4:
            return rng.choice([5.0, 5.5, -0.0, 1e308, 1e-300, float("inf"), float("nan")])
        if kind in (5, 6, 7, 8):
            return self.text()
        if kind in (9, 10):
            return str(rng.choice([0, 4242, -1, 2**64]))
        if kind in (11, 12):
            return [self.value(depth + 1) for _ in range(rng.randrange(0, 3))]
        return {self.text(): self.value(depth + 1) for _ in range(rng.randrange(0, 3))}

    def encode(self, document: Any) -> bytes:
        if self.rng.random() < 0.15:  # lone surrogates as bytes (CESU-8), not as escapes
            return json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")
        return json.dumps(document).encode()

    # --- requests --------------------------------------------------------------------------------

    def init_data(self, shop: Shop | None, user: int) -> str | None:
        rng = self.rng
        bot_token = shop.app.bot_token if shop is not None else new_bot_token()
        kind = rng.random()
        if kind < 0.08:
            return None
        if kind < 0.14:
            return rng.choice(["", "garbage %%% ;", "user=%7B%7D&hash=00", "a" * 5000])
        person: dict[str, Any] = {"id": user, "first_name": "Ada"}
        if rng.random() < 0.5:
            for name in ("first_name", "last_name", "username", "language_code", "photo_url"):
                if rng.random() < 0.5:
                    person[name] = self.text()
            if rng.random() < 0.3:
                person["is_premium"] = rng.choice([True, False, "yes", None])
        if rng.random() < 0.05:
            person["id"] = self.value()
        auth_date = datetime.now(UTC)
        if rng.random() < 0.06:
            auth_date -= timedelta(days=2)
        elif rng.random() < 0.03:
            auth_date += timedelta(hours=1)
        fields = {
            "query_id": "AAHdF6IQAAAAAN0XohDhrOrc",
            "user": json.dumps(person, separators=(",", ":")),
            "auth_date": str(int(auth_date.timestamp())),
        }
        if rng.random() < 0.2:
            fields["start_param"] = self.text().encode("utf-8", "replace").decode()
            fields["start_param"] = fields["start_param"].replace("\n", "")
        if rng.random() < 0.05:
            bot_token = new_bot_token()  # another bot's
        signed = sign_init_data(fields, bot_token=bot_token)
        if len(signed) > MAX_HEADER_CHARS:
            return "a" * 5000  # still too long for initData, not for aiohttp's header limit
        if rng.random() < 0.04:
            signed = signed.replace("auth_date=", "auth_date=1", 1)  # tampered
        return signed

    def body(self, route: str, shop: Shop | None, user: int, placed: list[Any]) -> bytes | None:
        rng = self.rng
        kind = rng.random()
        if kind < 0.55:
            document: dict[str, Any]
            if route == "createTgPayment":
                document = {
                    "tg_use_id": rng.choice([user, user, str(user), 0]),
                    "amount": rng.choice([5, 5, 5, 0, 7]),
                    "label": "item",
                    "title": "Book",
                    "description": "Magic book",
                    "payload": f"fuzz-{rng.randrange(50)}",
                }
                if rng.random() < 0.3:
                    del document["tg_use_id"]
            elif route in ("getTgPayment", "reportInvoiceClosed"):
                mine = [order for owner, who, order in placed if owner is shop and who == user]
                order = rng.choice(mine) if mine and rng.random() < 0.7 else rng.randrange(10**6)
                document = {"tg_payment_id": rng.choice([order, order, str(order)])}
                document["status"] = rng.choice(VALID_STATUSES)
            else:
                document = {}
            if rng.random() < 0.3:
                document[rng.choice(TEXT_FIELDS)] = self.odd_text()
            for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
                name = rng.choice(
                    [
                        "tg_use_id",
                        "amount",
                        "label",
                        "title",
                        "description",
                        "payload",
                        "photo_url",
                        "photo_size",
                        "photo_width",
                        "photo_height",
                        "callback_url",
                        "tg_payment_id",
                        "status",
                        self.text(),
                    ]
                )
                document[name] = self.value()
            return self.encode(document)
        if kind < 0.62:
            return self.encode({self.text(): self.value() for _ in range(rng.randrange(4))})
        if kind < 0.69:
            return self.encode(rng.choice([[], [self.value()], self.text(), 5, None, 1.5]))
        if kind < 0.75:
            return rng.choice(
                [
                    b'{"label": "\xff\xfe"}',
                    bytes(rng.randrange(256) for _ in range(40)),
                    b"\xc3",
                    b'{"amount": 1' + b"0" * 5000 + b"}",  # past Python's int-parsing limit
                    b'{"tg_payment_id": 1e999, "status": NaN, "amount": -Infinity}',
                ]
            )
        if kind < 0.80:
            depth = rng.choice([100, 2000, 8000])
            return (b"[" * depth + b"]" * depth) if rng.random() < 0.5 else b'{"a":' * depth
        if kind < 0.84:
            return json.dumps({"description": "x" * 17_000}).encode()
        if kind < 0.90:
            return self.encode({"label": "item", "title": "Book"})[: rng.randrange(1, 20)]
        if kind < 0.95:
            return rng.choice([b"", b"   ", b"\n"])
        return None

    def clean(self, placed: list[tuple[Shop, int, int]]) -> Planned:
        """A request the SDK itself would send, so that the run also reaches the 200s."""
        rng = self.rng
        shop = rng.choice(self.shops)
        user = rng.choice(shop.users)
        route = rng.choice(ROUTES)
        person: dict[str, Any] = {"id": user, "first_name": self.text()[:100]}
        for name in ("last_name", "username", "language_code", "photo_url"):
            if rng.random() < 0.3:
                person[name] = self.text()[:100]
        fields = {"user": json.dumps(person), "auth_date": str(int(time.time()))}
        headers = {
            "Content-Type": "application/json",
            "X-App-Id": shop.app.id,
            "X-Tg-InitData": sign_init_data(fields, bot_token=shop.app.bot_token),
        }
        origin = shop.origin if rng.random() < 0.5 else None
        if origin is not None:
            headers["Origin"] = origin
        document: dict[str, Any] = {}
        if route == "createTgPayment":
            document = {"label": "item", "title": "Book", "description": "Magic book"}
            document["payload"] = f"clean-{rng.randrange(20)}"
        elif route != "saveTgUser":
            mine = [order for owner, who, order in placed if owner is shop and who == user]
            document = {"tg_payment_id": rng.choice(mine) if mine else rng.randrange(1, 10**6)}
            document["status"] = rng.choice(VALID_STATUSES)
        if route != "saveTgUser" and rng.random() < 0.4:  # one odd text in a good request
            document[rng.choice(TEXT_FIELDS)] = self.odd_text()
        body = None if route == "saveTgUser" else self.encode(document)
        return Planned("POST", f"/v1/{route}", headers, body, shop, origin)

    def odd_text(self) -> str:
        """Text with at least one character the rules refuse, somewhere in it."""
        odd = self.rng.choice(["\x00", "\ud800", "\udfff", "\x1f", "\x85", "\u2028"])
        text = self.text()[:50]
        at = self.rng.randrange(len(text) + 1)
        return text[:at] + odd + text[at:]

    def header_text(self) -> str:
        return "".join(self.rng.choice(HEADER_SAFE) for _ in range(self.rng.randrange(0, 40)))

    def plan(self, placed: list[tuple[Shop, int, int]]) -> Planned:
        rng = self.rng
        if rng.random() < 0.25:
            return self.clean(placed)
        method = "POST" if rng.random() < 0.8 else rng.choice(ODD_METHODS)
        route = rng.choice(ROUTES) if rng.random() < 0.85 else rng.choice(UNKNOWN_ROUTES)
        shop = rng.choice(self.shops)
        app_kind = rng.random()
        named: Shop | None = shop
        if app_kind < 0.7:
            app_id: str | None = shop.app.id
        elif app_kind < 0.75:
            app_id = shop.app.id.upper()
        else:
            named = None
            app_id = rng.choice([str(uuid.uuid4()), "garbage", "", None, self.header_text()])
        origin_kind = rng.random()
        origin: str | None
        if origin_kind < 0.4:
            origin = None
        elif origin_kind < 0.7:
            origin = shop.origin
        elif origin_kind < 0.8:
            origin = rng.choice([other.origin for other in self.shops] + [self.elsewhere_origin])
        else:
            origin = rng.choice(
                [
                    "null",
                    f"https://game-{uuid.uuid4().hex[:8]}.example.com",
                    shop.origin + "/path",
                    shop.origin.upper(),
                    shop.origin + ":443",
                    self.header_text(),
                ]
            )
        user = rng.choice(shop.users)
        init_data = self.init_data(shop, user)
        body = self.body(route, named, user, placed)
        if rng.random() < 0.1:  # written byte by byte, header values that are not UTF-8
            raw: list[tuple[bytes, bytes]] = [(b"Content-Type", b"application/json")]
            junk = bytes(rng.randrange(0x80, 0x100) for _ in range(rng.randrange(1, 6)))
            for raw_name, raw_value in (
                (b"X-App-Id", app_id),
                (b"Origin", origin),
                (b"X-Tg-InitData", init_data),
                (b"Idempotency-Key", "key"),
            ):
                encoded = (raw_value or "").encode("utf-8", "replace")
                if rng.random() < 0.4:
                    encoded = encoded[: rng.randrange(len(encoded) + 1)] + junk
                if encoded or raw_value is not None:
                    raw.append((raw_name, encoded))
            sent = dict(raw).get(b"Origin")
            sent_origin = None if sent is None else sent.decode("utf-8", "surrogateescape")
            if named is not None and dict(raw).get(b"X-App-Id") != (app_id or "").encode():
                named = None  # the junk made it another (an unknown) application
            return Planned(method, f"/v1/{route}", raw, body, named, sent_origin)
        headers = {"Content-Type": rng.choice(["application/json", "text/plain", "x/y"])}
        for name, value in (("X-App-Id", app_id), ("Origin", origin), ("X-Tg-InitData", init_data)):
            if value is not None:
                headers[name] = value
        if rng.random() < 0.15:
            headers["Idempotency-Key"] = rng.choice(["k-1", "", "x" * 200, self.header_text()])
        if method == "OPTIONS" and rng.random() < 0.7:
            headers["Access-Control-Request-Method"] = "POST"
        return Planned(method, f"/v1/{route}", headers, body, named, origin)


async def send(
    session: aiohttp.ClientSession, port: int, planned: Planned
) -> tuple[int, bytes, dict[str, str]]:
    if isinstance(planned.headers, list):
        return await send_raw(port, planned)
    url = URL(f"http://127.0.0.1:{port}{planned.path}", encoded=True)
    async with session.request(
        planned.method, url, headers=planned.headers, data=planned.body
    ) as response:
        return response.status, await response.read(), dict(response.headers)


async def send_raw(port: int, planned: Planned) -> tuple[int, bytes, dict[str, str]]:
    assert isinstance(planned.headers, list)
    body = planned.body or b""
    lines = [
        f"{planned.method} {planned.path} HTTP/1.1".encode(),
        b"Host: 127.0.0.1",
        b"Connection: close",
        b"Content-Length: %d" % len(body),
    ]
    lines += [name + b": " + value for name, value in planned.headers]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, payload = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), payload, headers


def _origin_key(origin: str | None) -> str | None:
    if origin is None:
        return None
    try:
        return normalize_origin(origin)
    except ValueError:
        return None


def check_answer(
    planned: Planned, status: int, raw: bytes, headers: dict[str, str], allowed: dict[str, set[str]]
) -> Any:
    """The answer's rules; its JSON body (None when it has none)."""
    where = (planned.method, planned.path, status, raw[:300])
    assert status < 500, where
    grant = headers.get("Access-Control-Allow-Origin")
    if grant is not None:
        assert planned.origin is not None and grant == planned.origin, where
        key = _origin_key(grant)
        route = planned.path.removeprefix("/v1/")  # as the server decodes it, for ours
        if planned.shop is not None and route in ROUTES and planned.method == "POST":
            assert key in allowed[planned.shop.app.id], where  # the application's own list
        else:
            assert any(key in origins for origins in allowed.values()), where
    route = planned.path.removeprefix("/v1/")
    if planned.method not in ("POST", "OPTIONS") and status != 429:
        assert status == (405 if route in ROUTES else 404), where
    if planned.method == "POST" and route not in ROUTES and status != 429:
        assert status == 404, where
    if planned.method == "HEAD":
        return None
    if status == 204:
        assert planned.method == "OPTIONS" and raw == b"", where
        return None
    body = json.loads(raw)
    assert isinstance(body, dict) and isinstance(body.get("ok"), bool), where
    if body["ok"]:
        assert status == 200 and "result" in body, where
    else:
        assert body["error_code"] == status and 400 <= status < 500, where
        assert isinstance(body["reason"], str) and body["reason"].isupper(), where
        assert isinstance(body["description"], str) and body["description"], where
        if status == 429:
            assert headers["Retry-After"].isdigit(), where
    return body


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_the_edge_survives_a_fuzz_of_malformed_requests(
    service: PortexApp, fake_telegram: FakeBotApi, make_app: Any, http: aiohttp.ClientSession
) -> None:
    rng = random.Random(FUZZ_SEED)
    repository = ApplicationRepository(service.pool, DATA_KEYS)
    shops: list[Shop] = []
    for pricing in (PricingMode.CATALOG, PricingMode.OPEN):
        app: TestApp = await make_app(updates="webhook")
        application_id = uuid.UUID(app.id)
        origin = f"https://fuzz-{uuid.uuid4().hex[:10]}.example.com"
        assert await CatalogRepository(service.pool).put(application_id, CatalogItem("item", 5))
        assert await repository.set_edge(
            application_id,
            pricing_mode=pricing,
            allowed_origins=[origin],
            callback_prefixes=["https://hooks.example.com/hooks/"],
        )
        users = [rng.randrange(1, 2**40) for _ in range(30)]
        shops.append(Shop(app, application_id, origin, users))
    bystander: TestApp = await make_app()
    elsewhere_origin = f"https://fuzz-{uuid.uuid4().hex[:10]}.example.com"
    assert await repository.set_edge(uuid.UUID(bystander.id), allowed_origins=[elsewhere_origin])
    allowed = {shop.app.id: {shop.origin} for shop in shops}
    allowed[bystander.id] = {elsewhere_origin}
    ids = [shop.id for shop in shops]
    tokens = {shop.app.bot_token for shop in shops}

    calls_before = len(fake_telegram.calls)
    generator = Generator(rng, shops, elsewhere_origin)
    seen = Seen()
    started = time.monotonic()
    with structlog.testing.capture_logs() as logs:
        for _ in range(FUZZ_REQUESTS):
            planned = generator.plan(seen.placed)
            status, raw, headers = await send(http, http_port(service), planned)
            seen.statuses[status] += 1
            body = check_answer(planned, status, raw, headers, allowed)
            if status != 200 or planned.method != "POST" or body is None:
                continue
            route = planned.path.removeprefix("/v1/")
            assert planned.shop is not None and route in ROUTES, planned
            if route == "createTgPayment":
                order = body["result"]["tg_payment_id"]
                seen.orders.add(order)
                user = await service.pool.fetchval(
                    "SELECT tg_use_id FROM orders WHERE tg_payment_id = $1", order
                )
                seen.placed.append((planned.shop, user, order))
            elif route == "saveTgUser":
                seen.users.add((planned.shop.id, body["result"]["tg_use_id"]))
    elapsed = time.monotonic() - started
    print(
        f"edge fuzz: seed {FUZZ_SEED}, {FUZZ_REQUESTS} requests in {elapsed:.1f} s, "
        f"{len(seen.orders)} orders, {len(seen.users)} users, statuses {dict(seen.statuses)}"
    )

    errors = [entry for entry in logs if entry.get("log_level") in ("error", "critical")]
    assert errors == [], errors
    # Nothing refused created anything: the orders and users are those the 200s named.
    rows = await service.pool.fetch(
        "SELECT tg_payment_id FROM orders WHERE application_id = ANY($1::uuid[])", ids
    )
    assert {row["tg_payment_id"] for row in rows} == seen.orders
    rows = await service.pool.fetch(
        "SELECT application_id, user_id FROM telegram_users WHERE application_id = ANY($1)", ids
    )
    assert {(row["application_id"], row["user_id"]) for row in rows} == seen.users
    # And Telegram was asked for exactly one invoice link per new order, nothing else.
    calls = [call for call in fake_telegram.calls[calls_before:] if call.token in tokens]
    assert [call.method for call in calls] == ["createInvoiceLink"] * len(seen.orders)
    # The run reached the service's every door, not only its refusals.
    assert seen.orders and seen.users, seen
    assert seen.statuses[204] and seen.statuses[404] and seen.statuses[401], seen.statuses


def http_port(service: PortexApp) -> int:
    assert service.http_port is not None
    return service.http_port
