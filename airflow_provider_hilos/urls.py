"""URLs read exactly as the HTTP stack will use them: one strict parse, one loopback check, proxies.

The provider sends its token to the Base URL's host, and lets plain ``http://`` through only to
loopback. That exemption is safe only if the host this module checks is the host ``urllib3``
connects to, and only if no proxy sits on the way. So a URL is accepted only when its host is
plainly a host name or an IP literal, and ``urllib.parse`` and ``urllib3`` read the same scheme,
host and port from it. The sandbox uses the same :func:`is_loopback_host`.

Standard library and ``urllib3``/``requests`` only (no Airflow): the sandbox imports it too.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import NamedTuple
from urllib.parse import urlsplit

#: A DNS host name in ASCII (IDNA names in their ``xn--`` form), labels of letters, digits and hyphens.
_HOST_NAME = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.?", re.ASCII | re.IGNORECASE
)
#: Characters no authority part of a URL this provider calls may hold: they make parsers disagree.
_AMBIGUOUS = re.compile(r"[\\@%\s\x00-\x1f\x7f]")


class CheckedURL(NamedTuple):
    """A URL that passed :func:`check_url`: ``scheme`` lower-case, ``host`` without brackets."""

    scheme: str
    host: str
    port: int | None
    netloc: str
    path: str


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is this machine by itself: ``localhost``, ``127.0.0.0/8`` or ``::1``.

    Names are not resolved: a name other than ``localhost`` (``x.localhost``, ``127.0.0.1.nip.io``)
    could lead anywhere, so it is not loopback here.
    """
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(raw: str, *, schemes: tuple[str, ...] = ("http", "https")) -> CheckedURL:
    """Parse ``raw`` strictly: a scheme of ``schemes``, a plain host (name or IP literal), an optional port
    and path, and nothing two URL parsers could read differently.

    :raises ValueError: a phrase saying what is wrong, to follow the URL's name in a message
        (``"has scheme 'ftp'"``, ``"contains credentials"``...); it never repeats the URL itself.
    """
    authority = raw.split("://", 1)[-1].split("/", 1)[0]
    if "@" in authority:
        raise ValueError("contains credentials (user:password@)")
    if _AMBIGUOUS.search(authority) or any(ch.isspace() for ch in raw):
        raise ValueError(
            "has a host part with a character URL parsers read differently (\\, %, a space or a control character)"
        )
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise ValueError(f"has scheme {scheme!r}, not {' or '.join(schemes)}")
    if parts.query or parts.fragment or raw.endswith(("?", "#")):
        raise ValueError("has a query string or fragment")
    host = parts.hostname or ""
    if not host:
        raise ValueError("has no host name")
    if not (_HOST_NAME.fullmatch(host) or _is_ip(host)):
        raise ValueError(f"has host {host!r}, which is neither a host name nor an IP address")
    _same_as_urllib3(raw, scheme, host, port)
    return CheckedURL(scheme=scheme, host=host, port=port, netloc=parts.netloc, path=parts.path)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _same_as_urllib3(raw: str, scheme: str, host: str, port: int | None) -> None:
    """Refuse a URL that ``urllib3`` (which opens the connection) reads differently from ``urllib.parse``."""
    from urllib3.util import parse_url

    try:
        theirs = parse_url(raw)
    except Exception as exc:  # urllib3's LocationParseError and friends
        raise ValueError(f"cannot be parsed by the HTTP library ({type(exc).__name__})") from None
    if ((theirs.scheme or "").lower(), (theirs.host or "").strip("[]").lower(), theirs.port) != (scheme, host, port):
        raise ValueError("is read differently by the HTTP library, which would connect elsewhere")


def environ_proxy(url: str) -> str | None:
    """The proxy the environment (``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``...) sends ``url`` through, or ``None``."""
    import requests.utils

    return requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url)) or None


def without_credentials(url: str) -> str:
    """``url``'s scheme, host and port only: what a message may show of a proxy URL."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{port}" if port else "")


def host_does_not_resolve(host: str) -> bool:
    """Whether ``host`` (a name, not an address) has no address (asks the system resolver once)."""
    if not host or is_loopback_host(host) or host.replace(".", "").isdigit() or ":" in host:
        return False
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror:
        return True
    except OSError:
        return False
    return False
