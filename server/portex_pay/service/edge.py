"""The Mini App edge's use cases: what a browser running the Portex SDK may do.

A browser is never trusted: the user is the one its initData proves (verified with the
application's bot token, or Telegram's Ed25519 signature), prices come from the application's
catalog, callback URLs must lie under the application's prefixes, and it reads only its own
orders. Everything else is the same use cases gRPC serves (OrderService): orders
made here appear in QueryOrder, the event stream and callbacks like any other.

Retries of the same `pay()` do not make a stream of orders. With an `Idempotency-Key` the key
(per user) is the Pay's `request_id`. Without one, the request_id is derived from the user, the
request's fields and the current window of `dedupe_window` seconds: the same request in the same
window gets the same order and link, also when the retries race each other (the idempotency of
Pay decides, across replicas); a retry in the window after continues the previous window's order.
Once that order is no longer payable (paid, cancelled, expired),
the same request means a new purchase: the next request_id of a chain derived from the previous
one and its order id, so racing retries after a payment still converge on one new order.

Browser input is decoded, normalised and checked before anything is looked up with it: text that
breaks the character rules (domain/text.py) never reaches PostgreSQL. A verified user's names are
Telegram's, not the browser's: they are stored with NUL and lone surrogates replaced by U+FFFD
(`storable_user`), so that a user with an odd name can still use the Mini App and pay.

Work done before any application is known (a CORS preflight, the refusal of an unknown
application or route) is unauthenticated: it is rate-limited per client address, and the origin
lookup it needs is cached like the application lookup (answers that found nothing kept apart, so a
flood of made-up origins cannot push out the live ones).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from uuid import UUID

from cachetools import LRUCache

from portex_pay.domain.application import Application
from portex_pay.domain.catalog import PricingMode, callback_allowed, priced, storable_user
from portex_pay.domain.errors import (
    ApplicationNotFound,
    BotNotConfigured,
    IdentityRefused,
    OrderNotFound,
    RateLimited,
    RequestRejected,
    UserMismatch,
)
from portex_pay.domain.init_data import (
    InitDataError,
    VerifiedInitData,
    authenticate_init_data,
    check_freshness,
)
from portex_pay.domain.order import Order, OrderState
from portex_pay.domain.pay import PayCommand, require_valid_text
from portex_pay.service.cache import LookupCache
from portex_pay.service.clock import Clock, utcnow
from portex_pay.service.orders import OrderService, require_client_status
from portex_pay.service.ports import Catalog, TelegramUsers
from portex_pay.service.ratelimit import RateLimits, retry_after_seconds

_MAX_CHAIN = 64  # purchases of the same thing by one user in one window, before giving up
# initData strings remembered as authentic (at most 4 KB each, real ones under 1 KB).
VERIFIED_MAX_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    init_data_max_age: timedelta = timedelta(hours=24)
    init_data_future_skew: timedelta = timedelta(seconds=60)
    ed25519_public_key: bytes | None = None  # Telegram's (or a test) key; None: HMAC only
    dedupe_window: timedelta = timedelta(minutes=5)
    user_rate: float = 5.0  # requests per second per user, per replica
    user_burst: int = 20
    app_rate: float = 200.0  # requests per second per application, per replica
    app_burst: int = 400
    # Preflights and refusals before any application is known, per client address, per replica.
    preflight_rate: float = 50.0
    preflight_burst: int = 200
    origin_cache_ttl: float = 5.0  # seconds an origin lookup is remembered


class EdgeService:
    def __init__(
        self,
        load_application: Callable[[UUID], Awaitable[Application | None]],
        origin_allowed: Callable[[str], Awaitable[bool]],
        catalog: Catalog,
        users: TelegramUsers,
        orders: OrderService,
        settings: EdgeSettings,
        clock: Clock = utcnow,
    ) -> None:
        self._load_application = load_application
        self._catalog = catalog
        self._users = users
        self._orders = orders
        self._settings = settings
        self._clock = clock
        self._app_limits = RateLimits(settings.app_rate, settings.app_burst, name="edge-app")
        self._user_limits = RateLimits(settings.user_rate, settings.user_burst, name="edge-user")
        self._address_limits = RateLimits(
            settings.preflight_rate, settings.preflight_burst, name="edge-address"
        )
        # A Mini App sends the same initData on every call: its signature is checked once. Only
        # authentic data is remembered (nobody without the bot token can fill this), keyed by the
        # token too, so a bot's new token checks afresh; freshness is checked on every use.
        self._verified: LRUCache[tuple[str, str | None, int], VerifiedInitData] = LRUCache(
            VERIFIED_MAX_ENTRIES
        )

        async def allowed_or_none(origin: str) -> bool | None:
            return True if await origin_allowed(origin) else None  # None: cached apart

        self._origins: LookupCache[str, bool] = LookupCache(
            allowed_or_none, settings.origin_cache_ttl
        )

    async def application(self, app_id: str | None) -> Application:
        """The application a browser names in X-App-Id (its id as create-app prints it)."""
        try:
            application_id = UUID(app_id or "")
        except ValueError:
            application_id = None
        application = (
            await self._load_application(application_id) if application_id is not None else None
        )
        if application is None:
            raise ApplicationNotFound("no such application")
        return application

    def admit(self, application: Application) -> None:
        """Counts a request against the application's rate limit (RateLimited when over it)."""
        wait = self._app_limits.take(str(application.id))
        if wait:
            raise RateLimited("too many requests for this application", retry_after_seconds(wait))

    def admit_address(self, address: str | None) -> None:
        """Counts a request against the client address's rate limit, for work done before any
        application is known (a preflight, the refusal of an unknown application or route);
        RateLimited when over it."""
        wait = self._address_limits.take(address or "")
        if wait:
            raise RateLimited("too many requests from this address", retry_after_seconds(wait))

    async def origin_allowed_anywhere(self, origin: str) -> bool:
        """Whether some application allows the (normalised) origin; cached."""
        return await self._origins.get(origin) is not None

    def origin_known_allowed(self, origin: str) -> bool:
        """Whether the cache remembers the origin as allowed: the answer without a query, for a
        client over its rate limit."""
        return self._origins.peek(origin) is not None

    def identify(self, application: Application, init_data: str | None) -> VerifiedInitData:
        """The user the initData proves, for this application's bot; rate-limited per user."""
        bot = application.bot
        if bot is None:
            raise BotNotConfigured("the application has no bot to verify its users with")
        settings = self._settings
        key = (init_data or "", bot.token, bot.id)
        try:
            identity = self._verified.get(key)
            if identity is None:
                identity = authenticate_init_data(
                    init_data,
                    bot_token=bot.token,
                    bot_id=bot.id,
                    ed25519_public_key=settings.ed25519_public_key,
                )
                self._verified[key] = identity
            check_freshness(
                identity,
                now=self._clock(),
                max_age=settings.init_data_max_age,
                future_skew=settings.init_data_future_skew,
            )
        except InitDataError as error:
            raise IdentityRefused(error.reason, error.message) from None
        wait = self._user_limits.take(str(application.id), str(identity.user.id))
        if wait:
            raise RateLimited("too many requests for this user", retry_after_seconds(wait))
        return identity

    async def save_user(self, application: Application, identity: VerifiedInitData) -> None:
        """Records the verified user, its text as PostgreSQL can hold it (`storable_user`)."""
        await self._users.record(application.id, storable_user(identity.user), self._clock())

    async def create_payment(
        self,
        application: Application,
        identity: VerifiedInitData,
        command: PayCommand,
        idempotency_key: str | None,
    ) -> Order:
        """A browser's pay(): `command` as the browser sent it (tg_use_id 0 or amount 0 when
        it left them out)."""
        require_valid_text(command)  # before any field is looked up
        user_id = identity.user.id
        if command.tg_use_id not in (0, user_id):
            raise UserMismatch("tg_use_id is not the user of this Mini App session")
        command = replace(command, tg_use_id=user_id)
        if command.callback_url is not None and not callback_allowed(
            command.callback_url, application.callback_prefixes
        ):
            raise RequestRejected(
                "CALLBACK_URL_NOT_ALLOWED",
                "callback_url",
                "callback_url is not under one of the application's callback prefixes",
            )
        item = None
        if application.pricing_mode is PricingMode.CATALOG:
            item = await self._catalog.get(application.id, command.label)
        command = priced(command, item, application.pricing_mode)

        if idempotency_key is not None:
            request_id = _digest("edge-key", application.id, user_id, idempotency_key)
            return await self._orders.pay(application, command, request_id)
        window = int(self._clock().timestamp() // self._settings.dedupe_window.total_seconds())
        fingerprint = command.fingerprint().hex()
        request_id = _digest("edge", application.id, user_id, window, fingerprint)
        # A retry just after a window boundary continues the previous window's order.
        previous = _digest("edge", application.id, user_id, window - 1, fingerprint)
        if await self._orders.find_by_request_id(application, previous) is not None:
            request_id = previous
        for _ in range(_MAX_CHAIN):
            order = await self._orders.pay(application, command, request_id)
            if order.state_at(self._clock()) in (OrderState.PENDING, OrderState.FAILED):
                return order
            request_id = _digest("edge-next", request_id, order.tg_payment_id)
        raise RateLimited("too many purchases of the same item; retry later", 60)

    async def get_payment(
        self, application: Application, identity: VerifiedInitData, tg_payment_id: int
    ) -> Order:
        """The order, only to the user who placed it: another's answers like a missing one."""
        order = await self._orders.query_order(application, tg_payment_id)
        if order.tg_use_id != identity.user.id:
            raise OrderNotFound(f"order {tg_payment_id} not found")
        return order

    async def report_invoice_closed(
        self,
        application: Application,
        identity: VerifiedInitData,
        tg_payment_id: int,
        status: str,
    ) -> Order:
        require_client_status(status)  # checked before the order is looked up
        await self.get_payment(application, identity, tg_payment_id)  # owner only
        return await self._orders.report_invoice_closed(application, tg_payment_id, status)


def _digest(*parts: object) -> str:
    """A request_id (printable ASCII, 67 characters) derived from the parts."""
    text = "\x1f".join(str(part) for part in parts)
    return "e1:" + hashlib.sha256(text.encode()).hexdigest()
