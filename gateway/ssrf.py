"""SSRF guard for webhook destinations: which addresses a webhook may reach, checked where it connects.

A destination is refused when any address its host resolves to is loopback, private (RFC 1918,
fc00::/7, ...), link-local (169.254.0.0/16 with the cloud metadata address, fe80::/10), unspecified,
multicast, reserved or otherwise not globally routable. IPv4-mapped, 6to4 and Teredo IPv6 addresses
are judged by the IPv4 address they carry.

No DNS-rebinding window: `PinnedNetworkBackend` resolves a host once per new connection, checks every
address, and connects to one of exactly those addresses, while TLS (SNI, certificate) and the Host
header keep the original name. An explicit allow-list (`webhook_allow_hosts`: hostnames, IPs, CIDRs)
exists for development and tests only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import certifi
import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> the addresses it resolves to (as text). Replaceable in unit tests.
Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_URL_LENGTH = 2048
DEFAULT_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64)
METADATA_ADDRESS = ipaddress.ip_address("169.254.169.254")


class DestinationRefused(Exception):
    """A webhook destination the guard will not reach; `code` is the stable machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for *_, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]).split("%", 1)[0], None)  # drop an IPv6 zone id
    return list(seen)


def _carried_ipv4(ip: IPAddress) -> list[IPAddress]:
    """IPv4 addresses an IPv6 address embeds (mapped, 6to4, Teredo): they decide where packets go."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    carried: list[IPAddress] = []
    if ip.ipv4_mapped is not None:
        carried.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        carried.append(ip.sixtofour)
    if ip.teredo is not None:
        carried.extend(ip.teredo)
    return carried


def address_refusal(ip: IPAddress) -> str | None:
    """Why `ip` is not a public destination, or None when it is."""
    for inner in _carried_ipv4(ip):
        reason = address_refusal(inner)
        if reason:
            return f"{reason} (carried in {ip})"
    if ip.is_unspecified:
        return f"unspecified address {ip}"
    if ip.is_loopback:
        return f"loopback address {ip}"
    if ip == METADATA_ADDRESS:
        return f"link-local cloud metadata address {ip}"
    if ip.is_link_local:
        return f"link-local address {ip}"
    if ip.is_multicast:
        return f"multicast address {ip}"
    if ip.is_private:
        return f"private address {ip}"
    if ip.is_reserved or not ip.is_global:
        return f"non-public address {ip}"
    return None


@dataclass(frozen=True)
class SsrfPolicy:
    """The allow-list: names reached whatever they resolve to, and networks reached although private."""

    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_setting(cls, text: str) -> SsrfPolicy:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in (e.strip() for e in text.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(_normal_host(entry))
        return cls(frozenset(hosts), tuple(networks))

    def host_allowed(self, host: str) -> bool:
        return _normal_host(host) in self.allow_hosts

    def refusal(self, ip: IPAddress) -> str | None:
        if any(ip in net for net in self.allow_networks if net.version == ip.version):
            return None
        return address_refusal(ip)


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def parse_destination(url: str) -> httpx.URL:
    """The URL if its form is acceptable for a webhook (http/https, a host); DestinationRefused otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise DestinationRefused("webhook_url_invalid", f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except Exception as exc:
        raise DestinationRefused("webhook_url_invalid", f"not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise DestinationRefused("webhook_url_invalid", "the URL must be http:// or https://")
    if not parsed.host:
        raise DestinationRefused("webhook_url_invalid", "the URL has no host")
    return parsed


async def resolve_checked(host: str, port: int, policy: SsrfPolicy, resolver: Resolver | None = None) -> list[IPAddress]:
    """Resolve `host` once and return its addresses if every one of them may be reached."""
    literal = _literal_ip(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            texts = await (resolver or system_resolver)(_normal_host(host), port)
        except (OSError, UnicodeError) as exc:
            raise DestinationRefused("webhook_url_unresolvable", f"{host!r} does not resolve: {exc}") from exc
        addresses = [ipaddress.ip_address(t) for t in texts]
        if not addresses:
            raise DestinationRefused("webhook_url_unresolvable", f"{host!r} resolves to no address")
    if literal is None and policy.host_allowed(host):
        return addresses
    for ip in addresses:
        reason = policy.refusal(ip)
        if reason:
            where = reason if literal is not None else f"{host} (it resolves to a {reason})"
            raise DestinationRefused("webhook_url_forbidden", f"webhooks may not be sent to a {where}"
                                     if literal is not None else f"webhooks may not be sent to {where}")
    return addresses


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


async def check_destination(url: str, policy: SsrfPolicy, resolver: Resolver | None = None) -> list[IPAddress]:
    """The gateway's check when a URL is registered or submitted (the dispatcher checks again at connect)."""
    parsed = parse_destination(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return await resolve_checked(parsed.host, port, policy, resolver)


class PinnedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses the guard checked, from the one resolution it checked."""

    def __init__(self, policy: SsrfPolicy, resolver: Resolver | None = None,
                 inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self.resolver = resolver
        self._inner = inner or httpcore.AnyIOBackend()
        self.connected_to: list[str] = []  # the last few addresses connected to (diagnostics, tests)

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_checked(host, port, self.policy, self.resolver)
        last: Exception | None = None
        for ip in addresses:
            try:
                stream = await self._inner.connect_tcp(
                    str(ip), port, timeout=timeout, local_address=local_address, socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            self.connected_to = [*self.connected_to[-15:], str(ip)]
            return stream
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: typing.Iterable[typing.Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("webhook_url_forbidden", "unix sockets are not webhook destinations")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx transport over `PinnedNetworkBackend`: no proxies, no environment, checked addresses only."""

    def __init__(self, policy: SsrfPolicy, *, resolver: Resolver | None = None,
                 limits: httpx.Limits = DEFAULT_LIMITS) -> None:
        super().__init__(trust_env=False, limits=limits)
        self.backend = PinnedNetworkBackend(policy, resolver)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(cafile=certifi.where()),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self.backend,
        )


def pinned_client(policy: SsrfPolicy, timeout: httpx.Timeout, *, resolver: Resolver | None = None,
                  limits: httpx.Limits | None = None) -> httpx.AsyncClient:
    """The webhook HTTP client: pinned addresses, no redirects, no proxies from the environment."""
    transport = PinnedTransport(policy, resolver=resolver, limits=limits or DEFAULT_LIMITS)
    return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)
