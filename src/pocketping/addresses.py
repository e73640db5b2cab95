"""Client addresses: one canonical spelling per address, and the key a client is counted by.

Everything that keys on a client address (filters, rate limits, address bans, the stored
``metadata["ip"]``) goes through :func:`canonical` once, so that spellings of one address
(case, zero padding, a zone id, an IPv4 address in IPv6 clothing) are one address. IPv6 clients
are counted and banned by prefix (:func:`client_key`, ``/64`` by default): one IPv6 client is
usually handed a whole ``/64``.

Forwarded headers are parsed here too (:func:`forwarded_hops`): ``X-Forwarded-For`` hops with
ports or brackets (``203.0.113.11:4444``, ``[2001:db8::1]:443``), and RFC 7239 ``Forwarded``.
"""

from __future__ import annotations

import functools
import ipaddress
import re

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The NAT64 well-known prefix (RFC 6052): ``64:ff9b::198.51.100.7`` is 198.51.100.7.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

#: The IPv6 prefix length a client is counted and banned by, unless configured otherwise.
DEFAULT_IPV6_PREFIX = 64

_PORT = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$")
_BRACKETED = re.compile(r"^\[([^\]]+)\](?::\d{1,5})?$")


@functools.lru_cache(maxsize=8192)
def parse(text: str | None) -> Address | None:
    """The address ``text`` names, canonical (see :func:`canonical`), or None if it names none.

    Accepts what peers and proxies write: surrounding spaces and quotes, ``[v6]`` and
    ``[v6]:port``, ``v4:port``, a zone id (``fe80::1%eth0``), any case and zero padding.
    Cached: every request of a client parses the same text."""
    if not text:
        return None
    value = text.strip().strip('"').strip()
    bracketed = _BRACKETED.match(value)
    if bracketed:
        value = bracketed.group(1)
    else:
        with_port = _PORT.match(value)
        if with_port:
            value = with_port.group(1)
    value = value.split("%", 1)[0]  # a zone id names the interface, not the host
    try:
        address: Address = ipaddress.ip_address(value)
    except ValueError:
        return None
    return unmapped(address)


def unmapped(address: Address) -> Address:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped ``::ffff:a.b.c.d`` or NAT64
    ``64:ff9b::a.b.c.d``), else ``address`` itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


@functools.lru_cache(maxsize=8192)
def canonical(text: str | None) -> str | None:
    """``text``'s address in one spelling (IPv4 dotted quad, IPv6 compressed lower case), or
    None when it is not an address."""
    address = parse(text)
    return None if address is None else str(address)


def check_prefix(prefix: object) -> int:
    """``prefix`` if it is an IPv6 prefix length PocketPing can count by (32 to 128)."""
    if isinstance(prefix, bool) or not isinstance(prefix, int) or not 32 <= prefix <= 128:
        raise ValueError(f"ipv6_prefix must be a prefix length from 32 to 128, not {prefix!r}")
    return prefix


def network_of(address: Address, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> Network:
    """The network a client is counted by: the IPv4 address itself, or its IPv6 prefix."""
    if isinstance(address, ipaddress.IPv4Address):
        return ipaddress.IPv4Network(address)
    return ipaddress.IPv6Network((address, ipv6_prefix), strict=False)


@functools.lru_cache(maxsize=8192)
def client_key(text: str | None, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str | None:
    """What a client is counted by (rate limits): its IPv4 address, or its IPv6 ``/prefix``
    (``2001:db8:1:2::/64``); None when ``text`` is not an address."""
    address = parse(text)
    if address is None:
        return None
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    return str(network_of(address, ipv6_prefix))


def network(text: str) -> Network:
    """The address or CIDR range ``text`` names (``10.0.0.0/8``, ``2001:db8::/32``), with
    IPv4-mapped ranges turned into IPv4 ones. :class:`ValueError` if it names none."""
    value = text.strip()
    if "/" not in value:
        address = parse(value)
        if address is None:
            raise ValueError(f"{text!r} is not an IP address or CIDR range")
        return ipaddress.ip_network(address)
    net = ipaddress.ip_network(value, strict=False)
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        for wrapper in (ipaddress.IPv6Network("::ffff:0:0/96"), NAT64):
            if net.subnet_of(wrapper):
                start = ipaddress.IPv4Address(int(net.network_address) & 0xFFFFFFFF)
                return ipaddress.IPv4Network((start, net.prefixlen - 96))
    return net


def forwarded_hops(header: str, value: str) -> list[str]:
    """The client addresses a forwarding header lists, nearest the client first, as written
    (to be read with :func:`parse`). ``header``: ``x-forwarded-for`` (comma-separated) or
    ``forwarded`` (RFC 7239: the ``for=`` of each element; ``unknown`` and obfuscated
    identifiers are kept, and do not parse)."""
    if header == "forwarded":
        hops = []
        for element in value.split(","):
            for pair in element.split(";"):
                name, _, given = pair.partition("=")
                if name.strip().lower() == "for":
                    hops.append(given.strip())
        return [h for h in hops if h]
    return [h.strip() for h in value.split(",") if h.strip()]
