"""The conversation endpoints: "Partially update a Conversation" (``PATCH .../conversation/{id}/update``) and the
list (``GET .../conversation``), in the connection's API family (Hilos's own ``/api/inbox/...`` or ActiveCampaign's
``/channel/whatsapp/inbox/...``).

This is the one place the PATCH request is made: the single update, the batch and the sync all send through
:meth:`Conversations.send`, which takes only a :class:`~airflow_provider_hilos.schemas.ValidatedUpdate`, so
unvalidated input cannot reach the wire.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_provider_hilos import metrics
from airflow_provider_hilos.exceptions import HilosAPIError, HilosError
from airflow_provider_hilos.resources.paging import ListingProgress, Paginator
from airflow_provider_hilos.schemas import ValidatedUpdate

if TYPE_CHECKING:
    from airflow_provider_hilos.hooks.hilos import HilosHook


def conversation_key(row: Mapping[str, Any]) -> int:
    """A list row's identity: its id's 128-bit number (``6513270E-...`` and ``6513270e-...`` are one)."""
    cid = row.get("id")
    if not isinstance(cid, str):
        raise ValueError("no id")
    return uuid.UUID(cid).int


class Conversations:
    """The conversations of one connection.

    :param hook: the connection (its transport: quota, breaker, retries, redaction).
    """

    def __init__(self, hook: HilosHook) -> None:
        self.hook = hook

    @property
    def path(self) -> str:
        """The list endpoint of the connection's API family (also the root of the conversation paths)."""
        return self.hook.settings.api_family.conversation_path

    def paginator(self) -> Paginator:
        """The reader of the conversation list (what :meth:`rows` and a sync read), under the hook's transport."""
        return Paginator(self.hook, self.path, "conversation", conversation_key)

    # -- writing --

    def request_of(self, update: ValidatedUpdate) -> tuple[str, str]:
        """The update's method and path, by the connection's API family: where the PATCH is described."""
        if not isinstance(update, ValidatedUpdate):
            raise TypeError(f"send_update takes a ValidatedUpdate (see validate_update), not {type(update).__name__}")
        return "PATCH", self.hook.settings.api_family.update_path(quote(update.conversation_id, safe=""))

    def send(self, update: ValidatedUpdate, *, attempt: int | None = None) -> dict[str, Any]:
        """PATCH an update that passed :func:`~airflow_provider_hilos.schemas.validate_update`.

        :param attempt: send exactly once, counting this as attempt number ``attempt`` (a batch schedules its own
            retries); ``None``: with the hook's retries.
        :raises HilosAPIError: the API refused the update, or failed (after every retry, unless ``attempt``).
        """
        method, path = self.request_of(update)
        cid = update.conversation_id
        subject = f"conversation {cid}"
        transport = self.hook.transport
        if attempt is None:
            try:
                result = transport.request(method, path, json=update.body, subject=subject)
            except HilosError:
                metrics.incr(metrics.FAILED)  # for good: after the hook's retries
                raise
        else:  # one attempt: the caller (a batch) retries, and counts an update that failed for good
            result = transport.attempt(method, path, json=update.body, subject=subject, number=attempt)
        if not isinstance(result, dict):
            raise HilosAPIError(
                f"Hilos answered the update of conversation {cid} with "
                f"{type(result).__name__} instead of a ConversationEdit object",
                status_code=200,
                method="PATCH",
                path=path,
                problem="an answer that is not a JSON object",
            )
        metrics.incr(metrics.APPLIED)
        return result

    def planned(self, update: ValidatedUpdate) -> dict[str, Any]:
        """What :meth:`send` would send, without sending it: the method, the full URL (never the token) and the
        body."""
        method, path = self.request_of(update)
        return {"method": method, "url": self.hook.settings.url(path), "body": update.body}

    # -- reading --

    def list(
        self,
        *,
        page: int = 1,
        page_size: int = 20,
        contact: str | None = None,
        search: str | None = None,
        max_attempts: int | None = None,
    ) -> dict[str, Any]:
        """One list page ``{"count", "next", "previous", "results": [...]}``."""
        params: dict[str, str | int] = {"page_size": page_size}
        if contact is not None:
            params["contact"] = contact
        if search is not None:
            params["search"] = search
        return self.paginator().page(page, params, max_attempts=max_attempts)

    def rows(
        self,
        *,
        page_size: int,
        contact: str | None = None,
        search: str | None = None,
        on_page: Callable[[ListingProgress], None] | None = None,
        repeats: bool = False,
        concurrency: int = 1,
    ) -> Iterator[dict[str, Any]]:
        """Every conversation (or a contact's, or a search's), page after page (see
        :mod:`~airflow_provider_hilos.resources.paging`)."""
        return self.paginator().rows(
            _filters(contact, search), page_size=page_size, concurrency=concurrency, on_page=on_page, repeats=repeats
        )


def _filters(contact: str | None, search: str | None) -> dict[str, str]:
    params = {}
    if contact is not None:
        params["contact"] = contact
    if search is not None:
        params["search"] = search
    return params
