"""``ContactSyncOperator``: keep Hilos's contacts (the customer record) equal to a warehouse table, sending only what
differs, on the same engine as the conversation sync."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from airflow_provider_hilos.batch.options import with_batch_option_docs, with_batch_options
from airflow_provider_hilos.contacts import region_problem
from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.operators._common import with_wait_option_docs
from airflow_provider_hilos.operators.sync import HilosSyncBase, with_guard_option_docs
from airflow_provider_hilos.schemas import show
from airflow_provider_hilos.sync.diff import CompareWith, ListMode, mode_problem
from airflow_provider_hilos.sync.guard import share_or_none, whole_or_none
from airflow_provider_hilos.sync.objects import SyncObject
from airflow_provider_hilos.sync.objects.contact import CONTACT_COLUMNS, ContactObject, SyncMode
from airflow_provider_hilos.sync.runner import SyncSettings

#: The default share of the managed contacts a mirror may delete in one run.
DEFAULT_MAX_DELETE_RATIO = 0.1


class ContactSyncOperator(HilosSyncBase):
    """Keep Hilos's contacts equal to the desired state the warehouse declares: read it, compare it with what Hilos
    holds (or with what the last run applied), create the contacts Hilos lacks, write only the fields that differ,
    and, in a mirror, delete the contacts this sync managed that left the query.

        Give the desired state as one of ``sql`` (with ``sql_conn_id``), ``state_path`` or ``state``, one row per
        contact. Its columns are ``phone`` (the key) and any of ``first_name``, ``last_name``, ``email``,
        ``external_url``, ``tags``, ``default_assignees`` and custom properties, either as a ``meta`` column holding
        an object (JSON text, or a SQL JSON type such as PostgreSQL's ``jsonb``) or as one column per property named
        ``meta.<name>`` (other names through ``column_map``). A column not selected is not managed; a NULL cell leaves
        that field (or property) as it is; ``-`` or an empty string means "must be empty" (for a property: "must not
        be there"). Tags and default assignees may be SQL arrays (``text[]``, ``int[]``) or strings separated by
        ``list_separator``; an assignee may be a user id or the email of a member of the account.

        The phone is parsed by Google's libphonenumber (the ``phonenumbers`` package) into E.164: ``+52 55 1234
        5678``, ``525512345678`` and (with ``default_region="MX"``) ``55 1234 5678`` are one contact; two rows for one
        contact, or a phone that can't be parsed, are invalid, named by their row. Custom properties are compared as
        the strings Hilos keeps (a warehouse ``42`` is Hilos's ``"42"``), so a contact already as desired is never
        written. ``default_assignees`` is not in the contact list: it is compared with what the last sync applied
        (the plan says so), so an agent's hand edit of it is not seen.

        Every desired row is validated (and every email resolved, with one request to ``/api/account-member``) before
        the first write. The plan (per contact: ``unchanged``, ``create``, ``update`` with each field's and each
        property's from and to, ``delete``, ``not_found``, ``invalid``) is logged, counted per field and written to
        ``plan_path``; ``dry_run=True`` stops there. The writes (``POST /api/contact`` to create, ``PATCH
        /api/contact/{id}`` with only what differs, ``DELETE``) go through the batch engine (pacing, circuit breaker,
        failure policy, checkpoint, report), under the same options as the batch operators. The state between runs,
        the lease, the sync log, deferral and lineage work as in :class:`ConversationSyncOperator`.

        :param mode: ``"upsert"`` (default: contacts Hilos does not list are created), ``"update"`` (never create:
            they are ``not_found``) or ``"mirror"`` (upsert, and delete the contacts this sync created or managed that
            left the query; a contact it never managed is never deleted). ``update`` and ``mirror`` need
            ``compare_with="hilos"`` (templated).
        :param default_region: the country (ISO 3166 code, ``"MX"``) of phones written without ``+`` and a country
            code; ``None`` (default): every phone must have one (templated).
        :param tags_mode: ``"replace"`` (default: the desired tags are the whole list; the write sets
            ``overwrite_tags``) or ``"add"`` (the desired tags must be there, an agent's others are kept) (templated).
        :param default_assignees_mode: the same for the default assignees (templated).
        :param meta_mode: ``"merge"`` (default: only the properties the warehouse names are managed, an agent's other
            properties kept) or ``"replace"`` (the warehouse's properties are the whole meta: others are removed)
            (templated).
        :param max_deletes: a plan of a mirror that deletes more contacts than this is over its limits (default: no
            count): it waits for approval, or fails before any write (see ``approval``) (templated).
        :param max_delete_ratio: ... or one that deletes more than this share of the contacts this sync manages
            (default 0.1) (templated).
        :param sql: a query returning the desired state, or a ``.sql`` file (templated).
        :param sql_conn_id: the Airflow connection ``sql`` runs on: any common.sql ``DbApiHook`` (templated).
        :param parameters: the query's bind parameters (templated).
        :param chunk_size: rows fetched from the database at a time (default 5,000).
        :param log_table: a table on ``sql_conn_id`` getting one row per contact created, updated, deleted, failed,
            not found or invalid (``LOG_TABLE_DDL`` in ``airflow_provider_hilos.sync.warehouse_log``) (templated).
        :param state_path: instead of ``sql``: a file of rows (JSON Lines or CSV; CSV columns ``meta.<name>`` are
            properties) on ``ObjectStoragePath`` (templated).
        :param state: instead of ``sql``: the rows as a list, an ``XComArg``, or a template rendering JSON (templated).
        :param column_map: source column -> field, e.g. ``{"mobile": "phone", "plan_name": "meta.plan"}``.
        :param list_separator: what separates names or ids inside one text cell (default ``|``).
        :param compare_with: ``"hilos"`` (default: read the contact list, every page, before any write),
            ``"last_sync"`` (diff against the snapshot the last run left: no reads; new and changed contacts are
            written by phone) or ``"nothing"`` (write every desired contact) (templated).
        :param page_size: rows per list page (default: the connection's, else 100).
        :param list_concurrency: list pages read at once, under the connection's quota (default: ``max_concurrency``).
        :param state_store: the folder sync states go under (see :class:`ConversationSyncOperator`) (templated).
        :param plan_path: where to write the plan (templated).
        :param plan_unchanged: list the unchanged contacts in the plan file too (default ``False``).
        :param report_path: the batch's per-row report (templated).
        :param resume: checkpoint the applied writes, so a retried try skips them (default ``True``).
        :param checkpoint_path: where checkpoints go (templated).
        :param dry_run: read and plan, log the plan and return it; write nothing (templated).
        :param show_diffs: how many diffs are logged in full (and returned in the summary).
        :param wait_for_other_run: how long a run waits for another run of the same sync (seconds; default 1800).
        {guard_options}
        {wait_options}
        :param hilos_conn_id: the Airflow connection of type ``hilos``, on Hilos's own API (templated).
    {batch_options}
        :return: what the plan found: ``desired``, ``unchanged``, ``to_create``, ``to_update``, ``to_delete``,
            ``not_found`` (and the first ``not_found_contacts``), ``invalid``, ``unreadable``, ``drift_found``; what a
            real run did: ``created``, ``updated``, ``deleted``, ``failed``, ``drift_corrected``; the requests
            (``read_requests``, ``write_requests``, ``retried_requests``), ``duration_seconds``, the plan's
            ``summary``, ``costs`` and the paths written. Pushed under the XCom key ``hilos_sync_result`` too, also
            when the task fails or is refused; every ``Asset`` in ``outlets`` gets the counts in its event's extra.
    """

    template_fields: Sequence[str] = (
        *HilosSyncBase.COMMON_TEMPLATE_FIELDS,
        "mode",
        "default_region",
        "tags_mode",
        "default_assignees_mode",
        "meta_mode",
        "max_deletes",
        "max_delete_ratio",
    )
    COLUMNS = CONTACT_COLUMNS
    DATASET = "contacts"
    ASSET_EXTRA_FIELDS: ClassVar[tuple[str, ...]] = (
        "desired",
        "unchanged",
        "created",
        "updated",
        "deleted",
        "failed",
        "not_found",
        "invalid",
        "drift_corrected",
        "read_requests",
        "write_requests",
        "duration_seconds",
    )

    @with_batch_options
    def __init__(
        self,
        *,
        mode: str = SyncMode.UPSERT,
        default_region: str | None = None,
        tags_mode: str = "replace",
        default_assignees_mode: str = "replace",
        meta_mode: str = "merge",
        max_deletes: int | str | None = None,
        max_delete_ratio: float | str = DEFAULT_MAX_DELETE_RATIO,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        self.default_region = default_region
        self.tags_mode = tags_mode
        self.default_assignees_mode = default_assignees_mode
        self.meta_mode = meta_mode
        self.max_deletes = max_deletes
        self.max_delete_ratio = max_delete_ratio
        self._check_when_parsed(
            "compare_with",
            "mode",
            "default_region",
            "tags_mode",
            "default_assignees_mode",
            "meta_mode",
            "max_deletes",
            "max_delete_ratio",
        )

    def _settings(self) -> SyncSettings:
        problems: list[tuple[str, str]] = []
        mode = str(self.mode).strip().lower()
        if mode not in SyncMode.ALL:
            problems.append(("mode", f"{show(self.mode)} is not one of {', '.join(SyncMode.ALL)}"))
        lists = self._modes(tags_mode=ListMode, default_assignees_mode=ListMode, meta_mode=ListMode)
        if lists["tags_mode"] is ListMode.MERGE or lists["default_assignees_mode"] is ListMode.MERGE:
            name = "tags_mode" if lists["tags_mode"] is ListMode.MERGE else "default_assignees_mode"
            problems.append((name, "'merge' is for meta_mode; a list is 'replace' or 'add'"))
        if lists["meta_mode"] is ListMode.ADD:
            problems.append(("meta_mode", "'add' is for lists; custom properties are 'merge' or 'replace'"))
        if problem := region_problem(self.default_region):
            problems.append(("default_region", problem))
        settings = self._common_settings()
        if mode in (SyncMode.UPDATE, SyncMode.MIRROR) and settings.compare_with is not CompareWith.HILOS:
            problems.append(
                (
                    "mode",
                    f"mode={mode!r} needs what Hilos holds (which contacts exist"
                    f"{', and which this sync may delete' if mode == SyncMode.MIRROR else ''}): use "
                    "compare_with='hilos', or mode='upsert'",
                )
            )
        for name in ("tags", "default_assignees"):
            if lists[f"{name}_mode"] is ListMode.ADD and (problem := mode_problem(settings.compare_with, name)):
                problems.append((f"{name}_mode", problem))
        if problems:
            raise HilosValidationError(problems, "Invalid Hilos contact sync arguments")
        return settings

    GUARD_FIELDS = ("max_deletes", "max_delete_ratio")

    def _delete_limits(self, problems: list[tuple[str, str]]) -> dict[str, Any]:
        return {
            "max_deletes": whole_or_none(self.max_deletes, "max_deletes", problems),
            "max_delete_ratio": share_or_none(self.max_delete_ratio, "max_delete_ratio", problems),
        }

    def _object(self) -> SyncObject:
        lists = self._modes(tags_mode=ListMode, default_assignees_mode=ListMode, meta_mode=ListMode)
        return ContactObject(
            mode=str(self.mode).strip().lower(),
            default_region=self.default_region,
            tags_mode=lists["tags_mode"],
            default_assignees_mode=lists["default_assignees_mode"],
            meta_mode=lists["meta_mode"],
        )


ContactSyncOperator.__doc__ = with_guard_option_docs(
    with_wait_option_docs(with_batch_option_docs(ContactSyncOperator.__doc__))
)
