"""The contact endpoints of Hilos's own API (``tests/contract/openapi-hilos-native-contacts.json``; ActiveCampaign's
document has none): the list, create-or-update by phone (``POST /api/contact``), one contact
(``GET /api/contact/{id}``), its partial update (``PATCH``) and its deletion (``DELETE``, 204).

A batch or a sync sends contact writes through :meth:`Contacts.send`, which takes only a :class:`ContactWrite`, a
write whose body passed :func:`~airflow_provider_hilos.contacts.write_problems`: this is the one place contact
requests are made.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_provider_hilos import metrics
from airflow_provider_hilos.contacts import write_problems
from airflow_provider_hilos.endpoints import ApiFamily
from airflow_provider_hilos.exceptions import HilosAPIError, HilosConfigurationError, HilosError, HilosValidationError
from airflow_provider_hilos.resources.paging import Paginator

if TYPE_CHECKING:
    from airflow_provider_hilos.hooks.hilos import HilosHook

CONTACT_PATH = "/api/contact"
#: What a contact write does.
CREATE, UPDATE, DELETE = "create", "update", "delete"


@dataclass(frozen=True)
class ContactWrite:
    """One contact request, checked: make it with :func:`contact_write`.

    :param phone: the contact's phone in E.164: its key (in a batch's report and checkpoint).
    :param action: ``create`` (``POST /api/contact``: creates, or updates the contact with that phone), ``update``
        (``PATCH /api/contact/{id}``) or ``delete`` (``DELETE /api/contact/{id}``).
    :param contact_id: the contact's id (update, delete).
    :param body: the JSON body (create, update).
    """

    phone: str
    action: str
    contact_id: str | None = None
    body: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return self.phone

    @property
    def done_word(self) -> str:
        """Its outcome once it landed, in reports and the sync log: ``created``, ``updated`` or ``deleted``."""
        return {CREATE: "created", DELETE: "deleted"}.get(self.action, "updated")

    @property
    def digest_body(self) -> dict[str, Any]:
        """What a checkpoint's fingerprint covers: the same write lands the same."""
        return {"action": self.action, "id": self.contact_id, "body": self.body}


def contact_write(
    phone: str, action: str, *, contact_id: str | None = None, body: Mapping[str, Any] | None = None
) -> ContactWrite:
    """A checked :class:`ContactWrite`.

    :raises HilosValidationError: the body breaks the document's rules, or the action lacks what it needs.
    """
    problems: list[tuple[str, str]] = []
    if action not in (CREATE, UPDATE, DELETE):
        problems.append(("action", f"{action!r} is not one of create, update, delete"))
    if action in (UPDATE, DELETE) and not contact_id:
        problems.append(("contact_id", f"an {action} needs the contact's id"))
    if action in (CREATE, UPDATE):
        if body is None or not body:
            problems.append(("body", f"a {action} sends at least one field"))
        else:
            problems += write_problems(body)
    if action == CREATE and body is not None and "phone" not in body:
        problems.append(("phone", "a create sends the phone (the API finds or makes the contact by it)"))
    if problems:
        raise HilosValidationError(problems, f"Invalid Hilos contact write for {phone}")
    return ContactWrite(phone, action, contact_id, None if body is None else dict(body))


def contact_key(row: Mapping[str, Any]) -> str:
    """A list row's identity: its id."""
    cid = row.get("id")
    if not isinstance(cid, str) or not cid:
        raise ValueError("no id")
    return cid.lower()


class Contacts:
    """The contacts of one connection (Hilos's own API family only).

    :param hook: the connection (its transport: quota, breaker, retries, redaction).
    """

    def __init__(self, hook: HilosHook) -> None:
        self.hook = hook

    def _path(self, contact_id: str | None = None) -> str:
        if self.hook.settings.api_family is not ApiFamily.HILOS:
            raise HilosConfigurationError(
                f"Hilos connection {self.hook.settings.conn_id!r} uses {self.hook.settings.family_display}, whose "
                "document has no contact endpoints (only Hilos's own API, https://api.hilos.io, publishes /api/contact)"
                ": point a connection at api.hilos.io (extra api_family: hilos) for contacts"
            )
        return CONTACT_PATH if contact_id is None else f"{CONTACT_PATH}/{quote(contact_id, safe='')}"

    def paginator(self) -> Paginator:
        """The reader of the contact list (what :meth:`rows` and a sync read), under the hook's transport."""
        return Paginator(self.hook, self._path(), "contact", contact_key)

    # -- reading --

    def list(self, *, page: int = 1, page_size: int = 20, search: str | None = None) -> dict[str, Any]:
        """One page of ``ContactListReadPublic`` rows: ``{"count", "next", "previous", "results"}``."""
        params: dict[str, Any] = {"page_size": page_size, **({"search": search} if search else {})}
        return self.paginator().page(page, params)

    def rows(self, *, page_size: int, search: str | None = None, concurrency: int = 1) -> Iterator[dict[str, Any]]:
        """Every contact (or a search's), each once."""
        params = {"search": search} if search else {}
        return self.paginator().rows(params, page_size=page_size, concurrency=concurrency)

    def get(self, contact_id: str) -> dict[str, Any]:
        """One contact in full (``ContactDetailRead``: with its ``default_assignees``)."""
        answer = self.hook.transport.request("GET", self._path(contact_id), subject=f"contact {contact_id}")
        return _object(answer, "GET", self._path(contact_id), "ContactDetailRead")

    # -- writing --

    def request_of(self, write: ContactWrite) -> tuple[str, str]:
        """The method and path of a write."""
        if not isinstance(write, ContactWrite):
            raise TypeError(f"contacts send a ContactWrite (see contact_write), not {type(write).__name__}")
        if write.action == CREATE:
            return "POST", self._path()
        assert write.contact_id is not None
        return ("PATCH" if write.action == UPDATE else "DELETE"), self._path(write.contact_id)

    def send(self, write: ContactWrite, *, attempt: int | None = None) -> dict[str, Any]:
        """Send one checked write (a POST by phone, a PATCH, a DELETE).

        :param attempt: send exactly once, counting it as attempt number ``attempt`` (a batch retries itself);
            ``None``: with the hook's retries.
        :return: the contact as the API answered (``{}`` for a delete).
        :raises HilosAPIError: the API refused it, or failed (after every retry, unless ``attempt``).
        """
        method, path = self.request_of(write)
        subject = f"contact {write.phone}"
        transport = self.hook.transport
        try:
            if attempt is None:
                answer = transport.request(method, path, json=write.body, subject=subject)
            else:
                answer = transport.attempt(method, path, json=write.body, subject=subject, number=attempt)
        except HilosError:
            if attempt is None:
                metrics.incr(metrics.FAILED)
            raise
        metrics.incr(metrics.APPLIED)
        return {} if write.action == DELETE else _object(answer, method, path, "ContactDetailReadPublic")

    def create_or_update(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /api/contact``: a contact with the body's phone is partially updated, else one is created (the
        API merges ``meta``, ``tags`` and ``default_assignees`` unless the body sets the ``overwrite_*`` flags).

        :raises HilosValidationError: the body breaks the document's rules (nothing was sent).
        """
        phone = str(body.get("phone") or "")
        return self.send(contact_write(phone, CREATE, body=body))

    def update(self, contact_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``PATCH /api/contact/{id}``: a partial update (merging ``meta``, ``tags`` and ``default_assignees`` unless
        the ``overwrite_*`` flags say otherwise).

        :raises HilosValidationError: the body breaks the document's rules (nothing was sent).
        """
        return self.send(contact_write(str(body.get("phone") or contact_id), UPDATE, contact_id=contact_id, body=body))

    def delete(self, contact_id: str) -> None:
        """``DELETE /api/contact/{id}`` (its history and messages stay, the document says)."""
        self.send(contact_write(contact_id, DELETE, contact_id=contact_id))


def _object(answer: Any, method: str, path: str, schema: str) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise HilosAPIError(
            f"Hilos answered {method} {path} with {type(answer).__name__} instead of a {schema} object",
            status_code=200,
            method=method,
            path=path,
            problem="an answer that is not a JSON object",
        )
    return answer
