"""HilosHook: the Airflow connection to the Hilos API, and every HTTP request this provider makes."""

from __future__ import annotations

import email.utils
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter

from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_hilos import __version__
from airflow_provider_hilos.endpoints import API_FAMILY_CHOICES, ApiFamily, resolve_api_family
from airflow_provider_hilos.exceptions import (
    RETRYABLE_STATUS_CODES,
    HilosAPIError,
    HilosConfigurationError,
    HilosEndpointNotFoundError,
    HilosPermanentAPIError,
)
from airflow_provider_hilos.get_provider_info import (
    CONN_FIELDS,
    DEFAULT_API_FAMILY,
    DEFAULT_AUTH_SCHEME,
    DEFAULT_BASE_URL,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HEADER_NAME,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_WEB_BASE_URL,
    UI_FIELD_BEHAVIOUR,
)
from airflow_provider_hilos.models import ValidatedUpdate, validate_update
from airflow_provider_hilos.urls import check_url, environ_proxy, is_loopback_host, without_credentials

if TYPE_CHECKING:
    from airflow.sdk import Connection

    from airflow_provider_hilos.batch import BatchResult
    from airflow_provider_hilos.checkpoint import Checkpoint

WEB_CONVERSATION_PATH = "/inbox/conversation/{id}"
TOKEN_HELP_URL = "https://app.hilos.io/dev/api-keys"
_SNIPPET_CHARS = 200


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
    web_base_url: str = DEFAULT_WEB_BASE_URL
    api_family: ApiFamily = ApiFamily.HILOS
    api_family_reason: str = "the default"
    #: the proxy the environment sends the Base URL through, read once with the connection (never shown:
    #: it may hold credentials)
    proxy: str | None = None

    def __repr__(self) -> str:
        return (
            f"HilosConnectionSettings(conn_id={self.conn_id!r}, base_url={self.base_url!r}, token='***', "
            f"api_family={self.api_family.value!r}, header_name={self.header_name!r}, "
            f"auth_scheme={self.auth_scheme!r}, timeout=({self.connect_timeout}, {self.read_timeout}), "
            f"max_attempts={self.max_attempts})"
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
        """The auth header as it may be shown to a person: ``Authorization: Token ***``."""
        return f"{self.header_name}: {self.auth_scheme + ' ' if self.auth_scheme else ''}***"


def _extra(extras: Mapping[str, Any], key: str, *, keep_empty: bool = False) -> Any:
    """An extra by its plain name, or by the ``extra__hilos__`` name older forms saved.

    An empty string counts as "not set" unless ``keep_empty`` (an empty auth prefix means a bare token).
    """
    for name in (key, f"extra__hilos__{key}"):
        value = extras.get(name)
        if value is not None and (value != "" or keep_empty):
            return value
    return None


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
    except ValueError as reason:
        shown = "" if "@" in raw else f" {raw!r}"  # never repeat credentials
        fix = (
            "put the token in the 'API token' (password) field"
            if "credentials" in str(reason)
            else f"give only scheme, host and an optional path prefix, e.g. {DEFAULT_BASE_URL} or "
            "https://youraccount.api-us1.com/api/3"
        )
        raise HilosConfigurationError(
            f"Hilos connection {conn_id!r}: the Base URL (host){shown} {reason}; {fix}"
        ) from None
    where = f"Hilos connection {conn_id!r}: Base URL (host) {raw!r}"
    path = url.path.rstrip("/")
    if not path and schema and schema.strip("/"):
        path = "/" + schema.strip("/")
    netloc = url.netloc if url.port is not None or not port else f"{url.netloc}:{port}"
    base_url = f"{url.scheme}://{netloc}{path}"
    if url.scheme == "http" and not allow_insecure_http:
        if not is_loopback_host(url.host):
            raise HilosConfigurationError(
                f"{where} uses plain http:// to {url.host!r}, which would send the API token in clear text; "
                "use https://, or set the connection extra allow_insecure_http to true if you really mean it"
            )
        if proxy := environ_proxy(base_url):
            raise HilosConfigurationError(
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
    except (TypeError, ValueError):
        raise HilosConfigurationError(
            f"Hilos connection {conn_id!r}: extra {field}={value!r} is not {kind}; fix it or remove it"
        ) from None
    if number < minimum or (not integer and number <= 0):
        raise HilosConfigurationError(
            f"Hilos connection {conn_id!r}: extra {field}={value!r} must be "
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
    token = (conn.password or "").strip()
    if not token:
        raise HilosConfigurationError(
            f"Hilos connection {conn_id!r} has no API token: put the token from {TOKEN_HELP_URL} in its "
            "'API token' (password) field"
        )
    if _not_one_word(token):
        raise HilosConfigurationError(
            f"Hilos connection {conn_id!r}: the API token contains spaces or control characters; "
            "paste the token alone into the 'API token' (password) field"
        )
    if not _header_safe(token):
        raise HilosConfigurationError(
            f"Hilos connection {conn_id!r}: the API token contains characters an HTTP header cannot carry "
            f"(only Latin-1 can be sent); copy the token again from {TOKEN_HELP_URL} into the 'API token' field"
        )
    allow_http = _extra(extras, "allow_insecure_http")
    allow_http = str(allow_http).strip().lower() in ("true", "1", "yes") if allow_http is not None else False
    base_url = parse_base_url(
        conn.host, conn_id=conn_id, schema=conn.schema, port=conn.port, allow_insecure_http=allow_http
    )
    header_name = _extra(extras, "header_name")
    header_name = DEFAULT_HEADER_NAME if header_name is None else str(header_name).strip()
    if not header_name or not all(ch.isalnum() or ch in "-_" for ch in header_name):
        raise HilosConfigurationError(
            f"Hilos connection {conn_id!r}: extra header_name={header_name!r} is not a valid header name; "
            f"use {DEFAULT_HEADER_NAME!r} (Hilos) or e.g. 'Token'"
        )
    auth_scheme = _extra(extras, "auth_scheme", keep_empty=True)
    auth_scheme = DEFAULT_AUTH_SCHEME if auth_scheme is None else str(auth_scheme).strip()
    if _not_one_word(auth_scheme) or not _header_safe(auth_scheme):
        raise HilosConfigurationError(
            f"Hilos connection {conn_id!r}: extra auth_scheme={auth_scheme!r} must be one word, "
            f"e.g. {DEFAULT_AUTH_SCHEME!r}, or empty for a bare token"
        )
    values: dict[str, Any] = {}
    for field, integer in (("connect_timeout", False), ("read_timeout", False), ("max_attempts", True)):
        if (raw := _extra(extras, field)) is not None:
            values[field] = _number(raw, field=field, conn_id=conn_id, integer=integer, minimum=1 if integer else 0)
    web_base_url = _web_base_url(_extra(extras, "web_base_url"), conn_id=conn_id)
    family_choice = str(_extra(extras, "api_family") or DEFAULT_API_FAMILY).strip().lower()
    if family_choice not in API_FAMILY_CHOICES:
        raise HilosConfigurationError(
            f"Hilos connection {conn_id!r}: extra api_family={family_choice!r} is not one of "
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
    except ValueError as reason:
        shown = "" if "@" in raw else f"={raw!r}"
        raise HilosConfigurationError(
            f"Hilos connection {conn_id!r}: extra web_base_url{shown} {reason}; it becomes the task's "
            f"'Hilos conversation' link, so give an https:// address such as {DEFAULT_WEB_BASE_URL}"
        ) from None
    return raw


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or ``None``."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def _redacted(data: Any, redact: Callable[[str], str]) -> Any:
    """``data`` (parsed JSON) with ``redact`` applied to every string in it, dictionary keys included."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, list):
        return [_redacted(item, redact) for item in data]
    if isinstance(data, dict):
        return {redact(str(key)): _redacted(value, redact) for key, value in data.items()}
    return data


def _response_snippet(response: requests.Response) -> str:
    text = " ".join((response.text or "").split())
    return text[:_SNIPPET_CHARS] + ("..." if len(text) > _SNIPPET_CHARS else "")


def _describe_body(
    response: requests.Response, redact: Callable[[str], str] = lambda text: text
) -> tuple[str | None, dict[str, Any], str]:
    """The API's ``detail``, its field errors, and a one-line summary of the body, all redacted.

    The body is redacted as parsed data (every string in it, keys too) before anything is built from
    it: redacting text made from it afterwards would miss a token that JSON or ``repr`` escaped.
    """
    try:
        body = _redacted(response.json(), redact)
    except (ValueError, RecursionError):
        ctype = response.headers.get("Content-Type", "no content type").split(";")[0]
        snippet = redact(_response_snippet(response))
        return None, {}, f"non-JSON body ({ctype}): {snippet!r}" if snippet else f"empty body ({ctype})"
    if isinstance(body, dict):
        detail = body.get("detail")
        fields = {k: v for k, v in body.items() if k != "detail"}
        parts = [str(detail)] if detail is not None else []
        parts += [f"{k}: {'; '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in fields.items()]
        return (None if detail is None else str(detail)), fields, "; ".join(parts) or "{}"
    if isinstance(body, list):
        return None, {"non_field_errors": body}, "; ".join(map(str, body))
    return None, {}, str(body)


class HilosHook(BaseHook):
    """Talk to the Hilos API through an Airflow connection of type ``hilos``.

    The connection's *Base URL* (host) defaults to ``https://api.hilos.io`` and may carry a path
    prefix (``https://youraccount.api-us1.com/api/3``); its *API token* (password) is sent as
    ``Authorization: Token <token>`` unless the extras ``header_name`` / ``auth_scheme`` say otherwise.

    Nothing is looked up or sent until the first request: creating a hook is free.
    One pooled ``requests.Session`` serves every request of the hook. Requests answered 429,
    500, 502, 503 or 504, timeouts and dropped connections are retried with exponential backoff
    and jitter, honouring ``Retry-After``; other errors are raised at once as :class:`HilosAPIError`.

    :param hilos_conn_id: the Airflow connection id.
    :param timeout: seconds, or ``(connect, read)`` seconds; default from the connection's extras
        ``connect_timeout`` / ``read_timeout``, else 10 and 30.
    :param max_attempts: attempts per request, the first one included; default from the
        connection's extra ``max_attempts``, else 5.
    :param backoff_base: seconds before the first retry; doubles on every retry.
    :param max_wait: the longest single wait between attempts, ``Retry-After`` included.
    :param pool_maxsize: connections kept open to the API (raise it for concurrent use).
    """

    conn_name_attr = "hilos_conn_id"
    default_conn_name = "hilos_default"
    conn_type = "hilos"
    hook_name = "Hilos"

    def __init__(
        self,
        hilos_conn_id: str = default_conn_name,
        *,
        timeout: float | tuple[float, float] | None = None,
        max_attempts: int | None = None,
        backoff_base: float = 0.5,
        max_wait: float = 60.0,
        pool_maxsize: int = 10,
    ) -> None:
        super().__init__()
        self.hilos_conn_id = hilos_conn_id
        if max_attempts is not None and (isinstance(max_attempts, bool) or int(max_attempts) < 1):
            raise HilosConfigurationError(f"HilosHook max_attempts={max_attempts!r} must be at least 1")
        if backoff_base < 0 or max_wait < 0:
            raise HilosConfigurationError("HilosHook backoff_base and max_wait must not be negative")
        self._timeout_arg = timeout
        self._max_attempts_arg = max_attempts
        self.backoff_base = backoff_base
        self.max_wait = max_wait
        self.pool_maxsize = pool_maxsize
        self._sleep: Callable[[float], None] = time.sleep
        self._session_lock = threading.Lock()
        self._session: requests.Session | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(hilos_conn_id={self.hilos_conn_id!r})"

    # -- the connection form on Airflow < 3.2 (3.2+ reads conn-fields from the provider info) ---

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The extra fields of the connection form, built from the provider info's ``conn-fields``."""
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import BooleanField, IntegerField, StringField
        from wtforms.validators import AnyOf, NumberRange, Optional

        # Airflow 2 accepts only String, Password, Integer and Boolean fields: a choice is a checked text field
        widgets: dict[str, Any] = {}
        for name, spec in CONN_FIELDS.items():
            types, default = spec["schema"]["type"], spec["schema"].get("default")
            label, description = lazy_gettext(spec["label"]), spec.get("description", "")
            if "enum" in spec["schema"]:
                choices = spec["schema"]["enum"]
                field = StringField(
                    label,
                    widget=BS3TextFieldWidget(),
                    default=default,
                    validators=[Optional(), AnyOf(choices)],
                    description=f"{description} One of: {', '.join(choices)}.",
                )
            elif "boolean" in types:
                field = BooleanField(label, default=default, description=description)
            elif "integer" in types:
                field = IntegerField(
                    label,
                    validators=[Optional(), NumberRange(min=spec["schema"].get("minimum", 0))],
                    widget=BS3TextFieldWidget(),
                    default=default,
                    description=description,
                )
            else:  # strings, and numbers (wtforms' FloatField is not allowed in connection forms)
                field = StringField(
                    label,
                    widget=BS3TextFieldWidget(),
                    description=description,
                    default=None if default is None else str(default),
                )
            widgets[name] = field
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hidden, relabelled and placeholder fields, from the provider info's ``ui-field-behaviour``."""
        return {
            "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
            "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
            "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
        }

    # -- connection ---------------------------------------------------------------------------

    @cached_property
    def settings(self) -> HilosConnectionSettings:
        """The checked connection settings (looked up once, on first use)."""
        settings = settings_from_connection(self.get_connection(self.hilos_conn_id))
        _mask(settings.token)
        self.log.info(
            "Hilos connection %r: %s; updates go to PATCH %s",
            settings.conn_id,
            settings.family_display,
            settings.url(settings.api_family.update_path("{id}")),
        )
        return settings

    @property
    def base_url(self) -> str:
        """The API base URL, e.g. ``https://api.hilos.io``."""
        return self.settings.base_url

    @property
    def timeout(self) -> tuple[float, float]:
        """``(connect, read)`` timeout in seconds for every request."""
        if self._timeout_arg is None:
            return (self.settings.connect_timeout, self.settings.read_timeout)
        if isinstance(self._timeout_arg, (int, float)):
            return (float(self._timeout_arg), float(self._timeout_arg))
        connect, read = self._timeout_arg
        return (float(connect), float(read))

    @property
    def max_attempts(self) -> int:
        """Attempts per request, the first one included."""
        return int(self._max_attempts_arg) if self._max_attempts_arg is not None else self.settings.max_attempts

    def get_conn(self) -> requests.Session:
        """The hook's one pooled session, created on first use and reused by every request."""
        if self._session is None:
            with self._session_lock:
                if self._session is None:
                    self._session = self._new_session()
        return self._session

    def _new_session(self) -> requests.Session:
        settings = self.settings
        session = requests.Session()
        # The proxy was read (and checked) with the connection, the CA bundle is read here, both once, not on
        # every request (requests' trust_env re-scans os.environ per call, a third of the client's CPU in a
        # batch); and no ~/.netrc entry may replace the token header.
        if settings.proxy:
            session.proxies[urlsplit(settings.base_url).scheme] = settings.proxy
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if ca_bundle:
            session.verify = ca_bundle
        session.trust_env = False
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.pool_maxsize, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers.update(
            {
                "Accept": "application/json",
                "User-Agent": user_agent(),
                settings.header_name: settings.auth_value,
            }
        )
        return session

    def close(self) -> None:
        """Close the pooled connections. The hook opens a new session if used again."""
        with self._session_lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def __enter__(self) -> HilosHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- endpoints ----------------------------------------------------------------------------

    def update_conversation(self, conversation_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Partially update a conversation: ``PATCH /api/inbox/conversation/{id}/update`` (or the
        ActiveCampaign-hosted ``/channel/whatsapp/inbox/conversation/{id}/update``, by the connection's API family).

        The payload is validated completely before anything is sent (or the connection looked up).

        :param conversation_id: the conversation's UUID.
        :param payload: the fields to change: ``status``, ``assigned``, ``tags``, ``assigned_team``,
            ``channel``, e.g. ``{"status": "CLOSED", "tags": [{"name": "vip"}]}``.
        :return: the API's ``ConversationEdit``: the whole conversation after the update.
        :raises HilosValidationError: bad id or payload (nothing was sent).
        :raises HilosAPIError: the API refused the update, or failed after every retry.
        """
        return self.send_update(validate_update(conversation_id, payload))

    def send_update(self, update: ValidatedUpdate, *, attempt: int | None = None) -> dict[str, Any]:
        """PATCH an update that passed :func:`~airflow_provider_hilos.models.validate_update`.

        This is the one place the PATCH request is made; the single and the batch paths both call it.
        Only a :class:`~airflow_provider_hilos.models.ValidatedUpdate` is accepted, so unvalidated input
        cannot reach the wire.

        :param update: the canonical conversation id and the JSON body.
        :param attempt: send exactly once, counting this as attempt number ``attempt`` (the batch path
            schedules its own retries); ``None``: with the hook's retries.
        :raises HilosAPIError: the API refused the update, or failed (after every retry, unless ``attempt``).
        """
        if not isinstance(update, ValidatedUpdate):
            raise TypeError(f"send_update takes a ValidatedUpdate (see validate_update), not {type(update).__name__}")
        path = self.settings.api_family.update_path(quote(update.conversation_id, safe=""))
        cid = update.conversation_id
        if attempt is None:
            result = self.request("PATCH", path, json=update.body, conversation_id=cid)
        else:
            result = self.attempt("PATCH", path, json=update.body, conversation_id=cid, number=attempt)
        if not isinstance(result, dict):
            raise HilosAPIError(
                f"Hilos answered the update of conversation {cid} with "
                f"{type(result).__name__} instead of a ConversationEdit object",
                status_code=200,
                method="PATCH",
                path=path,
                problem="an answer that is not a JSON object",
            )
        return result

    def update_conversations(
        self,
        updates: Any,
        *,
        max_concurrency: int = 16,
        max_requests_per_second: float | None = None,
        failure_policy: str = "fail_at_end",
        max_failed_ratio: float = 0.0,
        skip_invalid_rows: bool = False,
        max_invalid_ratio: float | None = None,
        report: Any = None,
        max_failed_rows: int = 100,
        progress_interval: float = 10.0,
        checkpoint: Checkpoint | None = None,
    ) -> BatchResult:
        """Update many conversations: validate every row first, then send them concurrently.

        :param updates: rows ``{"conversation_id": ..., <fields>}`` (a list, a JSON string of one), or a
            callable returning ``(row_number, row)`` pairs afresh on each call (see
            :func:`~airflow_provider_hilos.batch.rows_from_json_lines` to stream a file).
        :param max_concurrency: requests in flight at once (the session's pool grows to match).
        :param max_requests_per_second: client-side rate limit, or ``None``.
        :param failure_policy: ``fail_at_end`` (default), ``fail_fast`` or ``never``.
        :param max_failed_ratio: the share of rows that may fail without failing the batch.
        :param skip_invalid_rows: skip (and report) invalid rows instead of refusing the batch.
        :param max_invalid_ratio: with ``skip_invalid_rows``, the share of rows that may be invalid
            (``None``: any share but all).
        :param report: an open text stream, or a callable opening one (called only once every row
            passed validation); one JSON line per row is written to it.
        :param max_failed_rows: how many failed (and skipped) rows the result lists.
        :param progress_interval: seconds between progress lines in the log.
        :param checkpoint: record applied rows there, and skip the rows an earlier try recorded; it is
            cleared when the batch succeeds.
        :return: counts, duration, rate and the first failed rows.
        :raises HilosValidationError: invalid rows (nothing was sent), unless ``skip_invalid_rows``.
        :raises HilosBatchError: the batch failed (the result is attached); its subclasses say whether
            another try can help (:class:`HilosPermanentBatchError`, :class:`HilosAPIUnavailableError`).
        """
        from airflow_provider_hilos.batch import BatchUpdater, rows_from_updates

        self.ensure_pool(max_concurrency)
        updater = BatchUpdater(
            self,
            max_concurrency=max_concurrency,
            max_requests_per_second=max_requests_per_second,
            failure_policy=failure_policy,
            max_failed_ratio=max_failed_ratio,
            skip_invalid_rows=skip_invalid_rows,
            max_invalid_ratio=max_invalid_ratio,
            report=report,
            max_failed_rows=max_failed_rows,
            progress_interval=progress_interval,
            checkpoint=checkpoint,
        )
        result = updater.run(updates if callable(updates) else rows_from_updates(updates))
        updater.check(result)
        if checkpoint is not None:
            checkpoint.clear()
        return result

    def ensure_pool(self, size: int) -> None:
        """Keep at least ``size`` connections open to the API (for ``size`` concurrent requests)."""
        if size > self.pool_maxsize:
            self.pool_maxsize = size
            self.close()  # the next request opens a session with the larger pool

    def list_conversations(
        self,
        *,
        page: int = 1,
        page_size: int = 20,
        contact: str | None = None,
        search: str | None = None,
        max_attempts: int | None = None,
    ) -> dict[str, Any]:
        """List conversations (read-only): ``GET /api/inbox/conversation`` (or the ActiveCampaign-hosted
        ``/channel/whatsapp/inbox/conversation``, by the connection's API family).

        :param page: the page number, from 1.
        :param page_size: conversations per page.
        :param contact: only the conversations of this contact UUID.
        :param search: free-text search.
        :param max_attempts: override the hook's attempts for this call.
        :return: a page ``{"count", "next", "previous", "results": [...]}``.
        """
        params: dict[str, Any] = {"page": page, "page_size": page_size}
        if contact is not None:
            params["contact"] = contact
        if search is not None:
            params["search"] = search
        return self.request("GET", self.settings.api_family.conversation_path, params=params, max_attempts=max_attempts)

    def conversation_web_url(self, conversation_id: str) -> str:
        """The conversation's page in the Hilos web app (the connection's extra ``web_base_url``)."""
        return self.settings.web_base_url + WEB_CONVERSATION_PATH.format(id=quote(str(conversation_id), safe=""))

    def test_connection(self) -> tuple[bool, str]:
        """Check the connection for the UI's Test button: one read-only request, no data changed.

        :return: ``(True, message)`` when the API accepted the token, else ``(False, what to fix)``.
        """
        try:
            page = self.list_conversations(page_size=1, max_attempts=1)
        except (HilosAPIError, HilosConfigurationError) as exc:
            return False, str(exc)
        except Exception as exc:  # the Test button must answer, whatever went wrong
            return False, self.redact(f"Unexpected error testing Hilos connection: {type(exc).__name__}: {exc}")
        count = page.get("count") if isinstance(page, dict) else None
        seen = f" ({count} conversations visible)" if isinstance(count, int) else ""
        return True, f"Connected to Hilos at {self.base_url}: the API token was accepted{seen}."

    # -- the one request loop -----------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        conversation_id: str | None = None,
        max_attempts: int | None = None,
    ) -> Any:
        """Send one API request with the hook's timeouts and retries, and return its parsed JSON.

        :param method: ``GET``, ``PATCH``, ...
        :param path: the path after the base URL, starting with ``/``.
        :param json: the JSON body, if any.
        :param params: query parameters, if any.
        :param conversation_id: named in error messages.
        :param max_attempts: override the hook's attempts for this call.
        :raises HilosAPIError: after the last attempt, or at once for errors not worth retrying
            (:class:`HilosPermanentAPIError`).
        """
        attempts = max_attempts or self.max_attempts
        for number in range(1, attempts + 1):
            try:
                return self.attempt(
                    method, path, json=json, params=params, conversation_id=conversation_id, number=number
                )
            except HilosAPIError as exc:
                if not exc.retryable or number == attempts:
                    raise
                self._wait(number, attempts, method, exc.path, exc.problem, exc.retry_after)
        raise AssertionError("unreachable")  # pragma: no cover

    def attempt(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        conversation_id: str | None = None,
        number: int = 1,
    ) -> Any:
        """Send one request once (no retry) and return its parsed JSON.

        The batch path calls this and schedules retries itself, so no worker sleeps on a ``Retry-After``.

        :param number: which attempt this is (1-based), as error messages count it.
        :raises HilosAPIError: ``retryable`` (with ``retry_after`` when the API sent one) or not.
        """
        settings = self.settings
        session = self.get_conn()
        url = settings.url(path)
        url_path = urlsplit(url).path
        try:
            response = session.send(
                _prepare(session, method, url, json, params), timeout=self.timeout, allow_redirects=False
            )
        except requests.exceptions.SSLError as exc:
            raise HilosPermanentAPIError(
                self.redact(
                    f"TLS error talking to {settings.base_url} ({method} {url_path}): {exc}. "
                    "Check the connection's Base URL and the server certificate"
                    + _plain_http_hint(settings.base_url)
                    + "."
                ),
                method=method,
                path=url_path,
                attempts=number,
                problem="TLS error",
            ) from None
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            problem = _network_problem(exc, self.timeout)
            raise HilosAPIError(
                self.redact(
                    f"Hilos {method} {url_path}{_for(conversation_id)} failed after {number} attempt(s): "
                    f"{problem} talking to {settings.base_url}. Check the connection's Base URL and that "
                    "the API is reachable, or raise max_attempts / the timeouts."
                ),
                method=method,
                path=url_path,
                attempts=number,
                problem=problem,
            ) from None
        if 200 <= response.status_code < 300:
            try:
                return response.json() if response.content else {}
            except (ValueError, RecursionError):
                problem = (
                    f"HTTP {response.status_code} with an unreadable body ({_describe_body(response, self.redact)[2]})"
                )
                raise HilosAPIError(
                    self.redact(
                        f"Hilos {method} {url_path}{_for(conversation_id)} answered {problem} "
                        f"after {number} attempt(s); expected JSON."
                    ),
                    status_code=response.status_code,
                    method=method,
                    path=url_path,
                    attempts=number,
                    problem=problem,
                ) from None
        raise self._api_error(response, method, url_path, number, conversation_id)

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        ``Retry-After`` wins when the server sent it; otherwise exponential backoff
        (``backoff_base * 2**(attempt-1)``) with equal jitter. Both are capped at ``max_wait``.
        """
        if retry_after is not None:
            return min(retry_after, self.max_wait)
        ceiling = min(self.backoff_base * (2 ** (attempt - 1)), self.max_wait)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _wait(
        self, attempt: int, attempts: int, method: str, path: str, problem: str, retry_after: float | None
    ) -> None:
        delay = self.backoff_delay(attempt, retry_after)
        self.log.warning(
            "Hilos %s %s: %s (attempt %d of %d); retrying in %.2f s%s",
            method,
            path,
            problem,
            attempt,
            attempts,
            delay,
            " as Retry-After asks" if retry_after is not None else "",
        )
        self._sleep(delay)

    def redact(self, text: str) -> str:
        """``text`` with the connection's token (if loaded) replaced by ``***``."""
        settings = self.__dict__.get("settings")
        if settings is not None and settings.token:
            text = text.replace(settings.token, "***")
        return text

    def _api_error(
        self, response: requests.Response, method: str, path: str, attempts: int, conversation_id: str | None
    ) -> HilosAPIError:
        status = response.status_code
        detail, field_errors, summary = _describe_body(response, self.redact)
        settings = self.settings
        where = f"HTTP {status} on {method} {path}"
        retryable = status in RETRYABLE_STATUS_CODES
        error_class: type[HilosAPIError] = HilosAPIError if retryable else HilosPermanentAPIError
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if retryable else None
        if status in (401, 403):
            message = (
                f"Hilos rejected the API token of connection {settings.conn_id!r} ({where}: {summary}). "
                f"Put a valid token from {TOKEN_HELP_URL} in the connection's 'API token' field"
                + (
                    f" and check its auth header settings (sent as '{settings.auth_display}')"
                    if (settings.header_name, settings.auth_scheme) != (DEFAULT_HEADER_NAME, DEFAULT_AUTH_SCHEME)
                    else ""
                )
                + ("; if the token is right, it lacks permission for this request" if status == 403 else "")
                + "."
            )
        elif status == 404 and detail is None:
            # Django answers an unknown route with an HTML (or empty) page, a missing object with JSON {"detail"}
            error_class = HilosEndpointNotFoundError
            message = (
                f"Hilos connection {settings.conn_id!r} uses {settings.family_display}, and the API has no endpoint "
                f"at {method} {settings.url(path)} (HTTP 404, {summary}): check the Base URL and the API family "
                "(extra api_family: hilos for api.hilos.io, activecampaign for ActiveCampaign account hosts)."
            )
        elif status == 404 and conversation_id:
            message = (
                f"Hilos conversation {conversation_id} was not found ({where}: {summary}). Check the "
                "conversation_id: the API knows no conversation with that id for this token."
            )
        elif status == 404:
            message = f"Hilos answered {where} ({summary}): check the connection's Base URL ({settings.base_url})."
        elif status == 400:
            message = (
                f"Hilos refused the request{_for(conversation_id)} ({where}): {summary}. "
                "Fix these fields in the payload."
            )
        elif 300 <= status < 400:
            location = response.headers.get("Location", "")
            target = urlsplit(location).netloc or location[:100] or "somewhere"
            message = (
                f"Hilos answered {where} with a redirect to {target!r}. Redirects are not followed, so the "
                f"token is never sent elsewhere: set the connection's Base URL ({settings.base_url}) to the "
                "address the API really answers on."
            )
        elif status in RETRYABLE_STATUS_CODES:
            message = (
                f"Hilos {method} {path}{_for(conversation_id)} failed after {attempts} attempt(s): "
                f"last answer HTTP {status}: {summary}. The API is throttling or failing; try again later "
                "or raise max_attempts."
            )
        else:
            message = f"Hilos answered {where}{_for(conversation_id)}: {summary}."
        response.close()
        return error_class(
            self.redact(message),
            status_code=status,
            method=method,
            path=path,
            detail=detail,
            field_errors=field_errors,
            attempts=attempts,
            retry_after=retry_after,
        )


def _prepare(
    session: requests.Session, method: str, url: str, body: Any, params: Mapping[str, Any] | None
) -> requests.PreparedRequest:
    """Prepare a request with the session's headers and cookies.

    Same result as ``Session.request``'s preparation, without its per-call ``merge_setting`` work
    (seven ``to_key_val_list`` calls, each a slow runtime-Protocol ``isinstance`` on Python 3.11 with
    requests 2.34): a quarter of the client's CPU per request in a batch.
    """
    prepared = requests.PreparedRequest()
    prepared.prepare(
        method=method,
        url=url,
        headers=session.headers,
        json=body,
        params=params,
        cookies=session.cookies,
        hooks=session.hooks,
    )
    return prepared


def _plain_http_hint(base_url: str) -> str:
    """A hint for the usual cause of a TLS error on loopback: a plain-http server (the sandbox)."""
    parts = urlsplit(base_url)
    if parts.scheme != "https" or not is_loopback_host(parts.hostname or ""):
        return ""
    plain = base_url.replace("https://", "http://", 1)
    return (
        f"; if that server speaks plain http (the Hilos sandbox does), write the Base URL as {plain} "
        f"(URI form: hilos://http://:<token>@{parts.netloc})"
    )


def _for(conversation_id: str | None) -> str:
    return f" for conversation {conversation_id}" if conversation_id else ""


def _network_problem(exc: Exception, timeout: tuple[float, float]) -> str:
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"no connection within the connect timeout ({timeout[0]:g} s)"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"no answer within the read timeout ({timeout[1]:g} s)"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection dropped while reading the answer"
    reason = exc.args[0] if exc.args else exc
    reason = getattr(reason, "reason", reason)
    text = str(reason)
    text = text[text.index("[Errno") :] if "[Errno" in text else text
    text = text[:160].rstrip("')")
    return f"connection failed ({text})"


def user_agent() -> str:
    """``airflow-provider-hilos/<version> apache-airflow/<version> python-requests/<version>``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        airflow_version = version("apache-airflow")
    except PackageNotFoundError:  # pragma: no cover - airflow-core alone
        airflow_version = "unknown"
    return (
        f"airflow-provider-hilos/{__version__} apache-airflow/{airflow_version} python-requests/{requests.__version__}"
    )


def _mask(secret: str) -> None:
    """Register the token with Airflow's secrets masker so no log line can show it."""
    from airflow.providers.common.compat.sdk import mask_secret

    mask_secret(secret)
