"""The ``hilos`` Airflow connection: its defaults, its form fields, and the checked settings read from it.

Airflow reads the form fields (``CONN_FIELDS``, ``UI_FIELD_BEHAVIOUR``) through ``get_provider_info``
while it loads its providers, so this module imports nothing from Airflow when it is imported; the
error it raises is imported when it is raised.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard
from urllib.parse import urlsplit

from airflow_provider_hilos.endpoints import API_FAMILY_CHOICES, AUTO, ApiFamily, resolve_api_family
from airflow_provider_hilos.urls import (
    check_url,
    environ_proxy,
    host_does_not_resolve,
    is_loopback_host,
    without_credentials,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection

    from airflow_provider_hilos.exceptions import HilosConfigurationError

TOKEN_HELP_URL = "https://app.hilos.io/dev/api-keys"


def _configuration_error(message: str) -> HilosConfigurationError:
    from airflow_provider_hilos.exceptions import HilosConfigurationError  # Airflow, imported when needed

    return HilosConfigurationError(message)


DEFAULT_BASE_URL = "https://api.hilos.io"
DEFAULT_WEB_BASE_URL = "https://app.hilos.io"
DEFAULT_HEADER_NAME = "Authorization"
DEFAULT_AUTH_SCHEME = "Token"
#: Which path family to call: decided by the host unless the connection says otherwise.
DEFAULT_API_FAMILY = AUTO
#: Seconds to open the TCP/TLS connection: a healthy API needs well under one second; ten seconds
#: ride out a slow DNS answer or a lost SYN (retransmitted after 1 s and 3 s) and still fail fast.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds to wait for the answer: a single-conversation PATCH answers in well under a second;
#: thirty seconds tolerate a slow, loaded server, and free the worker slot long before a task timeout.
DEFAULT_READ_TIMEOUT = 30.0
#: Attempts per request (the first one included) for 429, 5xx gateway errors, timeouts, resets.
DEFAULT_MAX_ATTEMPTS = 5
#: Rows per list page asked for: Hilos publishes no maximum; 100 is a common cap of DRF APIs (a server that caps
#: lower is followed; the sandbox allows 1,000).
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 10_000


def page_size_is_valid(value: Any) -> TypeGuard[int]:
    """Whether ``value`` is a page size a listing may ask for: a whole number from 1 to :data:`MAX_PAGE_SIZE`."""
    return not isinstance(value, bool) and isinstance(value, int) and 1 <= value <= MAX_PAGE_SIZE


#: The connection form's extra fields. Their names must not look secret to Airflow's masker
#: ("auth_header", "token", ... are hidden as ***), or the form would show and save "***".
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "api_family": {
        "label": "API family",
        "description": "Which published paths to call. auto: ActiveCampaign account hosts (*.api-us1.com, "
        "*.activehosted.com) use /channel/whatsapp/inbox/...; any other host (api.hilos.io) uses /api/inbox/.... "
        "hilos or activecampaign force one.",
        "schema": {"type": ["string", "null"], "default": DEFAULT_API_FAMILY, "enum": list(API_FAMILY_CHOICES)},
    },
    "header_name": {
        "label": "Token header name",
        "description": "HTTP header that carries the token. Hilos: Authorization. "
        "Some account hosts (…/api/3) expect a header named Token.",
        "schema": {"type": ["string", "null"], "default": DEFAULT_HEADER_NAME},
    },
    "auth_scheme": {
        "label": "Auth scheme",
        "description": "The word before the token in that header. Hilos: Token (sends 'Token <key>'). "
        "Leave empty to send the bare token.",
        "schema": {"type": ["string", "null"], "default": DEFAULT_AUTH_SCHEME},
    },
    "connect_timeout": {
        "label": "Connect timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": DEFAULT_CONNECT_TIMEOUT, "exclusiveMinimum": 0},
    },
    "read_timeout": {
        "label": "Read timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": DEFAULT_READ_TIMEOUT, "exclusiveMinimum": 0},
    },
    "max_attempts": {
        "label": "Attempts per request",
        "description": "Including the first; retries 429, 500, 502, 503, 504, timeouts and dropped connections.",
        "schema": {"type": ["integer", "null"], "default": DEFAULT_MAX_ATTEMPTS, "minimum": 1},
    },
    "max_requests_per_second": {
        "label": "Request quota (requests per second)",
        "description": "The most this connection sends, all tasks' requests of one hook together (updates, batches, "
        "listings). Hilos publishes no limit: set your plan's, a little under it. Empty: no cap; the hook still "
        "slows down to the pace the API allows when it answers 429.",
        "schema": {"type": ["number", "null"], "exclusiveMinimum": 0},
    },
    "page_size": {
        "label": "List page size",
        "description": "Rows per page when reading the conversation list (exports, syncs). Hilos publishes no "
        "maximum; 100 is a common cap of Django REST Framework APIs. A server that serves fewer per page is "
        "followed; a larger size only saves requests if the server allows it.",
        "schema": {"type": ["integer", "null"], "default": DEFAULT_PAGE_SIZE, "minimum": 1, "maximum": MAX_PAGE_SIZE},
    },
    "web_base_url": {
        "label": "Hilos web app URL",
        "description": "Where the 'Hilos conversation' task link points.",
        "schema": {"type": ["string", "null"], "default": DEFAULT_WEB_BASE_URL},
    },
    "allow_insecure_http": {
        "label": "Allow plain http:// to a non-loopback host",
        "description": "Off by default: the token would travel in clear text.",
        "schema": {"type": ["boolean", "null"], "default": False},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "login", "port", "extra"],
    "relabeling": {"host": "Base URL", "password": "API token"},
    "placeholders": {
        "host": DEFAULT_BASE_URL,
        "password": "API token from https://app.hilos.io/dev/api-keys",
    },
}


@dataclass(frozen=True)
class HilosConnectionSettings:
    """Everything the hook reads from the Airflow connection, checked and normalised.

    The token is kept out of ``repr`` so that logging the settings cannot leak it.
    """

    conn_id: str
    base_url: str
    token: str
    header_name: str = DEFAULT_HEADER_NAME
    auth_scheme: str = DEFAULT_AUTH_SCHEME
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    #: rows per page when reading the conversation list
    page_size: int = DEFAULT_PAGE_SIZE
    web_base_url: str = DEFAULT_WEB_BASE_URL
    #: the quota of everything one hook of this connection sends (``None``: no cap, only the 429 pacing)
    max_requests_per_second: float | None = None
    api_family: ApiFamily = ApiFamily.HILOS
    api_family_reason: str = "the default"
    #: the proxy the environment sends the Base URL through, read once with the connection (never shown:
    #: it may hold credentials)
    proxy: str | None = None

    def __repr__(self) -> str:
        return (
            f"HilosConnectionSettings(conn_id={self.conn_id!r}, base_url={self.base_url!r}, token='***', "
            f"api_family={self.api_family.value!r}, header_name={shown_header_name(self.header_name)}, "
            f"auth_scheme={shown_auth_scheme(self.auth_scheme)}, timeout=({self.connect_timeout}, "
            f"{self.read_timeout}), max_attempts={self.max_attempts})"
        )

    def url(self, path: str) -> str:
        """The full URL of an API path (never carries the token: it travels in a header)."""
        return self.base_url + path

    @property
    def family_display(self) -> str:
        """``API family hilos (auto: api.hilos.io is not an ActiveCampaign account host)``."""
        return f"API family {self.api_family.value} ({self.api_family_reason})"

    @property
    def auth_value(self) -> str:
        """The value of the auth header, e.g. ``Token <key>``."""
        return f"{self.auth_scheme} {self.token}" if self.auth_scheme else self.token

    @property
    def auth_display(self) -> str:
        """The auth header as it may be shown to a person: ``Authorization: Token ***``. A header name or scheme
        that is not one of the usual words is shown by its length only (it may be a token pasted into the wrong
        field)."""
        name = (
            self.header_name if _is_known(self.header_name, KNOWN_HEADER_NAMES) else shown_header_name(self.header_name)
        )
        if not self.auth_scheme:
            return f"{name}: ***"
        scheme = (
            self.auth_scheme if _is_known(self.auth_scheme, KNOWN_AUTH_SCHEMES) else shown_auth_scheme(self.auth_scheme)
        )
        return f"{name}: {scheme} ***"


#: Auth schemes a message may show as they are (any other is shown by its length: it may be a pasted token).
KNOWN_AUTH_SCHEMES = ("Token", "Bearer", "Api-Key", "ApiKey", "Basic")
#: Header names a message may show as they are (likewise).
KNOWN_HEADER_NAMES = ("Authorization", "Token", "X-Api-Key", "Api-Key", "X-Auth-Token", "X-Token")


def _is_known(value: str, known: tuple[str, ...]) -> bool:
    return value.lower() in (word.lower() for word in known)


def shown_auth_scheme(scheme: str) -> str:
    """An auth scheme as a message may show it: one of :data:`KNOWN_AUTH_SCHEMES` quoted, ``''`` (a bare token), or
    its length only (``<a 34-character auth scheme>``): a value nobody documented may be a token in the wrong field."""
    if not scheme or _is_known(scheme, KNOWN_AUTH_SCHEMES):
        return repr(scheme)
    return f"<a {len(scheme)}-character auth scheme>"


def shown_header_name(name: str) -> str:
    """A header name as a message may show it: a usual one quoted, any other by its length only."""
    if _is_known(name, KNOWN_HEADER_NAMES):
        return repr(name)
    return f"<a {len(name)}-character header name>"


def _extra(extras: Mapping[str, Any], key: str, *, keep_empty: bool = False) -> Any:
    """An extra by its plain name, or by the ``extra__hilos__`` name older forms saved.

    An empty string counts as "not set" unless ``keep_empty`` (an empty auth prefix means a bare token).
    """
    for name in (key, f"extra__hilos__{key}"):
        value = extras.get(name)
        if value is not None and (value != "" or keep_empty):
            return value
    return None


def _check_extra_names(extras: Any, conn_id: str) -> None:
    """Refuse extras this provider does not know: a typo (``max_attempt``) would otherwise leave a default in force.

    Only the names are shown, never the values (an extra may hold a secret).
    """
    if not isinstance(extras, Mapping):
        raise _configuration_error(
            f"Hilos connection {conn_id!r}: its extra must be a JSON object such as "
            '{"api_family": "auto"}; it is not one'
        )
    unknown = []
    for key in extras:
        name = str(key).removeprefix("extra__hilos__")
        if name not in CONN_FIELDS:
            close = difflib.get_close_matches(name, CONN_FIELDS, n=1)
            if close or _PLAIN_NAME.fullmatch(name):  # a typo, or a name someone chose: harmless to show
                unknown.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            else:  # a key no one would type as a name (digits, mixed case, long): perhaps a pasted secret
                unknown.append(f"<a {len(str(key))}-character name, not shown: it may be a secret>")
    if unknown:
        raise _configuration_error(
            f"Hilos connection {conn_id!r}: unknown extra {', '.join(unknown)}; "
            f"the extras it reads are {', '.join(CONN_FIELDS)}. Rename or remove the unknown ones"
        )


#: An extra's name shown in a message as it is: lower-case words joined by underscores.
_PLAIN_NAME = re.compile(r"[a-z]+(?:_+[a-z]+)*", re.ASCII)


def _not_one_word(text: str) -> bool:
    """Whether ``text`` holds spaces or control characters (it could not be sent in one header value)."""
    return any(ch.isspace() or not ch.isprintable() for ch in text)


def parse_base_url(
    host: str | None,
    *,
    conn_id: str,
    schema: str | None = None,
    port: int | None = None,
    allow_insecure_http: bool = False,
) -> str:
    """Turn the connection's host field into the API base URL.

    :param host: ``api.hilos.io``, ``https://api.hilos.io/``, ``https://acct.api-us1.com/api/3``;
        empty means ``https://api.hilos.io``. A missing scheme means ``https``.
    :param conn_id: named in error messages.
    :param schema: the connection's schema field, used as a path prefix when the host has none
        (that is where a URI like ``hilos://:TOKEN@acct.api-us1.com/api/3`` puts ``api/3``).
    :param port: the connection's port field, used when the host names none.
    :param allow_insecure_http: allow ``http://`` to a host that is not loopback, or through a proxy.
    :raises HilosConfigurationError: on a query string, fragment, credentials in the URL, a scheme
        other than http(s), a host two URL parsers read differently, or clear-text http that could
        leave the machine (a remote host, or a proxy on the way).
    """
    raw = (host or "").strip() or DEFAULT_BASE_URL
    if "://" not in raw:
        raw = f"https://{raw}"
    try:
        url = check_url(raw)
    except ValueError as reason:  # the value is not shown: it may hold credentials or a token
        fix = (
            "put the token in the 'API token' (password) field"
            if "credentials" in str(reason)
            else f"give only scheme, host and an optional path prefix, e.g. {DEFAULT_BASE_URL} or "
            "https://youraccount.api-us1.com/api/3"
        )
        raise _configuration_error(f"Hilos connection {conn_id!r}: the Base URL (host) {reason}; {fix}") from None
    where = f"Hilos connection {conn_id!r}: Base URL (host) {url.scheme}://{url.host}"
    path = url.path.rstrip("/")
    if not path and schema and schema.strip("/"):
        path = "/" + schema.strip("/")
    netloc = url.netloc if url.port is not None or not port else f"{url.netloc}:{port}"
    base_url = f"{url.scheme}://{netloc}{path}"
    if url.scheme == "http" and not allow_insecure_http:
        if not is_loopback_host(url.host) and host_does_not_resolve(url.host):  # a typo, not a security choice
            close = difflib.get_close_matches(url.host.lower(), ("localhost", "api.hilos.io"), n=1, cutoff=0.75)
            raise _configuration_error(
                f"{where}: the host name {url.host!r} does not resolve (DNS knows no such name)"
                + (f"; did you mean {close[0]!r}?" if close else "; check its spelling")
            )
        if not is_loopback_host(url.host):
            raise _configuration_error(
                f"{where} uses plain http:// to {url.host!r}, which would send the API token in clear text; "
                "use https://, or set the connection extra allow_insecure_http to true if you really mean it"
            )
        if proxy := environ_proxy(base_url):
            raise _configuration_error(
                f"{where} is plain http:// to loopback, but the environment (HTTP_PROXY / ALL_PROXY) sends it "
                f"through the proxy {without_credentials(proxy)}, which would receive the API token in clear text; "
                f"add {url.host} to NO_PROXY, use https://, or set allow_insecure_http to true if you really mean it"
            )
    return base_url


def _number(value: Any, *, field: str, conn_id: str, integer: bool = False, minimum: float = 0) -> Any:
    kind = "a whole number" if integer else "a number"
    try:
        number = int(value) if integer else float(value)
        if integer and (isinstance(value, bool) or float(value) != number):
            raise ValueError
    except (TypeError, ValueError, OverflowError):  # the value is not shown: it may be a secret in the wrong field
        raise _configuration_error(
            f"Hilos connection {conn_id!r}: extra {field} is not {kind} (it holds {type(value).__name__} that is "
            "not one); fix it or remove it"
        ) from None
    if number != number or number in (float("inf"), float("-inf")):
        raise _configuration_error(f"Hilos connection {conn_id!r}: extra {field} must be a finite number")
    if number < minimum or (not integer and number <= 0):
        raise _configuration_error(  # a number is harmless to show
            f"Hilos connection {conn_id!r}: extra {field}={number:g} must be "
            f"{'at least ' + str(minimum) if integer else 'greater than 0'}"
        )
    return number


def settings_from_connection(conn: Connection) -> HilosConnectionSettings:
    """Read and check a ``hilos`` Airflow connection.

    :param conn: the Airflow connection (``host`` = base URL, ``password`` = token, extras).
    :raises HilosConfigurationError: naming the field to fix; never containing the token.
    """
    conn_id = conn.conn_id
    extras = conn.extra_dejson if conn.extra else {}
    _check_extra_names(extras, conn_id)
    token = (conn.password or "").strip()
    if not token:
        raise _configuration_error(
            f"Hilos connection {conn_id!r} has no API token: put the token from {TOKEN_HELP_URL} in its "
            "'API token' (password) field"
        )
    if _not_one_word(token):
        raise _configuration_error(
            f"Hilos connection {conn_id!r}: the API token contains spaces or control characters; "
            "paste the token alone into the 'API token' (password) field"
        )
    if not _header_safe(token):
        raise _configuration_error(
            f"Hilos connection {conn_id!r}: the API token contains characters an HTTP header cannot carry "
            f"(only Latin-1 can be sent); copy the token again from {TOKEN_HELP_URL} into the 'API token' field"
        )
    allow_http = _extra(extras, "allow_insecure_http")
    allow_http = str(allow_http).strip().lower() in ("true", "1", "yes") if allow_http is not None else False
    base_url = parse_base_url(
        conn.host, conn_id=conn_id, schema=conn.schema, port=conn.port, allow_insecure_http=allow_http
    )
    header_name = _extra(extras, "header_name")
    header_name = DEFAULT_HEADER_NAME if header_name is None else str(header_name).strip(" ")
    if problem := header_name_problem(header_name):
        raise _configuration_error(f"Hilos connection {conn_id!r}: extra header_name {problem}")
    auth_scheme = _extra(extras, "auth_scheme", keep_empty=True)
    auth_scheme = DEFAULT_AUTH_SCHEME if auth_scheme is None else str(auth_scheme).strip(" ")
    if auth_scheme and not _HTTP_TOKEN.fullmatch(auth_scheme):  # RFC 9110: an auth scheme is an ASCII token
        raise _configuration_error(  # the value is not shown: it may be a token pasted into the wrong field
            f"Hilos connection {conn_id!r}: extra auth_scheme must be one word of ASCII letters, digits and - . _ "
            f"(an HTTP auth scheme), e.g. {DEFAULT_AUTH_SCHEME!r}, or empty for a bare token"
        )
    values: dict[str, Any] = {}
    for field, integer in (
        ("connect_timeout", False),
        ("read_timeout", False),
        ("max_attempts", True),
        ("page_size", True),
        ("max_requests_per_second", False),
    ):
        if (raw := _extra(extras, field)) is not None:
            values[field] = _number(raw, field=field, conn_id=conn_id, integer=integer, minimum=1 if integer else 0)
    if values.get("page_size", DEFAULT_PAGE_SIZE) > MAX_PAGE_SIZE:
        raise _configuration_error(f"Hilos connection {conn_id!r}: extra page_size must be at most {MAX_PAGE_SIZE}")
    web_base_url = _web_base_url(_extra(extras, "web_base_url"), conn_id=conn_id)
    family_choice = str(_extra(extras, "api_family") or DEFAULT_API_FAMILY).strip().lower()
    if family_choice not in API_FAMILY_CHOICES:
        raise _configuration_error(
            f"Hilos connection {conn_id!r}: extra api_family is not one of "
            f"{', '.join(API_FAMILY_CHOICES)}; use auto (the host decides), hilos (api.hilos.io: /api/inbox/...) "
            "or activecampaign (ActiveCampaign account hosts: /channel/whatsapp/inbox/...)"
        )
    api_family, family_reason = resolve_api_family(family_choice, urlsplit(base_url).hostname or "")
    return HilosConnectionSettings(
        conn_id=conn_id,
        base_url=base_url,
        proxy=environ_proxy(base_url),
        api_family=api_family,
        api_family_reason=family_reason,
        token=token,
        header_name=header_name,
        auth_scheme=auth_scheme,
        web_base_url=web_base_url,
        **values,
    )


#: An HTTP header name is a "token" (RFC 9110 section 5.1).
_HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Headers the HTTP client sets itself, that frame the request, or that belong to one hop: carrying the token in
#: one of them would break the request or send the token where it must not go.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "cookie",
        "user-agent",
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "accept",
        "accept-encoding",
    }
)


def header_name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as the header carrying the token, or ``None`` (never shows an unchecked value)."""
    if not name or not _HTTP_TOKEN.fullmatch(name):
        return (
            "is not an HTTP header name (ASCII letters, digits and - only, no spaces); "
            f"use {DEFAULT_HEADER_NAME!r} (Hilos) or e.g. 'Token'"
        )
    if name.lower() in RESERVED_HEADERS:  # a known name: harmless to show
        return (
            f"{name!r} is a header the HTTP client sets itself or that frames the request, so it can't carry the "
            f"token; use {DEFAULT_HEADER_NAME!r} (Hilos) or e.g. 'Token'"
        )
    return None


def _header_safe(text: str) -> bool:
    """Whether ``text`` can travel in an HTTP header value (``http.client`` encodes them as Latin-1)."""
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _web_base_url(value: Any, *, conn_id: str) -> str:
    """The extra ``web_base_url``, checked: it becomes a link users click, so https (http only to loopback)."""
    raw = str(value if value is not None else DEFAULT_WEB_BASE_URL).strip().rstrip("/")
    try:
        url = check_url(raw)
        if url.scheme != "https" and not is_loopback_host(url.host):
            raise ValueError("is plain http:// to a host that is not loopback")
    except ValueError as reason:  # the value is not shown: it may be a secret pasted into the wrong field
        raise _configuration_error(
            f"Hilos connection {conn_id!r}: extra web_base_url {reason}; it becomes the task's "
            f"'Hilos conversation' link, so give an https:// address such as {DEFAULT_WEB_BASE_URL}"
        ) from None
    return raw
