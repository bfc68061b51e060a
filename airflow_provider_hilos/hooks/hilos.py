"""HilosHook: the Airflow connection to the Hilos API and its endpoints.

The connection's settings are read and checked in :mod:`airflow_provider_hilos.connection`; the HTTP
requests (session, retries, error wording) are made by :mod:`airflow_provider_hilos.transport`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_hilos.batch import BatchOptions, BatchResult
from airflow_provider_hilos.batch.dry_run import dry_run
from airflow_provider_hilos.batch.engine import BatchEngine, ReportTarget
from airflow_provider_hilos.batch.pipeline import Pipeline, pipeline_for
from airflow_provider_hilos.batch.report import OutcomeListener
from airflow_provider_hilos.batch.verdict import batch_verdict
from airflow_provider_hilos.batch.wording import BATCH, Wording
from airflow_provider_hilos.connection import (
    CONN_FIELDS,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    TOKEN_HELP_URL,
    UI_FIELD_BEHAVIOUR,
    HilosConnectionSettings,
    page_size_is_valid,
    settings_from_connection,
)
from airflow_provider_hilos.exceptions import HilosAPIError, HilosConfigurationError, HilosValidationError
from airflow_provider_hilos.pacing import AdaptivePacer, CircuitBreaker
from airflow_provider_hilos.resources.contacts import Contacts, ContactWrite
from airflow_provider_hilos.resources.conversations import Conversations
from airflow_provider_hilos.resources.members import AccountMembers
from airflow_provider_hilos.resources.paging import ListingProgress, listing_page_bound
from airflow_provider_hilos.rows import RowSource
from airflow_provider_hilos.schemas import ValidatedUpdate, validate_update
from airflow_provider_hilos.transport import JSON, HilosTransport, redact

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection

    from airflow_provider_hilos.checkpoint import Checkpoint

WEB_CONVERSATION_PATH = "/inbox/conversation/{id}"


__all__ = ["HilosHook", "ListingProgress", "listing_page_bound"]


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
    :param longest_hold: the longest ``Retry-After`` the hook (and a batch on it) waits out in this process; a
        longer one is raised at once as a retryable :class:`HilosAPIError` (a batch stops, ``throttled``), so a
        deferrable operator can wait in the triggerer. ``None`` (the default): every wait is held, up to
        ``max_wait`` at a time.
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
        longest_hold: float | None = None,
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
        self.longest_hold = longest_hold
        #: how the hook waits between attempts; ``None``: a wait that :meth:`cancel` cuts short (tests set a recorder)
        self._sleep: Callable[[float], None] | None = None

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

    def _connection(self) -> Connection:
        """The Airflow connection; a missing one is a configuration error saying what it should look like."""
        from airflow.providers.common.compat.sdk import AirflowNotFoundException

        try:
            return self.get_connection(self.hilos_conn_id)
        except AirflowNotFoundException:
            conn_id = self.hilos_conn_id
            raise HilosConfigurationError(
                f"Hilos connection {conn_id!r} is not defined. Add a connection of type 'hilos' with that id: in "
                "the UI (Admin > Connections > +, type Hilos: Base URL https://api.hilos.io, API token from "
                f"{TOKEN_HELP_URL}), or as the environment variable AIRFLOW_CONN_{conn_id.upper()}="
                '\'{"conn_type": "hilos", "host": "https://api.hilos.io", "password": "<token>"}\', or with '
                f"`airflow connections add {conn_id} --conn-type hilos --conn-host https://api.hilos.io "
                "--conn-password <token>`; or pass hilos_conn_id= the id of the one you have"
            ) from None

    @cached_property
    def settings(self) -> HilosConnectionSettings:
        """The checked connection settings (looked up once, on first use)."""
        settings = settings_from_connection(self._connection())
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

    @cached_property
    def transport(self) -> HilosTransport:
        """What sends the requests: the session, timeouts, retries and error wording (made on first use)."""
        return HilosTransport(
            self.settings,
            timeout=self.timeout,
            max_attempts=self.max_attempts,
            backoff_base=self.backoff_base,
            max_wait=self.max_wait,
            pool_maxsize=self.pool_maxsize,
            log=self.log,
            sleep=self._wait,
            longest_hold=self.longest_hold,
        )

    def _wait(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        else:
            self.transport.pause(seconds)

    def cancel(self) -> None:
        """Stop retrying (``on_kill``): no further attempt of a request starts; one in flight finishes."""
        if "transport" in self.__dict__:
            self.transport.cancel()

    @property
    def pacer(self) -> AdaptivePacer:
        """The pace of every request this hook sends (the connection's ``max_requests_per_second`` its ceiling)."""
        return self.transport.pacer

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker every request of this hook reports to."""
        return self.transport.breaker

    def get_conn(self) -> requests.Session:
        """The hook's one pooled session, created on first use and reused by every request."""
        return self.transport.session

    def ensure_pool(self, size: int) -> None:
        """Keep at least ``size`` connections open to the API (for ``size`` concurrent requests)."""
        self.pool_maxsize = max(self.pool_maxsize, size)
        if "transport" in self.__dict__:
            self.transport.ensure_pool(size)

    def close(self) -> None:
        """Close the pooled connections. The hook opens a new session if used again."""
        if "transport" in self.__dict__:
            self.transport.close()

    def __enter__(self) -> HilosHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: JSON = None,
        params: Mapping[str, str | int] | None = None,
        subject: str | None = None,
        max_attempts: int | None = None,
    ) -> JSON:
        """Send one API request with the hook's timeouts and retries; see :meth:`HilosTransport.request`."""
        return self.transport.request(
            method, path, json=json, params=params, subject=subject, max_attempts=max_attempts
        )

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt``; see :meth:`HilosTransport.backoff_delay`."""
        return self.transport.backoff_delay(attempt, retry_after)

    def redact(self, text: str) -> str:
        """``text`` with the connection's token (if it was looked up) replaced by ``***``."""
        settings = self.__dict__.get("settings")
        return redact(text, settings.token) if settings is not None else text

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

    def send_update(self, update: ValidatedUpdate | ContactWrite, *, attempt: int | None = None) -> dict[str, Any]:
        """Send a write that passed validation: a conversation's PATCH
        (:meth:`~airflow_provider_hilos.resources.conversations.Conversations.send`, the one place it is made) or a
        contact's request (:meth:`~airflow_provider_hilos.resources.contacts.Contacts.send`). Only validated writes
        are accepted, so unvalidated input cannot reach the wire.

        :param update: a :class:`~airflow_provider_hilos.schemas.ValidatedUpdate` or a
            :class:`~airflow_provider_hilos.resources.contacts.ContactWrite`.
        :param attempt: send exactly once, counting this as attempt number ``attempt`` (the batch path
            schedules its own retries); ``None``: with the hook's retries.
        :raises HilosAPIError: the API refused the update, or failed (after every retry, unless ``attempt``).
        """
        if isinstance(update, ContactWrite):
            return self.contacts.send(update, attempt=attempt)
        return self.conversations.send(update, attempt=attempt)

    def planned_update(self, update: ValidatedUpdate) -> dict[str, Any]:
        """What :meth:`send_update` would send, without sending it (for a dry run): the method, the full URL
        (the token travels in a header, never in the URL) and the JSON body. Resolves and checks the
        connection."""
        return self.conversations.planned(update)

    # -- the API's objects: one resource each --------------------------------------------------

    @cached_property
    def conversations(self) -> Conversations:
        """The conversation endpoints (update, list)."""
        return Conversations(self)

    @cached_property
    def contacts(self) -> Contacts:
        """The contact endpoints (list, create-or-update by phone, get, partial update, delete)."""
        return Contacts(self)

    @cached_property
    def account_members(self) -> AccountMembers:
        """The account's members (agents by email, teams by name)."""
        return AccountMembers(self)

    def update_conversations(
        self,
        updates: Iterable[Mapping[str, Any]] | Iterable[ValidatedUpdate] | str | RowSource | Pipeline,
        options: BatchOptions | None = None,
        *,
        report: ReportTarget = None,
        checkpoint: Checkpoint | None = None,
        engine: Callable[[BatchEngine], None] | None = None,
        on_outcome: OutcomeListener | None = None,
        words: Wording = BATCH,
        **option_values: Any,
    ) -> BatchResult:
        """Update many conversations: validate every row first, then send them concurrently.

        :param updates: rows ``{"conversation_id": ..., <fields>}`` (a list, a JSON string of one), a callable
            returning ``(row_number, row)`` pairs afresh on each call (see
            :func:`~airflow_provider_hilos.inputs.rows_from_json_lines` to stream a file), or updates that already
            passed validation (:class:`~airflow_provider_hilos.schemas.ValidatedUpdate`, a list or an iterator: read
            once).
        :param options: how to send and when to fail (:class:`~airflow_provider_hilos.batch.BatchOptions`);
            or give its fields as keyword arguments (``max_concurrency=32``), checked the same way.
        :param report: an open text stream, a callable opening one, or an
            :class:`~airflow_provider_hilos.storage.AtomicText` (opened only once every row passed validation); one
            JSON line per row is written to it.
        :param checkpoint: record applied updates there, and skip those an earlier try recorded; it is opened
            (checked and locked) before the first request, and cleared when the batch succeeds.
        :param engine: called with the batch's engine before it starts (an operator keeps it, to stop it on kill).
        :param on_outcome: told each row's outcome record as it arrives (``{"row", "conversation_id", "outcome",
            ...}``: what the report holds), report or not.
        :param words: how messages and errors name the batch and its rows
            (:class:`~airflow_provider_hilos.batch.wording.Wording`; a sync's speak of the sync).
        :return: counts, duration, rate and the first failed rows.
        :raises HilosValidationError: invalid rows (nothing was sent), unless ``skip_invalid_rows``.
        :raises HilosBatchError: the batch failed (the result is attached); its subclasses say whether
            another try can help (:class:`HilosPermanentBatchError`, :class:`HilosAPIUnavailableError`).
        """
        options = _options(options, option_values)
        runner = BatchEngine(self, options, report=report, checkpoint=checkpoint, on_outcome=on_outcome, words=words)
        if engine is not None:
            engine(runner)
        try:
            result = runner.run(pipeline_for(updates))
            if failure := batch_verdict(result, options, words):
                raise failure
            if checkpoint is not None:
                checkpoint.clear()
        finally:
            if checkpoint is not None:
                checkpoint.release()
        return result

    def plan_updates(
        self,
        updates: Iterable[Mapping[str, Any]] | Iterable[ValidatedUpdate] | str | RowSource | Pipeline,
        options: BatchOptions | None = None,
        *,
        checkpoint: Checkpoint | None = None,
        shown: int = 20,
    ) -> dict[str, Any]:
        """A dry run of :meth:`update_conversations`: validate every row, resolve the connection, log what would
        be sent (the first ``shown`` requests in full, then a count; never the token), and send nothing.

        :param updates: as for :meth:`update_conversations`.
        :param options: as for :meth:`update_conversations` (``skip_invalid_rows`` decides whether invalid rows
            refuse the batch, as in a real run).
        :param checkpoint: rows an earlier try applied are counted as such, not planned.
        :param shown: how many planned requests are logged and returned.
        :return: ``{"dry_run": True, "total", "to_send", "skipped", "already_applied", "method", "url",
            "requests": [the first planned requests]}``.
        """
        return dry_run(self, pipeline_for(updates), options, checkpoint=checkpoint, shown=shown)

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
        return self.conversations.list(
            page=page, page_size=page_size, contact=contact, search=search, max_attempts=max_attempts
        )

    def iter_conversations(
        self,
        *,
        page_size: int | None = None,
        contact: str | None = None,
        search: str | None = None,
        on_page: Callable[[ListingProgress], None] | None = None,
        repeats: bool = False,
        concurrency: int = 1,
    ) -> Iterator[dict[str, Any]]:
        """Every conversation of the account (or of ``contact`` / matching ``search``), page after page: the list rows
        (``ConversationReadSimple``) as the API returns them; read them with
        :func:`~airflow_provider_hilos.conversations.state_from_row`.

        Pages are requested by number, always from the connection's own Base URL (a ``next`` link only says there is
        a next page: the token never goes to a host ``next`` names), bounded by the API's own count, in the size the
        server serves; each conversation is yielded once, even if the list shifts under it while it runs (new
        activity moves a conversation to the front): see :mod:`~airflow_provider_hilos.resources.paging`. Requests
        go through the hook's quota, circuit breaker and retries, as writes do.

        :param page_size: rows per page asked for; default: the connection's extra ``page_size``, else
            {DEFAULT_PAGE_SIZE} (Hilos publishes no limit; 100 is a common cap of DRF APIs, and a server that caps
            lower is followed).
        :param contact: only this contact's conversations (a UUID).
        :param search: the API's free-text search.
        :param on_page: called after each page with the listing's progress (pages, rows, duplicates, count).
        :param repeats: yield a row again when the list shows it again (still counted in ``duplicates``): the later
            copy is the newer one, which a sync compares with.
        :param concurrency: pages read at once (after the first), under the connection's quota, handed over in order.
        """
        if page_size is not None and not page_size_is_valid(page_size):
            raise HilosValidationError(
                [("page_size", f"must be a whole number from 1 to {MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE})")],
                "Invalid Hilos listing",
            )
        return self.conversations.rows(
            page_size=page_size or self.settings.page_size,
            contact=contact,
            search=search,
            on_page=on_page,
            repeats=repeats,
            concurrency=concurrency,
        )

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


def _options(options: BatchOptions | None, values: Mapping[str, Any]) -> BatchOptions:
    """``options``, with ``values`` (keyword arguments of the same names) on top; checked."""
    if options is None:
        return BatchOptions(**values)
    return dataclasses.replace(options, **values) if values else options


def _mask(secret: str) -> None:
    """Register the token with Airflow's secrets masker so no log line can show it."""
    from airflow.providers.common.compat.sdk import mask_secret

    mask_secret(secret)
