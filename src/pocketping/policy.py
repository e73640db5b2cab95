"""Who may use the widget endpoints: the client's address behind trusted proxies, address and
user-agent filters, and verified identities. :class:`Policy` holds the rules; the front of the
ASGI app applies the request rules (``screen``) and the chat service the conversation rules
(``check_identity``), so every entry point gets the same answers."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import addresses
from .addresses import DEFAULT_IPV6_PREFIX, Network
from .errors import AuthError, Forbidden, InvalidInput

if TYPE_CHECKING:
    from .bans import BanBook

log = logging.getLogger("pocketping")

#: The forwarding headers a deployment may trust (``client_ip_header=``), lower case.
CLIENT_IP_HEADERS = ("x-forwarded-for", "x-real-ip", "forwarded")

#: Key of the identity the widget passes with the HMAC of the user id (``identity.userHash``).
USER_HASH = "userHash"

#: User agents of crawlers and automated clients: search engines, SEO crawlers, headless and
#: automation tools, uptime monitors and link previewers. None of them chats.
BOT_PATTERNS: tuple[str, ...] = (
    # search engines
    r"googlebot",
    r"bingbot",
    r"yandex(bot|images)",
    r"baiduspider",
    r"duckduckbot",
    r"slurp",
    r"sogou",
    r"exabot",
    r"applebot",
    r"petalbot",
    r"seznambot",
    r"naverbot|yeti/",
    # SEO and data crawlers
    r"ahrefsbot",
    r"semrushbot",
    r"mj12bot",
    r"dotbot",
    r"rogerbot",
    r"screaming frog",
    r"serpstatbot",
    r"blexbot",
    r"dataforseobot",
    r"megaindex",
    r"ccbot",
    r"gptbot",
    r"claudebot",
    r"bytespider",
    r"amazonbot",
    r"perplexitybot",
    # headless browsers and automation
    r"headlesschrome",
    r"phantomjs",
    r"puppeteer",
    r"playwright",
    r"selenium",
    r"webdriver",
    r"python-requests",
    r"python-urllib",
    r"aiohttp",
    r"httpx",
    r"go-http-client",
    r"curl/",
    r"wget",
    r"scrapy",
    r"node-fetch",
    r"axios",
    r"java/",
    r"okhttp",
    r"libwww-perl",
    # uptime monitors
    r"uptimerobot",
    r"pingdom",
    r"statuscake",
    r"site24x7",
    r"newrelicpinger",
    r"datadog",
    r"betteruptime",
    r"freshping",
    r"hetrixtools",
    # link previewers
    r"facebookexternalhit",
    r"facebot",
    r"twitterbot",
    r"slackbot",
    r"discordbot",
    r"telegrambot",
    r"whatsapp",
    r"linkedinbot",
    r"embedly",
    r"skypeuripreview",
    r"redditbot",
    r"pinterest",
    # anything that says what it is
    r"\bbot\b",
    r"crawler",
    r"spider",
)


def identity_hash(secret: str, user_id: str) -> str:
    """The hex HMAC-SHA256 of ``user_id`` under ``secret``: render it in your page and pass it
    to the widget as the identity's ``userHash``, so PocketPing knows the identity is yours."""
    if not isinstance(secret, str) or not secret:
        raise InvalidInput("identity_hash needs the identity secret (a non-empty string)")
    return hmac.new(secret.encode(), str(user_id).encode(), hashlib.sha256).hexdigest()


def _networks(values: Iterable[str], what: str) -> tuple[Network, ...]:
    if isinstance(values, str):
        values = [values]
    found = []
    for value in values:
        try:
            found.append(addresses.network(value))
        except (ValueError, AttributeError):
            raise InvalidInput(f"{what}: {value!r} is not an IP address or CIDR range such as 10.0.0.0/8") from None
    return tuple(found)


class IpFilter:
    """``IpFilter(allow=[...], deny=[...])``: addresses or CIDR ranges. A denied address is
    refused; when ``allow`` is given, only addresses in it are let in."""

    def __init__(self, *, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self.allow = _networks(allow, "IpFilter allow")
        self.deny = _networks(deny, "IpFilter deny")

    def __repr__(self) -> str:
        return f"IpFilter(allow={[str(n) for n in self.allow]}, deny={[str(n) for n in self.deny]})"

    def allows(self, ip: str | None) -> bool:
        """Whether ``ip`` may pass; any spelling of an address is matched as its canonical
        form (an IPv4-mapped IPv6 address against IPv4 rules)."""
        address = addresses.parse(ip)
        if address is None:
            return not self.allow
        if any(address in net for net in self.deny):
            return False
        return not self.allow or any(address in net for net in self.allow)


class UaFilter:
    """``UaFilter(block_bots=True, allow=[...], deny=[...])``: user-agent patterns (regular
    expressions, matched case-insensitively anywhere). ``allow`` wins over the bot list and
    ``deny``; ``block_bots`` refuses :data:`BOT_PATTERNS`."""

    def __init__(self, *, block_bots: bool = True, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self.block_bots = block_bots
        self.allow = _patterns(allow, "UaFilter allow")
        refused = [*(BOT_PATTERNS if block_bots else ()), *deny]
        self.deny = _patterns(refused, "UaFilter deny")

    def __repr__(self) -> str:
        return f"UaFilter(block_bots={self.block_bots})"

    def allows(self, user_agent: str | None) -> bool:
        ua = user_agent or ""
        if self.allow is not None and self.allow.search(ua):
            return True
        return self.deny is None or not self.deny.search(ua)


def _patterns(values: Iterable[str], what: str) -> re.Pattern[str] | None:
    values = [values] if isinstance(values, str) else list(values)
    if not values:
        return None
    try:
        return re.compile("|".join(f"(?:{v})" for v in values), re.IGNORECASE)
    except re.error as exc:
        raise InvalidInput(f"{what}: not a regular expression ({exc})") from None


class Policy:
    """The rules one :class:`~pocketping.PocketPing` applies (see its arguments)."""

    def __init__(
        self,
        *,
        trusted_proxies: Iterable[str] = (),
        client_ip_header: str = "X-Forwarded-For",
        ipv6_prefix: int = DEFAULT_IPV6_PREFIX,
        ip_filter: IpFilter | None = None,
        ua_filter: UaFilter | None = None,
        identity_secret: str | None = None,
        require_verified_identity: bool = False,
    ) -> None:
        if ip_filter is not None and not isinstance(ip_filter, IpFilter):
            raise InvalidInput("ip_filter must be an IpFilter(allow=[...], deny=[...])")
        if ua_filter is not None and not isinstance(ua_filter, UaFilter):
            raise InvalidInput("ua_filter must be a UaFilter(block_bots=..., allow=[...], deny=[...])")
        if identity_secret is not None and (not isinstance(identity_secret, str) or not identity_secret):
            raise InvalidInput("identity_secret must be a non-empty string")
        if require_verified_identity and identity_secret is None:
            raise InvalidInput("require_verified_identity=True needs identity_secret")
        header = client_ip_header.lower() if isinstance(client_ip_header, str) else None
        if header not in CLIENT_IP_HEADERS:
            raise InvalidInput(
                f"client_ip_header must be one of X-Forwarded-For, X-Real-IP, Forwarded, not {client_ip_header!r}"
            )
        try:
            self.ipv6_prefix = addresses.check_prefix(ipv6_prefix)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        self.trusted_proxies = _networks(trusted_proxies, "trusted_proxies")
        #: The one forwarding header read from trusted proxies (lower case).
        self.client_ip_header = header
        self.client_ip_header_key = header.encode("latin-1")
        self.ip_filter = ip_filter
        self.ua_filter = ua_filter
        self._identity_secret = identity_secret
        self.require_verified_identity = require_verified_identity
        self._warned_proxy = False
        self._warned_hop = False
        self._warned_header = False
        #: Bans by address and user (the chat service's :class:`~pocketping.bans.BanBook`).
        self.bans: BanBook | None = None

    def __repr__(self) -> str:  # the identity secret stays out of logs and tracebacks
        return f"Policy(trusted_proxies={len(self.trusted_proxies)}, ip_filter={self.ip_filter!r})"

    @property
    def screens(self) -> bool:
        """Whether :meth:`screen` can refuse anything (the fast path skips it otherwise)."""
        return self.ip_filter is not None or self.ua_filter is not None or (self.bans is not None and self.bans.active)

    def client_ip(self, peer: str | None, forwarded: str | None = None) -> str | None:
        """The client's address, canonical (:func:`pocketping.addresses.canonical`): the
        peer's, unless the peer is a trusted proxy; then what ``forwarded``, the value of the
        one trusted header (``client_ip_header``), says. For ``X-Forwarded-For`` and
        ``Forwarded``, that is the rightmost hop that is not a trusted proxy (the one the
        nearest trusted proxy saw); for ``X-Real-IP``, its address. Other forwarding headers
        are ignored, so a client cannot choose its own address through them."""
        peer_text = addresses.canonical(peer)
        if not self.trusted_proxies or peer_text is None or not self._trusted(addresses.parse(peer)):
            if forwarded and not self._warned_proxy:
                self._warn_untrusted_proxy(peer_text)
            return peer if peer_text is None else peer_text
        if not forwarded:
            return peer_text
        if self.client_ip_header == "x-real-ip":
            hops = [forwarded]
        else:
            hops = addresses.forwarded_hops(self.client_ip_header, forwarded)
        for hop in reversed(hops):
            address = addresses.parse(hop)
            if address is None:
                self._warn_bad_hop()
                return peer_text
            if not self._trusted(address):
                return addresses.canonical(hop)
        first = addresses.parse(hops[0]) if hops else None
        return str(first) if first is not None else peer_text

    def check_other_headers(self, peer: str | None, headers: Mapping[bytes, str]) -> None:
        """Warn once when a trusted proxy sends a forwarding header other than the configured
        one and not that one: every visitor then has the proxy's address (one rate-limit
        count, one ban) until ``client_ip_header`` names the header the proxy sets."""
        if self._warned_header or not self._trusted(addresses.parse(peer)):
            return
        others = [h for h in CLIENT_IP_HEADERS if h != self.client_ip_header and h.encode() in headers]
        if others:
            self._warned_header = True
            log.warning(
                "the trusted proxy %s sends %s but not %s: its own address is used as every client's; "
                "set client_ip_header to the header it sets",
                peer,
                ", ".join(others),
                self.client_ip_header,
            )

    def client_key(self, ip: str | None) -> str | None:
        """What a client is counted and banned by: its IPv4 address or its IPv6 prefix."""
        if ip is None or ":" not in ip:
            return ip
        return addresses.client_key(ip, self.ipv6_prefix)

    def _warn_untrusted_proxy(self, peer: str | None) -> None:
        # Behind a proxy that is not trusted, every visitor has the proxy's address: they share
        # one rate-limit count and one filter verdict.
        self._warned_proxy = True
        log.warning(
            "requests from %s carry %s, but %s is not in trusted_proxies: the peer address is "
            "used as the client's (for rate limits and filters); list your proxies in trusted_proxies",
            peer,
            self.client_ip_header,
            peer,
        )

    def _warn_bad_hop(self) -> None:
        if not self._warned_hop:
            self._warned_hop = True
            log.warning(
                "a trusted proxy sent a %s that names no address; the proxy's own address is used",
                self.client_ip_header,
            )

    def is_trusted_proxy(self, ip: str | None) -> bool:
        """Whether ``ip`` is (in) one of ``trusted_proxies``."""
        return self._trusted(addresses.parse(ip))

    def _trusted(self, address: addresses.Address | None) -> bool:
        return address is not None and any(address in net for net in self.trusted_proxies)

    def screen(self, ip: str | None, user_agent: str | None) -> None:
        """:class:`Forbidden` when the filters refuse the client."""
        if self.ip_filter is not None and not self.ip_filter.allows(ip):
            raise Forbidden("requests from this address are not accepted")
        if self.bans is not None and self.bans.address_banned(ip):
            raise Forbidden("this address has been blocked by the site's operators")
        if self.ua_filter is not None and not self.ua_filter.allows(user_agent):
            raise Forbidden("requests from automated clients are not accepted")

    def check_identity(self, identity: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """The identity to store (without its ``userHash``) and whether it is verified.
        :class:`AuthError` for a wrong hash, or a missing one when verification is required."""
        stored = {k: v for k, v in identity.items() if k != USER_HASH}
        given = identity.get(USER_HASH)
        if self._identity_secret is None:
            return stored, False
        if given is None or given == "":
            if self.require_verified_identity:
                raise AuthError("this site requires a verified identity (identity.userHash)")
            return stored, False
        expected = identity_hash(self._identity_secret, str(identity.get("id", "")))
        if not isinstance(given, str) or not hmac.compare_digest(given.lower().encode(), expected.encode()):
            raise AuthError("identity.userHash does not match identity.id")
        return stored, True
