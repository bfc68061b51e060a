"""The sandbox's web application: the Hilos endpoints, the ``/_sandbox`` inspection API, and the ASGI
entry that records every request and applies the faults of :mod:`~airflow_provider_hilos.sandbox.faults`."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import MutableMapping
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_hilos.endpoints import ApiFamily
from airflow_provider_hilos.sandbox.contacts import ContactInvalid
from airflow_provider_hilos.sandbox.faults import (
    ANSWERED_FAULTS,
    HTML_500,
    FaultConfig,
    FaultInjector,
    fault_response,
    sleep_until,
)
from airflow_provider_hilos.sandbox.state import DRFValidationError, NotFound, SandboxState

INSPECTION_PREFIX = "/_sandbox"
TOKEN_PLACEHOLDER = "<sandbox-token>"

#: What Django (DEBUG off) answers for a URL no route matches: HTML, unlike DRF's JSON 404 for a missing object.
DJANGO_ROUTE_404 = (
    '<!doctype html>\n<html lang="en">\n<head>\n  <title>Not Found</title>\n</head>\n<body>\n  <h1>Not Found</h1>'
    "<p>The requested resource was not found on this server.</p>\n</body>\n</html>\n"
)
#: The JSON and form media types the update endpoints accept, as both documents list them.
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
#: Indexed form keys of nested lists, as DRF reads them: tags[0]name, tags[0].name or tags[0][name].
_FORM_LIST_KEY = re.compile(r"(assigned|tags)\[([0-9]{1,4})\]\.?\[?([a-z_]+)\]?", re.ASCII)


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

    def _authenticated(self, headers: list[tuple[bytes, bytes]]) -> bool:
        expected = self.expected_auth.encode("latin-1", "replace")
        return any(n.lower() == self.header_name.encode() and v == expected for n, v in headers)

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
            # DRF: an invalid size means the default; a larger one than max_page_size is capped to it
            page_size = min(_positive_int(query.get("page_size", "")) or 20, self.faults.config.max_page_size)
            contact = query.get("contact")
            if contact is not None and not _is_uuid(contact):
                return _json(400, {"contact": ["Enter a valid UUID."]})
            if page is None:
                return _json(404, {"detail": "Invalid page."})
            if page > 1 and (arrivals := self.faults.config.arrivals_per_page):
                self.state.insert_conversations(arrivals)
            if page > 1 and (moves := self.faults.config.moves_per_page):
                self.state.move_oldest_to_front(moves)
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
                    # DRF: the previous link of page 2 is the list without a page number
                    "previous": (f"{base}{sep}page={page - 1}" if page > 2 else base) if page > 1 else None,
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
        if self.api_family is ApiFamily.HILOS:  # only Hilos's own document publishes contacts and members
            app.include_router(self._contact_router())
        app.include_router(self._inspection_router())
        return app

    def _contact_router(self) -> APIRouter:
        """``/api/contact`` and ``/api/account-member``, as Hilos's own document describes them."""
        router = APIRouter(prefix=self.prefix + "/api")
        missing = {"detail": "No Contact matches the given query."}

        @router.get("/contact")
        async def list_contacts(request: Request) -> Response:
            if denied := self._auth_error(request):
                return denied
            query = request.query_params
            page = _positive_int(query.get("page", "1"))
            page_size = min(_positive_int(query.get("page_size", "")) or 20, self.faults.config.max_page_size)
            if page is None:
                return _json(404, {"detail": "Invalid page."})
            if page > 1 and (moves := self.faults.config.moves_per_page):
                self.state.move_oldest_contacts_to_front(moves)
            total, rows = self.state.list_contacts(page=page, page_size=page_size, search=query.get("search"))
            if page > 1 and not rows:
                return _json(404, {"detail": "Invalid page."})
            base = str(request.url.remove_query_params("page"))
            sep = "&" if "?" in base else "?"
            return _json(
                200,
                {
                    "count": total,
                    "next": f"{base}{sep}page={page + 1}" if page * page_size < total else None,
                    "previous": (f"{base}{sep}page={page - 1}" if page > 2 else base) if page > 1 else None,
                    "results": rows,
                },
            )

        @router.post("/contact")
        async def create_or_update(request: Request) -> Response:
            if denied := self._auth_error(request):
                return denied
            body = await _read_contact_body(request)
            if isinstance(body, Response):
                return body
            try:
                _, detail = self.state.create_or_update_contact(body)
            except ContactInvalid as exc:
                return _json(400, exc.errors)
            return _json(201, detail)  # the document answers 201 for a create and for an update alike

        @router.get("/contact/{contact_id}")
        async def get_contact(contact_id: str, request: Request) -> Response:
            if denied := self._auth_error(request):
                return denied
            try:
                return _json(200, self.state.contact_detail(contact_id, public=False))
            except NotFound:
                return _json(404, missing)

        async def write(contact_id: str, request: Request, *, partial: bool) -> Response:
            if denied := self._auth_error(request):
                return denied
            body = await _read_contact_body(request)
            if isinstance(body, Response):
                return body
            try:
                return _json(200, self.state.update_contact(contact_id, body, partial=partial))
            except NotFound:
                return _json(404, missing)
            except ContactInvalid as exc:
                return _json(400, exc.errors)

        @router.patch("/contact/{contact_id}")
        async def partial_update(contact_id: str, request: Request) -> Response:
            return await write(contact_id, request, partial=True)

        @router.put("/contact/{contact_id}")
        async def update(contact_id: str, request: Request) -> Response:
            return await write(contact_id, request, partial=False)

        @router.delete("/contact/{contact_id}")
        async def delete(contact_id: str, request: Request) -> Response:
            if denied := self._auth_error(request):
                return denied
            try:
                self.state.delete_contact(contact_id)
            except NotFound:
                return _json(404, missing)
            return Response(status_code=204)

        @router.get("/account-member")
        async def members(request: Request) -> Response:
            if denied := self._auth_error(request):
                return denied
            return _json(200, self.state.account_members(dict(request.query_params)))

        return router

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

        @router.get("/contacts")
        async def contacts() -> list[dict[str, Any]]:
            return [self.state.contact_detail(cid, public=False) for cid in self.state.contact_ids()]

        @router.get("/contact-phones")
        async def contact_phones() -> Response:
            """Every contact's phone (E.164), in the list's order: what a benchmark's warehouse needs, cheaply."""
            return _json(200, self.state.contact_phones())

        @router.get("/contacts/{contact_id}")
        async def contact(contact_id: str) -> Response:
            try:
                return _json(200, self.state.contact_detail(contact_id, public=False))
            except NotFound:
                return _json(404, {"detail": "unknown contact"})

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
            kept = self.state.requests()
            total = self.state.request_count
            return {
                "total": total,
                "kept": len(kept),
                # the log keeps the last request_log_limit requests (and a bounded number of bytes): say when it did
                "truncated": total > len(kept),
                "dropped": total - len(kept),
                "limit": self.state.request_log.maxlen,
                "requests": kept,
            }

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
            except (ValueError, TypeError) as exc:  # a body that isn't JSON is a ValueError too
                return _json(400, {"detail": str(exc)})
            return _json(200, asdict(self.faults.config))

        @router.post("/faults/next")
        async def fail_next(request: Request) -> Response:
            try:
                body = await request.json()
                if not isinstance(body, dict):
                    raise ValueError('the body must be a JSON object, e.g. {"kind": "503", "count": 2}')
                self.faults.fail_next(body.get("kind"), body.get("count", 1))
            except ValueError as exc:
                return _json(400, {"detail": str(exc)})
            return Response(status_code=204)

        @router.delete("/faults/next")
        async def clear_next() -> dict[str, Any]:
            return {"cleared": self.faults.clear_script()}

        return router

    # -- ASGI entry: logging and faults around the Hilos endpoints ----------------------------

    def _guard(self, scope: dict[str, Any]) -> Response | None:
        """The answer for a request the sandbox must not serve, or ``None``.

        * a ``Host`` that is not a loopback name (``127.0.0.1``, ``localhost``, ``[::1]``, with any port): a page on
          this machine that got a name of its own resolved to 127.0.0.1 (DNS rebinding) is refused, as Django
          refuses a host not in ``ALLOWED_HOSTS``;
        * a change through the inspection API (``PUT``, ``POST``, ``DELETE`` under ``/_sandbox``: faults, reset,
          clearing the log) without the API token: only who holds the token may change the sandbox's weather.
        """
        host = ""
        for name, value in scope.get("headers", []):
            if name.lower() == b"host":
                host = value.decode("latin-1")
                break
        if not _loopback_host_header(host):
            return HTMLResponse("<h1>Bad Request (400)</h1>", status_code=400)
        if (
            scope["path"].startswith(INSPECTION_PREFIX)
            and scope["method"] not in ("GET", "HEAD", "OPTIONS")
            and not self._authenticated(scope.get("headers", []))
        ):
            return _json(
                401,
                {"detail": "Changing the sandbox needs its API token (the same header as the API)."},
                {"WWW-Authenticate": self.auth_scheme or "Token"},
            )
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (refusal := self._guard(scope)) is not None:
            await refusal(scope, receive, send)
            return
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
        shown = self._shown_headers(scope.get("headers", []))
        authenticated = self._authenticated(scope.get("headers", []))
        entry: dict[str, Any] = {
            "time": time.time(),
            "method": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1")[:2048],
            "headers": shown,
            # a request without the token can't change anything: its body is not worth memory
            "body": _decode_body(raw)
            if authenticated
            else (f"<{len(raw):,} bytes, not kept: unauthenticated>" if raw else None),
        }
        # The answer leaves `latency` after the request arrived (the sandbox's own processing counts
        # towards it, as a real API's does), or when processing is done if that takes longer.
        answer_at = time.monotonic() + self.faults.delay()
        kind, wait = self.faults.choose()
        entry["fault"] = kind
        if kind in ANSWERED_FAULTS:
            entry["status"] = int(kind)
            self.state.log_request(entry)
            await sleep_until(answer_at)
            await fault_response(send, kind, wait)
            return

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": raw, "more_body": False}

        start: dict[str, Any] = {}
        body_parts: list[bytes] = []

        async def capture(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body_parts.append(message.get("body", b""))

        await self.app(scope, replay, capture)
        body = b"".join(body_parts)
        entry["status"] = start.get("status")
        self.state.log_request(entry)
        await sleep_until(answer_at)
        if kind == "drop":
            await send(start)  # announces the full Content-Length, then sends half and hangs up
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            return
        if kind == "slow":
            await asyncio.sleep(self.faults.config.slow_seconds)
        if kind in ("truncate", "html200") and start.get("status") == 200:
            body = body[: max(1, len(body) // 2)] if kind == "truncate" else HTML_500.encode()
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


#: The largest request body the log keeps whole (bytes); a larger one is logged by its size.
MAX_LOGGED_BODY = 64 * 1024
#: The deepest JSON body the log keeps as JSON; a deeper one is kept as (cut) text, so the log always serialises.
MAX_LOGGED_DEPTH = 32


def _depth(value: Any, limit: int) -> int:
    """How deep ``value`` nests, counting no further than ``limit + 1`` (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _decode_body(raw: bytes) -> Any:
    """The body as the log keeps it: JSON when it is small and shallow, else text cut to a bounded size."""
    if not raw:
        return None
    if len(raw) > MAX_LOGGED_BODY:
        return f"<{len(raw):,} bytes, not kept: over {MAX_LOGGED_BODY:,}>"
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return raw.decode("utf-8", errors="replace")
    if _depth(body, MAX_LOGGED_DEPTH) > MAX_LOGGED_DEPTH:
        return raw[:1024].decode("utf-8", errors="replace") + f"... <nested deeper than {MAX_LOGGED_DEPTH}>"
    return body


async def _read_contact_body(request: Request) -> dict[str, Any] | Response:
    """A contact write's body: JSON, or a form (nested ``meta``, ``tags`` and ``default_assignees`` only as JSON)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in FORM_TYPES:
        try:
            form = await request.form()
        except Exception as exc:
            return _json(400, {"detail": f"Multipart form parse error - {type(exc).__name__}"})
        return {k: ("" if isinstance(v, UploadFile) else v) for k, v in form.multi_items()}
    return await _read_body(request)


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


def _loopback_host_header(host: str) -> bool:
    """Whether a ``Host`` header names this machine by a loopback name (any port)."""
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else ""
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.lower() in ("127.0.0.1", "localhost", "::1") or (
        name.startswith("127.") and all(part.isdigit() for part in name.split("."))
    )


def _positive_int(text: str) -> int | None:
    """DRF's pagination reading of a query value: a positive whole number, else ``None``."""
    return int(text) if text.isascii() and text.isdigit() and 0 < len(text) <= 9 and int(text) > 0 else None


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
