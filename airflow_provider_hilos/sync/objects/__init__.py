"""What an object is, to the sync engine: its key, its fields and how each compares, how its desired rows are read
and its list rows, which list it reads, and which write puts a planned change on the wire. The runner
(:mod:`~airflow_provider_hilos.sync.runner`), the diff (:mod:`~airflow_provider_hilos.sync.diff`), the state, the
plan and the log are one for every object; a :class:`SyncObject` is what differs:

* :class:`~airflow_provider_hilos.sync.objects.conversation.ConversationObject`: keyed by the conversation's id,
  written by ``PATCH .../conversation/{id}/update``;
* :class:`~airflow_provider_hilos.sync.objects.contact.ContactObject`: keyed by the contact's phone (E.164),
  written by ``POST /api/contact`` (create or update by phone), ``PATCH /api/contact/{id}`` and ``DELETE``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_hilos.batch.wording import Wording
from airflow_provider_hilos.resources.paging import MAX_STALE_PAGES
from airflow_provider_hilos.sync.desired import Columns
from airflow_provider_hilos.sync.diff import (
    Action,
    CompareWith,
    FieldSet,
    ListMode,
    PlanEntry,
    already_as_desired,
    plan_entry,
)

if TYPE_CHECKING:
    from airflow_provider_hilos.hooks.hilos import HilosHook
    from airflow_provider_hilos.resources.paging import ListingProgress, Page, Paginator, Seen


class NotWritable(Exception):
    """A planned change that can't be written from what is known (a contact's meta to rewrite whole, while the list
    row did not show it): the object is unreadable."""


class SyncObject(ABC):
    """One kind of object a sync keeps equal to the warehouse.

    :param modes: ``"replace"``, ``"add"`` (or for custom properties ``"merge"``) per field that has a mode.
    """

    #: ``conversation``, ``contact``
    name: str
    #: the key's column in the desired state (and its name in reports): ``conversation_id``, ``phone``
    key_column: str
    #: the desired state's columns
    columns: Columns
    #: the fields and how each compares
    fields: FieldSet
    #: how messages name the desired rows, and the writes
    rows_words: Wording
    updates_words: Wording
    #: the column of its Hilos id in plans and logs when the key is not the id (a contact's ``contact_id``)
    id_field: str | None = None
    #: the fields of a list row that :meth:`listed_key` and :meth:`listed_fields` read (``None``: all of them): the
    #: listing decodes only these (:func:`~airflow_provider_hilos.projection.page_decoder`)
    listed_columns: tuple[str, ...] | None = None
    #: whether a sync creates and deletes it (contacts), or only updates the ones that exist (conversations); the
    #: result then counts ``created`` and ``deleted`` too, and an object that left the desired state stays managed
    lifecycle: bool = False

    @property
    def mirrors(self) -> bool:
        """Whether the objects this sync managed that left the desired state are deleted."""
        return False

    def __init__(self, modes: Mapping[str, ListMode] | None = None) -> None:
        self.modes = dict(modes or {})

    @property
    def plural(self) -> str:
        return f"{self.name}s"

    @abstractmethod
    def desired(self, number: int, row: Any) -> tuple[str, dict[str, Any]]:
        """A desired row's key and fields (normal form).

        :raises HilosValidationError: the row is invalid (naming the field and the fix).
        """

    @abstractmethod
    def listed(self, row: Any) -> tuple[str | None, str | None, dict[str, Any]]:
        """A list row's key (``None``: nothing the warehouse can name), its id in Hilos, and its fields (normal form,
        ``UNKNOWN`` for a field it does not show readably)."""

    @abstractmethod
    def listed_key(self, row: Any) -> tuple[str | None, str | None]:
        """A list row's key and its id in Hilos, without its fields (most listed rows are of no interest to a
        sync: their fields are never read)."""

    @abstractmethod
    def listed_fields(self, row: Any) -> dict[str, Any]:
        """A list row's fields (see :meth:`listed`)."""

    @abstractmethod
    def paginator(self, hook: HilosHook) -> Paginator:
        """The reader of the object's list (its resource's, under the hook's transport)."""

    def pages(
        self,
        hook: HilosHook,
        *,
        page_size: int,
        concurrency: int,
        progress: ListingProgress,
        seen: Seen,
        stale_pages: int | None = MAX_STALE_PAGES,
    ) -> Iterator[Page]:
        """Every page of the account's list of this object, in order (see :meth:`Paginator.pages`)."""
        return self.paginator(hook).pages(
            {},
            page_size=page_size,
            concurrency=concurrency,
            progress=progress,
            seen=seen,
            stale_pages=stale_pages,
            fields=self.listed_columns,
        )

    @abstractmethod
    def write(self, entry: PlanEntry, *, current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> Any:
        """The write of a planned change (a ``ValidatedUpdate``, a ``ContactWrite``).

        :raises HilosValidationError: the change makes an invalid write (a union over 100 tags).
        :raises NotWritable: it can't be written from what is known.
        """

    @abstractmethod
    def stored(self, write: Any) -> Any:
        """The write as the work database keeps it (plain values)."""

    @abstractmethod
    def restored(self, data: Any) -> Any:
        """A write back from :meth:`stored`."""

    def missing(self) -> Action:
        """What a desired object the listing did not show becomes."""
        return Action.NOT_FOUND

    def send_missing(self) -> bool:
        """Whether an object the listing did not show is sent as an update anyway."""
        return False

    def already_as_desired(self, desired: Mapping[str, Any], current: Mapping[str, Any], failed_before: bool) -> bool:
        """Whether :meth:`plan` plans this object unchanged, compared with what Hilos listed
        (:func:`~airflow_provider_hilos.sync.diff.already_as_desired`)."""
        return already_as_desired(
            desired,
            fields=self.fields,
            compare_with=CompareWith.HILOS,
            current=current,
            failed_before=failed_before,
            modes=self.modes,
        )

    def plan(
        self,
        key: str,
        desired: Mapping[str, Any],
        *,
        compare_with: CompareWith,
        current: Mapping[str, Any] | None,
        previous: Mapping[str, Any] | None,
        failed_before: bool,
        row: int,
        object_id: str | None,
    ) -> PlanEntry:
        """The plan for one desired object (the one diff, with this object's fields and modes)."""
        return plan_entry(
            key,
            desired,
            fields=self.fields,
            compare_with=compare_with,
            current=current,
            previous=previous,
            failed_before=failed_before,
            modes=self.modes,
            missing=self.missing(),
            send_missing=self.send_missing(),
            row=row,
            object_id=object_id,
        )
