"""The egress policy: which addresses Pushgate may connect to when a URL came from a client or
from a credential (a Web Push endpoint, a service account's ``token_uri``).

Such a URL could point Pushgate at the machine itself or at the internal network (server-side
request forgery). So its host is resolved and every address it resolves to must be a public
one: loopback, private, shared (CGNAT), link-local, multicast, unspecified and reserved
addresses are refused, in IPv4 and IPv6, with IPv4-mapped and NAT64 IPv6 addresses judged by
the IPv4 address inside them. Host names are resolved the way the connection itself would be
(``getaddrinfo``), so the numeric shorthands ``2130706433``, ``0x7f000001``, ``127.1`` and ``0``
are the addresses they denote. The operator can allow ranges (``egress_allow``: CIDRs), e.g. a
local fake push service in tests or an internal proxy.

The policy is applied twice: when the URL is given (a refused address is a 400 that says why;
a host that does not resolve then is accepted, since DNS can be down or change) and when a
connection is opened (``resolve``): the connection then goes to the very address that was
checked, so a DNS answer that changes in between cannot slip through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
RESOLVE_TIMEOUT_SECONDS = 2.0


class EgressRefused(Exception):  # noqa: N818 - the name says what happened
    """A connection the policy does not allow. Not an ``OSError``: a transport that meets it
    fails the delivery for good instead of retrying."""

    def __init__(self, host: str, address: str, kind: str) -> None:
        super().__init__(
            f"{host} resolves to {address}, a {kind} address, refused by the egress policy "
            "(public addresses only, unless the operator allows a range in egress_allow)"
        )
        self.host = host
        self.address = address
        self.kind = kind


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs (or single addresses) as networks; ``ValueError`` names a bad one."""
    networks: list[IPNetwork] = []
    for value in values:
        text = value.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ValueError(f"not a CIDR range: {text!r} (e.g. 10.0.0.0/8 or ::1/128)") from exc
    return tuple(networks)


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def kind_of(ip: IPAddress) -> str | None:
    """What makes ``ip`` refused (``"loopback"``, ``"private"``...), or None for a public
    address."""
    inner = _embedded_ipv4(ip)
    if inner is not None:
        return kind_of(inner)
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "non-public"
    return None


def _numeric(host: str) -> IPAddress | None:
    """``host`` as an address when it is one, in any form the resolver accepts as numeric."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Public addresses only, plus the ranges in ``allow``."""

    allow: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_setting(cls, values: Iterable[str]) -> EgressPolicy:
        return cls(parse_networks(values))

    def refusal(self, ip: IPAddress) -> str | None:
        """Why a connection to ``ip`` is refused, or None when it is allowed."""
        inner = _embedded_ipv4(ip)
        for network in self.allow:
            if ip in network or (inner is not None and inner in network):
                return None
        return kind_of(ip)

    def check(self, host: str, addresses: Iterable[str]) -> None:
        """Raise ``EgressRefused`` when any of the addresses ``host`` resolved to is refused."""
        for text in addresses:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
            kind = self.refusal(ip)
            if kind is not None:
                raise EgressRefused(host, text, kind)

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host``, every one of them allowed (else
        ``EgressRefused``). Raises ``OSError`` (``socket.gaierror``) when it does not
        resolve."""
        numeric = _numeric(host)
        if numeric is not None:
            addresses = [str(numeric)]
        else:
            loop = asyncio.get_running_loop()
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        self.check(host, addresses)
        return addresses

    async def check_url(self, url: str) -> None:
        """For a URL a client gives: ``EgressRefused`` when its host resolves to a refused
        address. A host that does not resolve (now) passes: it is checked again when a
        connection is opened."""
        parts = urlsplit(url)
        host = parts.hostname
        if not host:
            return
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
                await self.resolve(host, port)
        except (OSError, TimeoutError):
            return
