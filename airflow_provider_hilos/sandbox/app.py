"""The sandbox's web application: the Hilos endpoints, fault injection, and ``/_sandbox`` inspection."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_hilos.endpoints import ApiFamily
from airflow_provider_hilos.sandbox.state import DRFValidationError, NotFound, SandboxState

INSPECTION_PREFIX = "/_sandbox"
#: Fault kinds a request can be given (randomly by the rates, or scripted with ``fail_next``).
FAULT_KINDS = ("ok", "429", "500", "502", "503", "drop", "slow", "truncate", "html200")
TOKEN_PLACEHOLDER = "<sandbox-token>"

_HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
    "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_HTML_500 = '<!doctype html>\n<html lang="en">\n<head><title>Server Error (500)</title></head>\n<body>\n  <h1>Server Error (500)</h1><p></p>\n</body>\n</html>\n'
#: What Django (DEBUG off) answers for a URL no route matches: HTML, unlike DRF's JSON 404 for a missing object.
DJANGO_ROUTE_404 = (
    '<!doctype html>\n<html lang="en">\n<head>\n  <title>Not Found</title>\n</head>\n<body>\n  <h1>Not Found</h1>'
    "<p>The requested resource was not found on this server.</p>\n</body>\n</html>\n"
)
#: The JSON and form media types the update endpoints accept, as both documents list them.
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
#: Indexed form keys of nested lists, as DRF reads them: tags[0]name, tags[0].name or tags[0][name].
_FORM_LIST_KEY = re.compile(r"(assigned|tags)\[([0-9]{1,4})\]\.?\[?([a-z_]+)\]?", re.ASCII)


@dataclass
class FaultConfig:
    """Fault and load knobs. Rates are shares of Hilos API requests (0 to 1), drawn independently.

    :param latency_ms: every API answer leaves this long after its request arrived (processing included).
    :param jitter_ms: extra random delay, uniform in ``[0, jitter_ms]``.
    :param rate_limit_per_second: a token-bucket limit; past it, 429 with ``Retry-After``.
    :param rate_limit_burst: the bucket's size.
    :param retry_after_seconds: the ``Retry-After`` sent with a random 429 or 503.
    :param throttle_rate: share answered 429 at random (before the update is applied).
    :param error_rate: share answered 500/502/503 (before the update is applied).
    :param error_statuses: which of 500, 502, 503 ``error_rate`` picks from.
    :param drop_rate: share whose connection is dropped mid-response (after the update is applied).
    :param slow_rate: share answered only after ``slow_seconds`` (after the update is applied).
    :param slow_seconds: how slow a slow answer is.
    :param truncate_rate: share answered 200 with truncated JSON (after the update is applied).
    :param html_rate: share answered 200 with an HTML page instead of JSON (after the update is applied).
    :param seed: seed of the fault dice (same seed, same sequence of faults).
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_limit_per_second: float | None = None
    rate_limit_burst: int = 1
    retry_after_seconds: float = 1.0
    throttle_rate: float = 0.0
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    drop_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 0.0
    truncate_rate: float = 0.0
    html_rate: float = 0.0
    seed: int = 0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FaultConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown fault setting(s) {sorted(unknown)}; known: {sorted(known)}")
        values = dict(values)
        if "error_statuses" in values:
            values["error_statuses"] = tuple(int(s) for s in values["error_statuses"])
        return cls(**values)


class FaultInjector:
    """Decides, request by request, which fault (if any) to inject. Thread-safe."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self.configure(config or FaultConfig())
        self.script: deque[str] = deque()
        self.injected: dict[str, int] = {}

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)
            self._tokens = float(config.rate_limit_burst)
            self._refilled = time.monotonic()

    def fail_next(self, kind: str, count: int = 1) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        with self._lock:
            self.script.extend([kind] * count)

    def delay(self) -> float:
        cfg = self.config
        with self._lock:
            jitter = self._rng.uniform(0, cfg.jitter_ms) if cfg.jitter_ms else 0.0
        return (cfg.latency_ms + jitter) / 1000.0

    def _rate_limited(self) -> float | None:
        cfg = self.config
        if not cfg.rate_limit_per_second:
            return None
        now = time.monotonic()
        self._tokens = min(
            float(cfg.rate_limit_burst), self._tokens + (now - self._refilled) * cfg.rate_limit_per_second
        )
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        return (1 - self._tokens) / cfg.rate_limit_per_second

    def choose(self) -> tuple[str, float | None]:
        """The fault for the next request, and the seconds to ask the client to wait (429)."""
        with self._lock:
            if self.script:
                kind = self.script.popleft()
                wait = self.config.retry_after_seconds if kind in ("429", "503") else None
            elif (wait := self._rate_limited()) is not None:
                kind = "429"
            else:
                kind, wait = self._roll()
            self.injected[kind] = self.injected.get(kind, 0) + 1
            return kind, wait

    def _roll(self) -> tuple[str, float | None]:
        cfg, rng = self.config, self._rng
        if cfg.throttle_rate and rng.random() < cfg.throttle_rate:
            return "429", cfg.retry_after_seconds
        if cfg.error_rate and rng.random() < cfg.error_rate:
            status = str(rng.choice(cfg.error_statuses))
            return status, (cfg.retry_after_seconds if status == "503" else None)
        for kind, rate in (
            ("drop", cfg.drop_rate),
            ("slow", cfg.slow_rate),
            ("truncate", cfg.truncate_rate),
            ("html200", cfg.html_rate),
        ):
            if rate and rng.random() < rate:
                return kind, None
        return "ok", None


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


class SandboxApp:
    """Builds the FastAPI app around a :class:`SandboxState` and a :class:`FaultInjector`.

    :param state: the data.
    :param token: the API token the sandbox accepts.
    :param api_family: the path family it serves (the other family's paths answer Django's route 404).
    :param prefix: a path prefix for the Hilos endpoints, e.g. ``/api/3``.
    :param header_name: the header that carries the token.
    :param auth_scheme: the word before the token in that header (empty: bare token).
    :param faults: the fault injector.
    """

    def __init__(
        self,
        state: SandboxState,
        *,
        token: str,
        api_family: ApiFamily | str = ApiFamily.HILOS,
        prefix: str = "",
        header_name: str = "Authorization",
        auth_scheme: str = "Token",
        faults: FaultInjector | None = None,
    ) -> None:
        self.state = state
        self.token = token
        self.api_family = ApiFamily(api_family)
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.header_name = header_name.lower()
        self.auth_scheme = auth_scheme
        self.faults = faults or FaultInjector()
        self.expected_auth = f"{auth_scheme} {token}" if auth_scheme else token
        self.app = self._build()

    def reset(self) -> None:
        """Back to the seeded data, no faults (none scheduled either), an empty request log."""
        self.state.reset()
        self.faults.configure(FaultConfig())
        self.faults.script.clear()
        self.faults.injected.clear()

    # -- helpers ------------------------------------------------------------------------------

    def _auth_error(self, request: Request) -> JSONResponse | None:
        value = request.headers.get(self.header_name)
        if not value:
            return _json(
                401,
                {"detail": "Authentication credentials were not provided."},
                {"WWW-Authenticate": self.auth_scheme or "Token"},
            )
        if value != self.expected_auth:
            return _json(401, {"detail": "Invalid token."}, {"WWW-Authenticate": self.auth_scheme or "Token"})
        return None

    def _shown_headers(self, headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
        """Request headers for the log, with the token replaced by a placeholder (never stored)."""
        shown: dict[str, str] = {}
        for raw_name, raw_value in headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            if name == self.header_name or name in ("authorization", "token"):
                if value == self.expected_auth:
                    value = f"{self.auth_scheme} {TOKEN_PLACEHOLDER}" if self.auth_scheme else TOKEN_PLACEHOLDER
                else:
                    value = "<not the sandbox token>"
            elif len(self.token) >= 8 and self.token in value:
                value = value.replace(self.token, TOKEN_PLACEHOLDER)
            shown[name] = value
        return shown

    # -- routes -------------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI(
            title="Hilos sandbox",
            docs_url=f"{INSPECTION_PREFIX}/docs",
            openapi_url=f"{INSPECTION_PREFIX}/openapi.json",
            redoc_url=None,
        )
        api = APIRouter(prefix=self.prefix + self.api_family.conversation_path)

        async def write(conversation_id: str, request: Request, *, partial: bool) -> Response:
            if denied := self._auth_error(request):
                return denied
            body = await _read_body(request)
            if isinstance(body, Response):
                return body
            try:
                return _json(200, self.state.update(conversation_id, body, partial=partial))
            except NotFound:
                return _json(404, {"detail": "No Conversation matches the given query."})
            except DRFValidationError as exc:
                return _json(400, exc.errors)

        @api.patch("/{conversation_id}/update")
        async def partial_update(conversation_id: str, request: Request) -> Response:
            return await write(conversation_id, request, partial=True)

        @api.put("/{conversation_id}/update")
        async def update(conversation_id: str, request: Request) -> Response:
            return await write(conversation_id, request, partial=False)

        @api.get("")
        async def list_conversations(request: Request) -> Response:
            if denied := self._auth_error(request):
                return denied
            query = request.query_params
            page = _positive_int(query.get("page", "1"))
            page_size = min(_positive_int(query.get("page_size", "")) or 20, 1000)  # DRF: invalid means default
            contact = query.get("contact")
            if contact is not None and not _is_uuid(contact):
                return _json(400, {"contact": ["Enter a valid UUID."]})
            if page is None:
                return _json(404, {"detail": "Invalid page."})
            total, rows = self.state.list_conversations(
                page=page, page_size=page_size, contact=contact, search=query.get("search")
            )
            if page > 1 and not rows:
                return _json(404, {"detail": "Invalid page."})
            base = str(request.url.remove_query_params("page"))
            sep = "&" if "?" in base else "?"
            return _json(
                200,
                {
                    "count": total,
                    "next": f"{base}{sep}page={page + 1}" if page * page_size < total else None,
                    "previous": f"{base}{sep}page={page - 1}" if page > 1 else None,
                    "results": rows,
                },
            )

        @app.exception_handler(StarletteHTTPException)
        async def django_errors(request: Request, exc: StarletteHTTPException) -> Response:
            if exc.status_code == 405:  # DRF's answer for a method the view does not allow
                return _json(405, {"detail": f'Method "{request.method}" not allowed.'}, dict(exc.headers or {}))
            if exc.status_code == 404:  # no route: Django's own page, never JSON
                return HTMLResponse(DJANGO_ROUTE_404, status_code=404)
            return _json(exc.status_code, {"detail": exc.detail})

        app.include_router(api)
        app.include_router(self._inspection_router())
        return app

    def _inspection_router(self) -> APIRouter:
        router = APIRouter(prefix=INSPECTION_PREFIX)

        @router.get("/health")
        async def health() -> dict[str, Any]:
            return {"status": "ok", "conversations": self.state.conversation_count, "seed": self.state.seed}

        @router.get("/conversations")
        async def conversations() -> list[str]:
            return self.state.conversation_ids()

        @router.get("/state")
        async def state() -> dict[str, Any]:
            return {"conversations": self.state.snapshot(), "requests": self.state.request_count}

        @router.get("/conversations/{conversation_id}")
        async def conversation(conversation_id: str) -> Response:
            try:
                return _json(200, self.state.conversation(conversation_id))
            except NotFound:
                return _json(404, {"detail": "unknown conversation"})

        @router.get("/reference")
        async def reference() -> dict[str, Any]:
            data = self.state.data
            return {
                "users": list(data.users.values()),
                "teams": list(data.teams.values()),
                "tags": [{"id": i, "name": n} for n, i in data.tags.items()],
                "channels": list(data.channels),
            }

        @router.get("/requests")
        async def requests_log() -> dict[str, Any]:
            return {"total": self.state.request_count, "requests": self.state.requests()}

        @router.delete("/requests")
        async def clear_requests() -> Response:
            self.state.clear_requests()
            return Response(status_code=204)

        @router.post("/reset")
        async def reset() -> Response:
            self.reset()
            return Response(status_code=204)

        @router.get("/faults")
        async def get_faults() -> dict[str, Any]:
            return {
                "config": asdict(self.faults.config),
                "pending": list(self.faults.script),
                "injected": dict(self.faults.injected),
            }

        @router.put("/faults")
        async def put_faults(request: Request) -> Response:
            try:
                self.faults.configure(FaultConfig.from_dict(await request.json()))
            except (ValueError, TypeError) as exc:
                return _json(400, {"detail": str(exc)})
            return _json(200, asdict(self.faults.config))

        @router.post("/faults/next")
        async def fail_next(request: Request) -> Response:
            body = await request.json()
            try:
                self.faults.fail_next(str(body.get("kind")), int(body.get("count", 1)))
            except ValueError as exc:
                return _json(400, {"detail": str(exc)})
            return Response(status_code=204)

        return router

    # -- ASGI entry: logging and faults around the Hilos endpoints ----------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(INSPECTION_PREFIX):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        entry: dict[str, Any] = {
            "time": time.time(),
            "method": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": self._shown_headers(scope.get("headers", [])),
            "body": _decode_body(raw),
        }
        # The answer leaves `latency` after the request arrived (the sandbox's own processing counts
        # towards it, as a real API's does), or when processing is done if that takes longer.
        answer_at = time.monotonic() + self.faults.delay()
        kind, wait = self.faults.choose()
        entry["fault"] = kind
        if kind in ("429", "500", "502", "503"):
            entry["status"] = int(kind)
            self.state.log_request(entry)
            await _sleep_until(answer_at)
            await _fault_response(send, kind, wait)
            return

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": raw, "more_body": False}

        start: dict[str, Any] = {}
        body_parts: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body_parts.append(message.get("body", b""))

        await self.app(scope, replay, capture)
        body = b"".join(body_parts)
        entry["status"] = start.get("status")
        self.state.log_request(entry)
        await _sleep_until(answer_at)
        if kind == "drop":
            await send(start)  # announces the full Content-Length, then sends half and hangs up
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            return
        if kind == "slow":
            await asyncio.sleep(self.faults.config.slow_seconds)
        if kind in ("truncate", "html200") and start.get("status") == 200:
            body = body[: max(1, len(body) // 2)] if kind == "truncate" else _HTML_500.encode()
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")
            ]
            ctype = b"application/json" if kind == "truncate" else b"text/html; charset=utf-8"
            start = {
                **start,
                "headers": [*headers, (b"content-type", ctype), (b"content-length", str(len(body)).encode())],
            }
        await send(start)
        await send({"type": "http.response.body", "body": body})


async def _sleep_until(moment: float) -> None:
    if (left := moment - time.monotonic()) > 0:
        await asyncio.sleep(left)


def _decode_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return raw.decode("utf-8", errors="replace")


async def _read_body(request: Request) -> dict[str, Any] | Response:
    """The request body as DRF's parsers would read it (JSON, form or multipart), or the 4xx answer."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in FORM_TYPES:
        try:
            form = await request.form()
        except Exception as exc:  # a malformed multipart body: DRF's ParseError
            return _json(400, {"detail": f"Multipart form parse error - {type(exc).__name__}"})
        return _form_to_data(form.multi_items())
    if ctype != "application/json":
        return _json(415, {"detail": f'Unsupported media type "{ctype}" in request.'})
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else {}
    except (ValueError, RecursionError) as exc:
        reason = "too deeply nested" if isinstance(exc, RecursionError) else str(exc)
        return _json(400, {"detail": f"JSON parse error - {reason}"})
    if not isinstance(body, dict):
        return _json(
            400, {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {type(body).__name__}."]}
        )
    return body


def _form_to_data(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """Form fields as DRF reads them: the last value of a plain key, ``tags[0]name``-style keys as lists.

    A plain ``tags``/``assigned`` key (no index) is ignored, as DRF's list fields ignore it in HTML input.
    """
    data: dict[str, Any] = {}
    lists: dict[str, dict[int, dict[str, Any]]] = {}
    for key, value in items:
        value = "" if isinstance(value, UploadFile) else value  # a file where text belongs: an invalid value
        if match := _FORM_LIST_KEY.fullmatch(key):
            name, index, sub = match.group(1), int(match.group(2)), match.group(3)
            lists.setdefault(name, {}).setdefault(index, {})[sub] = value
        elif key not in ("tags", "assigned"):
            data[key] = value
    for name, items_by_index in lists.items():
        data[name] = [items_by_index[i] for i in sorted(items_by_index)]
    if data.get("channel") == "":
        data["channel"] = None  # an empty form value of a nullable field is null
    return data


def _positive_int(text: str) -> int | None:
    """DRF's pagination reading of a query value: a positive whole number, else ``None``."""
    return int(text) if text.isascii() and text.isdigit() and 0 < len(text) <= 9 and int(text) > 0 else None


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


async def _fault_response(send: Any, kind: str, wait: float | None) -> None:
    status = int(kind)
    headers: list[tuple[bytes, bytes]] = []
    if kind == "429":
        seconds = math.ceil(wait) if wait is not None else 1
        body = json.dumps({"detail": f"Request was throttled. Expected available in {seconds} seconds."}).encode()
        ctype = b"application/json"
        headers.append((b"retry-after", str(seconds).encode()))
    elif kind == "502":
        body, ctype = _HTML_502.encode(), b"text/html"
    elif kind == "500":
        body, ctype = _HTML_500.encode(), b"text/html; charset=utf-8"
    else:
        body = json.dumps({"detail": "Service temporarily unavailable, try again later."}).encode()
        ctype = b"application/json"
        if wait:
            headers.append((b"retry-after", str(math.ceil(wait)).encode()))
    headers += [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
