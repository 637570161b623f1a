"""Outgoing HTTP that must not reach the service's own network (SSRF): the address rule and the
aiohttp pieces that enforce it on the address actually connected to.

A callback URL is chosen by an API client, so without a guard it could make the service POST to
its own loopback, the private network behind it or a cloud metadata endpoint (169.254.169.254).
The rule (`address_refusal`) is applied where aiohttp decides what to connect to:

- host names: `GuardedResolver` wraps the real resolver; aiohttp's connector connects only to the
  addresses a resolver returns, so refused addresses are removed from that answer and, when none
  is left, the lookup fails with `AddressNotAllowed`. There is no second lookup between the check
  and the connection (no DNS rebinding window), and the connector's DNS cache holds only the
  filtered answer.
- IP literals (`http://127.0.0.1/`, `http://[::ffff:127.0.0.1]/`): aiohttp does not call the
  resolver for them (`TCPConnector._resolve_host`, checked on aiohttp 3.14), so a client
  middleware checks them; middlewares run for every request of a redirect chain as well.

`AddressGuard` bundles both; `AddressGuard.session_options()` is what a `ClientSession` takes.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from portex_pay.service.ports import HttpAnswer, PostFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Refusal = Callable[[str], "str | None"]

_SHARED_V4 = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_BROADCAST_V4 = ipaddress.IPv4Address("255.255.255.255")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 is the low 32 bits
_MAX_LISTED = 4  # refused addresses named in one error


class AddressNotAllowed(OSError):
    """A connection was refused by the address rule before it was attempted. An `OSError`, as a
    failed lookup is; callers see it as the `os_error` of an `aiohttp.ClientConnectorError`
    (`ClientConnectorDNSError` for a host name)."""

    def __init__(self, reason: str) -> None:
        super().__init__(errno.EACCES, reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for: IPv4-mapped (::ffff:a.b.c.d), 6to4
    (2002:aabb:ccdd::/48) or NAT64's well-known prefix (64:ff9b::a.b.c.d)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _category(address: IPAddress) -> str | None:
    # Most specific first, so that the reason names what the address is.
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address == _BROADCAST_V4:
        return "broadcast"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    if address in _SHARED_V4:
        return "shared (carrier-grade NAT)"
    if not address.is_global:
        return "not globally reachable"
    return None


def address_refusal(host: str) -> str | None:
    """Why the service must not connect to the IP address `host`, or None when it may.

    Allowed: globally reachable unicast addresses only. An IPv6 address that embeds an IPv4 one
    (IPv4-mapped, 6to4, NAT64 64:ff9b::/96) is judged as that IPv4 address. Anything else is
    refused, checked in this order for the reason's name: unspecified, loopback, link-local
    (cloud metadata included), multicast, broadcast, reserved (240.0.0.0/4, IPv6 ::/8 ...),
    private (Python's `is_private`: RFC 1918, fc00::/7 and the other special-purpose ranges of
    IANA's registries), IPv6 site-local (fec0::/10), 100.64.0.0/10, and whatever `is_global`
    denies. Not an IP address at all: refused."""
    try:
        address: IPAddress = ipaddress.ip_address(host)
    except ValueError:
        return f"{host[:64]} is not an IP address"
    judged: IPAddress = address
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(int(address))  # without a scope id (%eth0)
        judged = _embedded_v4(address) or address
    category = _category(judged)
    if category is None:
        return None
    if judged is not address:
        return f"{address.compressed} ({judged}) is {category}"
    return f"{address.compressed} is {category}"


def _looks_like_ip(host: str) -> bool:
    # A superset of what aiohttp sends past the resolver (helpers.is_ip_address: a colon, or
    # only digits and dots), and anything `ipaddress` parses.
    if ":" in host or host.replace(".", "").isdigit():
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _not_allowed(reasons: list[str], name: str | None = None) -> AddressNotAllowed:
    """ "callback address not allowed: 127.0.0.1 is loopback", or for a host name
    "callback address not allowed: localhost -> 127.0.0.1 is loopback, ::1 is loopback"."""
    listed = ", ".join(reasons[:_MAX_LISTED])
    if len(reasons) > _MAX_LISTED:
        listed += f" (and {len(reasons) - _MAX_LISTED} more)"
    if name is not None:
        listed = f"{name[:253]} -> {listed}"
    return AddressNotAllowed(f"callback address not allowed: {listed}")


class GuardedResolver(AbstractResolver):
    """Resolves with `inner`, then drops the addresses `refusal` refuses; raises
    `AddressNotAllowed` when none is left. What it returns is exactly what the connector
    connects to."""

    def __init__(
        self, inner: AbstractResolver | None = None, refusal: Refusal = address_refusal
    ) -> None:
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()
        self._refusal = refusal

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        resolved = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        reasons: list[str] = []
        for result in resolved:
            reason = self._refusal(result["host"])
            if reason is None:
                allowed.append(result)
            elif reason not in reasons:
                reasons.append(reason)
        if not allowed:
            if not reasons:  # an empty answer: let it fail as the inner resolver's would
                return allowed
            raise _not_allowed(reasons, host)
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class AddressGuard:
    """Both halves of the guard for one `ClientSession`: the resolver for host names and a
    middleware for IP literals. `refusal` is the rule (replaceable in tests)."""

    def __init__(
        self, resolver: AbstractResolver | None = None, refusal: Refusal = address_refusal
    ) -> None:
        self._refusal = refusal
        self.resolver = GuardedResolver(resolver, refusal)

    async def middleware(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        host = request.url.raw_host or ""
        if _looks_like_ip(host):
            reason = self._refusal(host)
            if reason is not None:
                # As the connector reports a refused name: a ClientConnectorError around it.
                raise aiohttp.ClientConnectorError(request.connection_key, _not_allowed([reason]))
        return await handler(request)

    def session_options(self, **connector_options: Any) -> dict[str, Any]:
        """`ClientSession` keyword arguments: a connector using the guarded resolver, the
        middleware, and no proxy taken from the environment (a proxy would connect for us,
        to wherever it resolves)."""
        return {
            "connector": aiohttp.TCPConnector(resolver=self.resolver, **connector_options),
            "middlewares": (self.middleware,),
            "trust_env": False,
        }


def refused_reason(error: BaseException) -> str | None:
    """The reason when `error` is (or wraps, as aiohttp's connector errors do) a refusal."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, AddressNotAllowed):
            return current.reason
        os_error = getattr(current, "os_error", None)
        if isinstance(os_error, AddressNotAllowed):
            return os_error.reason
        current = current.__cause__ or current.__context__
    return None


USER_AGENT = "portex-pay-callbacks/1"


async def new_callback_session(
    concurrency: int = 16,
    *,
    allow_private: bool = False,
    resolver: AbstractResolver | None = None,
) -> aiohttp.ClientSession:
    """A session for URLs our clients chose, so that slow receivers cannot take the connections
    the Bot API needs. No cookies (receivers must not be able to set state in it), no proxy
    variables from the environment, statuses are read rather than raised. Unless
    `allow_private`, it connects to globally reachable addresses only (`AddressGuard`;
    `resolver` is the one it wraps, the system's by default). A coroutine: aiohttp wants a
    running event loop when a session is created."""
    connector_options: dict[str, Any] = {"limit": concurrency, "ttl_dns_cache": 300}
    if allow_private:
        options: dict[str, Any] = {
            "connector": aiohttp.TCPConnector(resolver=resolver, **connector_options),
            "trust_env": False,
        }
    else:
        options = AddressGuard(resolver).session_options(**connector_options)
    return aiohttp.ClientSession(
        **options,
        cookie_jar=aiohttp.DummyCookieJar(),
        raise_for_status=False,
        headers={"User-Agent": USER_AGENT},
    )


class HttpPoster:
    """The service's HttpPoster port on such a session: one POST, no redirects followed, the
    whole exchange (DNS, connect, send, the answer's first `read_limit` bytes) bounded by
    `timeout`. Failures are PostFailed with a reason that never holds the URL."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        timeout: float,
        read_limit: int = 0,
    ) -> HttpAnswer:
        try:
            # asyncio.timeout bounds everything even if the session was made with other
            # timeouts; aiohttp's own timeout is set to match.
            async with (
                asyncio.timeout(timeout),
                self._session.post(
                    url,
                    data=body,
                    headers=dict(headers),
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as response,
            ):
                content = await response.content.read(read_limit) if read_limit else b""
                return HttpAnswer(
                    response.status, response.headers.get("Content-Type", ""), content
                )
        except TimeoutError:
            raise PostFailed("timeout", "timed out") from None
        except aiohttp.ClientResponseError as error:  # a session made with raise_for_status
            return HttpAnswer(error.status, "", b"")
        except Exception as error:
            refused = refused_reason(error)
            if refused is not None:  # the address, never the URL
                raise PostFailed("refused", refused) from None
            # The type name only: str() of aiohttp's errors contains the URL.
            raise PostFailed("connection", type(error).__name__) from None


__all__ = [
    "USER_AGENT",
    "AddressGuard",
    "AddressNotAllowed",
    "GuardedResolver",
    "HttpPoster",
    "address_refusal",
    "new_callback_session",
    "refused_reason",
]
