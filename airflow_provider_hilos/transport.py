"""The HTTP side of a Hilos connection: one pooled session, one attempt at a time, retries with
backoff, and the wording of every error.

:class:`~airflow_provider_hilos.hooks.hilos.HilosHook` owns a :class:`HilosTransport` and keeps the
endpoints; the batch path sends single attempts through it and schedules its own retries.
"""

from __future__ import annotations

import collections
import difflib
import email.utils
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TypeAlias
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from airflow_provider_hilos import __version__, metrics
from airflow_provider_hilos.connection import (
    DEFAULT_AUTH_SCHEME,
    DEFAULT_HEADER_NAME,
    TOKEN_HELP_URL,
    HilosConnectionSettings,
)
from airflow_provider_hilos.exceptions import (
    RETRYABLE_STATUS_CODES,
    HilosAPIError,
    HilosEndpointNotFoundError,
    HilosPermanentAPIError,
)
from airflow_provider_hilos.pacing import AdaptivePacer, CircuitBreaker
from airflow_provider_hilos.urls import is_loopback_host

_SNIPPET_CHARS = 200
#: The largest answer read (bytes): a list page of 1,000 rows is a few megabytes.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

#: How answers name UTF-8 (what a ``decode`` given to :meth:`HilosTransport.request` reads).
_UTF8 = frozenset({"utf-8", "utf8"})
#: A JSON value as ``json.loads`` returns it.
JSON: TypeAlias = "dict[str, JSON] | list[JSON] | str | int | float | bool | None"


class Log(Protocol):
    """The logging calls this provider makes: ``logging.Logger`` (Airflow 2) and Airflow 3's task logger both fit."""

    def debug(self, event: Any, *args: Any) -> Any: ...
    def info(self, event: Any, *args: Any) -> Any: ...
    def warning(self, event: Any, *args: Any) -> Any: ...
    def error(self, event: Any, *args: Any) -> Any: ...


def redact(text: str, token: str) -> str:
    """``text`` with ``token`` replaced by ``***``."""
    return text.replace(token, "***") if token else text


def asks_too_long(retry_after: float | None, longest_hold: float | None) -> bool:
    """Whether a ``Retry-After`` asks for a longer wait than the caller may hold its worker (``longest_hold``;
    ``None``: every wait is held). One rule for the transport's retries and the batch engine's."""
    return retry_after is not None and longest_hold is not None and retry_after > longest_hold


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
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _redacted(data: Any, scrub: Callable[[str], str]) -> Any:
    """``data`` (parsed JSON) with ``scrub`` applied to every string in it, dictionary keys included."""
    if isinstance(data, str):
        return scrub(data)
    if isinstance(data, list):
        return [_redacted(item, scrub) for item in data]
    if isinstance(data, dict):
        return {scrub(str(key)): _redacted(value, scrub) for key, value in data.items()}
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
        return (None if detail is None else str(detail)), fields, _sentence("; ".join(parts)) or "{}"
    if isinstance(body, list):
        return None, {"non_field_errors": body}, _sentence("; ".join(map(str, body)))
    return None, {}, _sentence(str(body))


def _sentence(text: str) -> str:
    """``text`` without its closing period: the messages it goes into add their own punctuation."""
    return text.rstrip().rstrip(".")


class HilosTransport:
    """Sends requests to the API of one connection: timeouts on every request, retries for 429, 5xx,
    timeouts and dropped connections (exponential backoff with jitter, ``Retry-After`` honoured),
    redirects never followed, and errors that say what failed and what to fix, never the token.

    :param settings: the checked connection settings.
    :param timeout: ``(connect, read)`` seconds.
    :param max_attempts: attempts per request, the first one included.
    :param backoff_base: seconds before the first retry; doubles on every retry.
    :param max_wait: the longest single wait between attempts, ``Retry-After`` included.
    :param pool_maxsize: connections kept open to the API.
    :param log: where retries are logged.
    :param sleep: how to wait between attempts (tests pass a recorder).
    :param longest_hold: the longest ``Retry-After`` this transport waits out itself; an answer asking for a
        longer wait is raised at once (a retryable :class:`HilosAPIError` with its ``retry_after``), so that a
        deferrable operator waits in the triggerer instead. ``None``: every wait is held (capped at ``max_wait``).
    """

    def __init__(
        self,
        settings: HilosConnectionSettings,
        *,
        timeout: tuple[float, float],
        max_attempts: int,
        backoff_base: float = 0.5,
        max_wait: float = 60.0,
        pool_maxsize: int = 10,
        log: Log | None = None,
        sleep: Callable[[float], None] | None = None,
        longest_hold: float | None = None,
    ) -> None:
        self.settings = settings
        self.longest_hold = longest_hold
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.max_wait = max_wait
        self.pool_maxsize = pool_maxsize
        self.log = log or logging.getLogger(__name__)
        self._cancelled = threading.Event()
        #: how to wait between attempts (by default: a wait that :meth:`cancel` cuts short)
        self.sleep: Callable[[float], object] = sleep or self.pause
        self._session_lock = threading.Lock()
        self._session: requests.Session | None = None
        #: the pace of every request this transport sends: the connection's quota as its ceiling, slower when the
        #: API answers 429 (shared by single updates, batches and listings alike, whatever thread sends them)
        self.pacer = AdaptivePacer(settings.max_requests_per_second)
        #: notices an outage from the answers of every request; a batch stops (or defers) when it opens
        self.breaker = CircuitBreaker.for_concurrency(pool_maxsize)
        #: requests sent, by method (``{"GET": 20, "PATCH": 203}``): every attempt, retries included
        self.sent: collections.Counter[str] = collections.Counter()
        #: of those, the retries (attempt 2 and later of one request), by method
        self.retried: collections.Counter[str] = collections.Counter()
        self._sent_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HilosTransport({self.settings!r})"

    @property
    def session(self) -> requests.Session:
        """The one pooled session, created on first use and reused by every request."""
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

    def ensure_pool(self, size: int) -> None:
        """Keep at least ``size`` connections open to the API (for ``size`` concurrent requests)."""
        self.breaker.resize(size)
        with self._session_lock:
            if size <= self.pool_maxsize:
                return
            self.pool_maxsize = size
            if self._session is not None:  # requests in flight keep their connections; new ones use the larger pool
                adapter = HTTPAdapter(pool_connections=1, pool_maxsize=size, max_retries=0)
                self._session.mount("https://", adapter)
                self._session.mount("http://", adapter)

    def close(self) -> None:
        """Close the pooled connections. A new session is opened if the transport is used again."""
        with self._session_lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def request(
        self,
        method: str,
        path: str,
        *,
        json: JSON = None,
        params: Mapping[str, str | int] | None = None,
        subject: str | None = None,
        max_attempts: int | None = None,
        decode: Callable[[bytes], JSON] | None = None,
    ) -> JSON:
        """Send one API request with the hook's timeouts and retries, and return its parsed JSON.

        :param method: ``GET``, ``PATCH``, ...
        :param path: the path after the base URL, starting with ``/``.
        :param json: the JSON body, if any.
        :param params: query parameters, if any.
        :param subject: what the request is about, named in error messages (``conversation <id>``).
        :param max_attempts: override the hook's attempts for this call.
        :param decode: how a successful answer's body is decoded (default: ``json.loads``; a list page of a sync:
            :func:`~airflow_provider_hilos.projection.page_decoder`).
        :raises HilosAPIError: after the last attempt, or at once for errors not worth retrying
            (:class:`HilosPermanentAPIError`).
        """
        attempts = max_attempts or self.max_attempts
        for number in range(1, attempts + 1):
            if self._cancelled.is_set():
                raise HilosAPIError(
                    f"Hilos {method} {path}{_for(subject)}: not sent (again): the task was stopped",
                    method=method,
                    path=path,
                    attempts=number - 1,
                    problem="the task was stopped",
                )
            try:
                return self.attempt(
                    method, path, json=json, params=params, subject=subject, number=number, decode=decode
                )
            except HilosAPIError as exc:
                if not exc.retryable or number == attempts:
                    if exc.retryable:
                        self.breaker.row_failed(exc.problem)
                    raise
                if asks_too_long(exc.retry_after, self.longest_hold):
                    raise  # the caller waits elsewhere (a deferrable operator: in the triggerer)
                self._wait(number, attempts, method, exc.path, exc.problem, exc.retry_after)
                metrics.incr(metrics.RETRIED)
        raise AssertionError("unreachable")  # pragma: no cover

    def attempt(
        self,
        method: str,
        path: str,
        *,
        json: JSON = None,
        params: Mapping[str, str | int] | None = None,
        subject: str | None = None,
        number: int = 1,
        decode: Callable[[bytes], JSON] | None = None,
    ) -> JSON:
        """Send one request once (no retry) and return its parsed JSON.

        The batch path calls this and schedules retries itself, so no worker sleeps on a ``Retry-After``.

        :param number: which attempt this is (1-based), as error messages count it.
        :param decode: how a successful answer's body is decoded (see :meth:`request`).
        :raises HilosAPIError: ``retryable`` (with ``retry_after`` when the API sent one) or not.
        """
        session = self.session  # made (once) before the slot: a slot is a promise to send now, not after set-up
        url = self.settings.url(path)
        prepared = _prepare(session, method, url, json, params)
        ticket = self.pacer.acquire()
        try:
            answer = self._send(session, prepared, method, url, subject=subject, number=number, decode=decode)
        except HilosAPIError as exc:
            status = exc.status_code
            if status is not None and status < 500:  # an answer from the API itself
                self.pacer.answered(ticket, throttled=status == 429)
            if not exc.retryable:
                self.breaker.refused()
            elif status != 429:  # throttling is the pacer's business, not the breaker's
                self.breaker.attempt_failed(exc.problem)
            raise
        self.pacer.answered(ticket, throttled=False)
        self.breaker.succeeded()
        return answer

    def _send(
        self,
        session: requests.Session,
        prepared: requests.PreparedRequest,
        method: str,
        url: str,
        *,
        subject: str | None,
        number: int,
        decode: Callable[[bytes], JSON] | None = None,
    ) -> JSON:
        settings = self.settings
        url_path = urlsplit(url).path
        sent = time.perf_counter()
        with self._sent_lock:
            self.sent[method] += 1
            if number > 1:
                self.retried[method] += 1
        try:
            response = session.send(prepared, timeout=self.timeout, allow_redirects=False, stream=True)
            self._read_content(response, method, url_path, subject=subject, number=number)
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
            host = urlsplit(settings.base_url).hostname or ""
            advice = (
                f"Check the host name in the connection's Base URL ({host}): it is not a name DNS knows"
                + _did_you_mean_host(host)
                if _is_dns_failure(exc)
                else "Check the connection's Base URL and that the API is reachable, or raise max_attempts / the "
                "timeouts"
            )
            raise HilosAPIError(
                self.redact(
                    f"Hilos {method} {url_path}{_for(subject)} failed after {number} attempt(s): "
                    f"{problem} talking to {settings.base_url}. {advice}."
                ),
                method=method,
                path=url_path,
                attempts=number,
                problem=problem,
            ) from None
        metrics.timing(metrics.DURATION, (time.perf_counter() - sent) * 1000)
        if response.status_code == 429:
            metrics.incr(metrics.THROTTLED)
        if 200 <= response.status_code < 300:
            try:
                if not response.content:
                    return {}
                if decode is not None and (response.encoding or "utf-8").lower() in _UTF8:
                    return decode(response.content)
                answer: JSON = response.json()  # in full (also a body in another charset the answer names)
                return answer
            except (ValueError, RecursionError):
                problem = (
                    f"HTTP {response.status_code} with an unreadable body ({_describe_body(response, self.redact)[2]})"
                )
                raise HilosAPIError(
                    self.redact(
                        f"Hilos {method} {url_path}{_for(subject)} answered {problem} "
                        f"after {number} attempt(s); expected JSON."
                    ),
                    status_code=response.status_code,
                    method=method,
                    path=url_path,
                    attempts=number,
                    problem=problem,
                ) from None
        raise self._api_error(response, method, url, number, subject)

    @property
    def response_deadline(self) -> float:
        """The longest one answer may take to arrive in full, in seconds: twice the read timeout (at least 5 s).
        The read timeout alone bounds each wait for the next bytes, so a server that sends a byte every second
        would hold a request for as long as it likes."""
        return max(2 * self.timeout[1], 5.0)

    def _read_content(
        self, response: requests.Response, method: str, path: str, *, subject: str | None, number: int
    ) -> None:
        """Read the answer's body, at most :data:`MAX_RESPONSE_BYTES` and within :attr:`response_deadline`.

        :raises HilosAPIError: past the deadline (retryable, like a timeout); :class:`HilosPermanentAPIError` past
            the size (no answer of this API is that large: a wrong server, or a page nobody asked for).
        """
        limit, deadline = MAX_RESPONSE_BYTES, time.monotonic() + self.response_deadline
        declared = response.headers.get("Content-Length", "")
        too_large = declared.isdigit() and int(declared) > limit
        body = bytearray()
        if not too_large:
            for chunk in _chunks(response):
                body += chunk
                if len(body) > limit:
                    too_large = True
                    break
                if time.monotonic() > deadline:
                    response.close()
                    raise HilosAPIError(
                        f"Hilos {method} {path}{_for(subject)}: the answer did not arrive in full within "
                        f"{self.response_deadline:g} s (twice the read timeout); the server sends it too slowly",
                        method=method,
                        path=path,
                        attempts=number,
                        problem=f"an answer slower than {self.response_deadline:g} s",
                    )
        if too_large:
            response.close()
            raise HilosPermanentAPIError(
                f"Hilos {method} {path}{_for(subject)} answered more than {limit // (1 << 20)} MiB (HTTP "
                f"{response.status_code}); no answer of the API is that large: check the connection's Base URL (and, "
                "for a listing, its page_size)",
                status_code=response.status_code,
                method=method,
                path=path,
                attempts=number,
                problem=f"an answer over {limit // (1 << 20)} MiB",
            )
        response._content = bytes(body)

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` between attempts; :meth:`cancel` cuts the wait short."""
        self._cancelled.wait(seconds)

    def cancel(self) -> None:
        """Stop retrying (the task is being killed): no further attempt starts; a request in flight finishes."""
        self._cancelled.set()

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        ``Retry-After`` wins when the server sent it; otherwise exponential backoff
        (``backoff_base * 2**(attempt-1)``) with equal jitter. Both are capped at ``max_wait``.
        """
        if retry_after is not None:
            return min(retry_after, self.max_wait)
        ceiling = min(self.backoff_base * 2.0 ** (attempt - 1), self.max_wait)
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
        self.sleep(delay)

    def redact(self, text: str) -> str:
        """``text`` with the connection's token replaced by ``***``."""
        return redact(text, self.settings.token)

    def _api_error(
        self, response: requests.Response, method: str, url: str, attempts: int, subject: str | None
    ) -> HilosAPIError:
        """The error for an answer that is not a success, naming the request as it was sent (``url``: the full
        URL requested, never holding the token)."""
        path = urlsplit(url).path
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
                f"at {method} {url} (HTTP 404, {summary}): check the Base URL and the API family "
                "(extra api_family: hilos for api.hilos.io, activecampaign for ActiveCampaign account hosts)."
            )
        elif status == 404 and subject:
            message = (
                f"Hilos {subject} was not found ({where}: {summary}). Check the id: the API knows no "
                f"{subject.split()[0]} with that id for this token."
            )
        elif status == 404:
            message = f"Hilos answered {where} ({summary}): check the connection's Base URL ({settings.base_url})."
        elif status == 400:
            message = f"Hilos refused the request{_for(subject)} ({where}): {summary}. Fix these fields in the payload."
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
                f"Hilos {method} {path}{_for(subject)} failed after {attempts} attempt(s): "
                f"last answer HTTP {status}: {summary}. The API is throttling or failing; try again later "
                "or raise max_attempts."
            )
        else:
            message = f"Hilos answered {where}{_for(subject)}: {summary}."
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


def _chunks(response: requests.Response) -> Any:
    """The body of a streamed answer as it arrives: each piece is what one read of the socket returned (``read1``),
    so the caller can check a deadline between pieces (``iter_content`` reads until a whole chunk is there). urllib3's
    errors become the ``requests`` errors the transport handles, as ``iter_content`` would raise them."""
    import urllib3.exceptions

    raw = response.raw
    try:
        while chunk := raw.read1(64 * 1024, decode_content=True):
            yield chunk
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(exc) from exc
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc


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


def _for(subject: str | None) -> str:
    return f" for {subject}" if subject else ""


#: What resolvers say when a host name does not resolve (glibc, musl, macOS, Windows).
_DNS_FAILURES = (
    "Name or service not known",
    "nodename nor servname provided",
    "No address associated with hostname",
    "Temporary failure in name resolution",
    "getaddrinfo failed",
    "Failed to resolve",
)


def _is_dns_failure(exc: BaseException) -> bool:
    """Whether a connection failed because its host name did not resolve."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ == "NameResolutionError" or isinstance(current, socket.gaierror):
            return True
        if any(marker in str(current) for marker in _DNS_FAILURES):
            return True
        nested = current.args[0] if current.args and isinstance(current.args[0], BaseException) else None
        current = getattr(current, "reason", None) or nested or current.__cause__ or current.__context__
        if not isinstance(current, BaseException):
            current = None
    return False


#: Host names a typo is usually of, for a "did you mean".
KNOWN_HOSTS = ("localhost", "api.hilos.io", "app.hilos.io")


def _did_you_mean_host(host: str) -> str:
    close = difflib.get_close_matches(host.lower(), KNOWN_HOSTS, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close and close[0] != host.lower() else ""


def _network_problem(exc: Exception, timeout: tuple[float, float]) -> str:
    if _is_dns_failure(exc) and not isinstance(exc, requests.Timeout):
        return "the host name does not resolve (DNS)"
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
