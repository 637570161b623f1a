"""Who is calling: API keys (gRPC) and the app's own bot tokens (the Bot API proxy), each resolved
through a short-TTL cache.

A key is `ppk_` + 43 base64url characters (256 random bits). Only its SHA-256 is stored. Each
RPC resolves its key through a small in-process cache whose entries live `ttl` seconds
(service/cache.py: unknown keys are cached apart, so guessing cannot evict the live ones), so
the per-request cost is a dict lookup and a revoked key stops working within `ttl`.

A bot token authenticates the application's own bot: the bot id before the colon finds the
application (through the cache of applications by bot id, service/cache.py), and the whole token
is compared with the bound one in constant time, found or not, so timing tells nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

from portex_pay.domain.application import Application
from portex_pay.domain.errors import Unauthenticated
from portex_pay.domain.telegram import bot_id_of_token
from portex_pay.service.cache import ApplicationCache, LookupCache
from portex_pay.service.ports import Applications

KEY_PREFIX = "ppk_"


def new_api_key() -> tuple[str, str, bytes]:
    """(key id shown in listings, the key shown once, its hash to store)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return "key_" + secrets.token_hex(6), key, hash_api_key(key)


def hash_api_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_secret() -> str:
    """A secret for webhooks and callback signatures: 1-256 chars of A-Za-z0-9_- (Telegram's
    rule for `secret_token`)."""
    return secrets.token_urlsafe(32)


class ApiKeyAuthenticator:
    def __init__(
        self,
        applications: Applications,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._applications = applications
        self._cache = LookupCache(self._find, ttl, clock=clock)

    async def authenticate(self, authorization: str | None) -> Application:
        """The application that owns the `Bearer` key, or Unauthenticated."""
        if not authorization:
            raise Unauthenticated("missing authorization metadata: send 'Bearer <api key>'")
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("authorization metadata must be 'Bearer <api key>'")
        application = await self._cache.get(hash_api_key(key.strip()))
        if application is None:
            raise Unauthenticated("unknown or revoked API key")
        return application

    async def _find(self, key_hash: bytes) -> Application | None:
        found = await self._applications.find_by_key_hash(key_hash)
        # The index lookup found the row by hash; comparing again in constant time keeps the
        # decision itself free of timing differences.
        if found is not None and hmac.compare_digest(found[0], key_hash):
            return found[1]
        return None


class BotTokenAuthenticator:
    def __init__(self, bot_applications: ApplicationCache[int]) -> None:
        self._bot_applications = bot_applications

    async def authenticate(self, token: str) -> Application:
        """The application whose bound bot has this token, or Unauthenticated. A failure of the
        lookup itself (the database) is raised as it is."""
        bot_id = bot_id_of_token(token)
        application = None if bot_id is None else await self._bot_applications.get(bot_id)
        expected = application.bot.token if application and application.bot else None
        # Compared even when nothing was found, so that timing tells nothing.
        if not hmac.compare_digest(token.encode(), (expected or "").encode()) or not expected:
            raise Unauthenticated("unknown bot token")
        assert application is not None
        return application
