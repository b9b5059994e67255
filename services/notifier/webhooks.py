"""Webhook endpoint rules: signing secrets, the SSRF guard on receiver URLs, event-type patterns and
Standard Webhooks signatures. Plain functions, no Flask and no session.

SSRF guard. A receiver URL is refused unless its scheme is http or https, it carries no user
information, its host resolves, and EVERY address it resolves to is public (``is_global`` and none
of loopback, private, link-local — which holds the cloud metadata address 169.254.169.254 —,
shared/CGNAT, reserved, multicast or unspecified; IPv4 addresses embedded in IPv6, such as
``::ffff:127.0.0.1``, are judged as the IPv4 address they carry). ``WEBHOOK_ALLOW_PRIVATE=true`` lifts
the public-address rule (development, a receiver on the same network); unspecified and multicast
addresses stay refused since nothing can receive a webhook there. The check runs at registration
and again before every delivery, and the sender connects only to the addresses it checked (DNS
rebinding cannot swap in another one between check and connect).

Ports are not restricted: once every address is public, which port the receiver listens on is its
own business (8443 and 8080 are common), and a port list would not add protection.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime as dt
import ipaddress
import re
import secrets
import socket
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook

from shared.config import env_flag

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the Standard Webhooks spec asks for 24 to 64 random bytes
RESOLVE_TIMEOUT_SECONDS = 5.0
USER_AGENT = "refstd-webhooks/1"
PING_EVENT_TYPE = "refstd.notifier.webhook.ping"
SERVICES = ("inventory", "scheduler", "notifier")
# Event types are refstd.<service>.<entity>.<verb>: a pattern must be able to match that many words.
EVENT_TYPE_WORDS = 4

_WORD = re.compile(r"\A[a-z][a-z0-9_]*\Z")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# getaddrinfo() has no timeout of its own: it runs here and is waited for with one.
_resolver = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="webhook-dns")


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def private_addresses_allowed(settings=None) -> bool:
    """WEBHOOK_ALLOW_PRIVATE: the settings' ``webhook_allow_private`` when it has one, else the environment."""
    value = getattr(settings, "webhook_allow_private", None)
    if value is not None:
        return bool(value)
    return env_flag("WEBHOOK_ALLOW_PRIVATE", False)


# ---------------------------------------------------------------------------------------------------
# The SSRF guard


@dataclass(frozen=True)
class UrlCheck:
    """What checking a receiver URL found: a problem (None if acceptable) and the addresses to use.

    ``temporary`` says the problem may go away by itself (a DNS failure), unlike a refused address.
    """

    problem: str | None
    scheme: str = ""
    host: str = ""
    port: int = 0
    host_header: str = ""
    target: str = "/"
    addresses: tuple[str, ...] = field(default_factory=tuple)
    temporary: bool = False


def address_kind(address: str, allow_private: bool = False) -> str | None:
    """What makes this IP address unfit for a receiver ("loopback address", ...), or None."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "invalid address"
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_multicast:
        return "multicast address"
    if allow_private:
        return None
    if ip.version == 6:
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            kind = address_kind(str(embedded))
            if kind:
                return f"{kind} (IPv4 {embedded} inside IPv6)"
            if ip.ipv4_mapped is not None or ip in _NAT64:
                return None  # these reach exactly the public IPv4 address they carry
    return _non_public_kind(ip)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def _non_public_kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if ip.is_loopback:
        return "loopback address"
    if ip.is_link_local:
        return "link-local address" + (" (cloud metadata)" if str(ip) == "169.254.169.254" else "")
    if ip.version == 4 and ip in _CGNAT:
        return "shared address (CGNAT, 100.64.0.0/10)"
    if ip.is_reserved:
        return "reserved address"
    if ip.is_private:
        return "private address"
    if not ip.is_global:
        return "non-public address"
    return None


def _refusal(host: str, address: str, kind: str, literal: bool) -> str:
    article = "an" if kind[0] in "aeiou" else "a"
    where = f"{host} is" if literal else f"{host} resolves to {address},"
    return (f"{where} {article} {kind}; webhooks are not delivered to loopback, private, link-local "
            "or other non-public addresses (SSRF protection)")


def check_url(url: str, allow_private: bool = False,
              resolve_timeout: float = RESOLVE_TIMEOUT_SECONDS) -> UrlCheck:
    """Check a receiver URL (see the module's docstring) and resolve it to the addresses to connect to."""
    if not isinstance(url, str) or not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        return UrlCheck("must be plain ASCII without spaces or control characters (percent-encode the path, "
                        "write the host name in punycode)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return UrlCheck(f"is not a valid URL ({exc})")
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return UrlCheck("must use the http or https scheme")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return UrlCheck("must not contain user information (user:password@); authenticate by the signature")
    host = parts.hostname
    if not host:
        return UrlCheck("has no host")
    if port == 0:
        return UrlCheck("has port 0, which cannot be connected to")
    port = port or (443 if scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    found = UrlCheck(None, scheme, host, port, parts.netloc, target)
    literal = True
    try:
        addresses = (str(ipaddress.ip_address(host.split("%", 1)[0])),)
    except ValueError:
        literal = False
        addresses, failure = _resolve(host, port, resolve_timeout)
        if failure:
            return replace(found, problem=failure, temporary=True)
    for address in addresses:
        kind = address_kind(address, allow_private)
        if kind:
            return replace(found, problem=_refusal(host, address, kind, literal), addresses=addresses)
    return replace(found, addresses=addresses)


def url_problem(url: str, allow_private: bool = False) -> str | None:
    """Why this URL may not receive webhooks, or None."""
    return check_url(url, allow_private).problem


def _resolve(host: str, port: int, timeout: float) -> tuple[tuple[str, ...], str | None]:
    try:
        future = _resolver.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        infos = future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        return (), f"host {host} could not be resolved within {timeout:g} s"
    except (OSError, UnicodeError) as exc:
        return (), f"host {host} could not be resolved ({exc})"
    addresses = tuple(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        return (), f"host {host} resolves to no address"
    return addresses, None


# ---------------------------------------------------------------------------------------------------
# Event-type patterns (AMQP topic syntax: * is one word, # is zero or more words; matched by
# shared.messaging.topology.topic_matches through services.notifier.domain)


def pattern_problem(pattern: str) -> str | None:
    """Why this is not a usable event-type pattern, or None.

    ``refstd.<service>.<entity>.<verb>`` with lower-case words; ``*`` and ``#`` only as whole words;
    the service is one of ours or a wildcard; the pattern must be able to match a four-word type.
    """
    if not isinstance(pattern, str) or not pattern:
        return "must be a non-empty event type or pattern"
    words = pattern.split(".")
    if any(word == "" for word in words):
        return "must be dot-separated words, none empty (e.g. refstd.scheduler.booking.*)"
    for word in words:
        if word not in ("*", "#") and not _WORD.match(word):
            return (f"has the word {word!r}: words are lower-case letters, digits and _, and the wildcards "
                    "* (one word) and # (any number of words) stand alone between dots")
    if words[0] != "refstd":
        return "must start with refstd. (event types are refstd.<service>.<entity>.<verb>)"
    if len(words) < 2 or (words[1] not in SERVICES and words[1] not in ("*", "#")):
        return f"must name a service after refstd.: one of {', '.join(SERVICES)}, or a wildcard"
    fixed = sum(1 for word in words if word != "#")
    if fixed > EVENT_TYPE_WORDS or ("#" not in words and fixed < EVENT_TYPE_WORDS):
        return "matches no event type: event types have four words, refstd.<service>.<entity>.<verb>"
    return None


# ---------------------------------------------------------------------------------------------------
# Standard Webhooks signatures


def signature_headers(secret: str, message_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers for exactly ``body``."""
    signed_at = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    signature = Webhook(secret).sign(message_id, signed_at, body.decode("utf-8"))
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}
