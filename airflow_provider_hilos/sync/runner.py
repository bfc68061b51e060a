"""One sync run: read the desired state, read what to compare it with, plan, and apply the plan through the batch
engine; then keep the state for the next run and log every changed or failed conversation.

The order matters: every desired row is validated before the first request (bad input never half-syncs); with
``compare_with="hilos"`` every page is read before the first write (a write moves a conversation to the front of
the list, which would shift the pages still to read).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_hilos.batch.options import BatchOptions
from airflow_provider_hilos.batch.pipeline import MAX_LISTED_INVALID_ROWS, Survey, UpdatePipeline
from airflow_provider_hilos.batch.verdict import validation_verdict
from airflow_provider_hilos.conversations import NormalValue, normal_fields, row_fields
from airflow_provider_hilos.exceptions import HilosBatchError, HilosValidationError
from airflow_provider_hilos.rows import RowChecker, plain_conversation_id, reasons, row_label, validate_row
from airflow_provider_hilos.schemas import ValidatedUpdate, id_key
from airflow_provider_hilos.storage import AtomicText
from airflow_provider_hilos.sync.diff import (
    UNKNOWN,
    Action,
    CompareWith,
    ListMode,
    PlanEntry,
    mode_problem,
    plan_conversation,
)
from airflow_provider_hilos.sync.plan import PlanFile, PlanSummary
from airflow_provider_hilos.sync.state import Snapshot, SyncStateStore

if TYPE_CHECKING:
    from airflow_provider_hilos.batch.engine import BatchEngine, ReportTarget
    from airflow_provider_hilos.checkpoint import Checkpoint
    from airflow_provider_hilos.hooks.hilos import HilosHook
    from airflow_provider_hilos.transport import Log

#: How many invalid rows the plan file lists (all are counted).
_KEPT_INVALID = 10_000
#: The outcomes of the batch engine that leave a conversation as desired.
_DONE = ("updated", "already_applied")


@dataclass(frozen=True)
class SyncSettings:
    """How a sync compares and applies.

    :param compare_with: ``"hilos"``, ``"last_sync"`` or ``"nothing"``
        (:class:`~airflow_provider_hilos.sync.diff.CompareWith`).
    :param tags_mode: ``"replace"`` or ``"add"``.
    :param assigned_mode: ``"replace"`` or ``"add"``.
    :param send_not_found: send a desired conversation the listing did not show.
    :param page_size: rows per list page (``None``: the connection's).
    :param shown: how many diffs are logged in full and returned.
    """

    compare_with: CompareWith = CompareWith.HILOS
    tags_mode: ListMode = ListMode.REPLACE
    assigned_mode: ListMode = ListMode.REPLACE
    send_not_found: bool = False
    page_size: int | None = None
    shown: int = 20

    def problems(self) -> list[tuple[str, str]]:
        """What is wrong with this combination of settings (``add`` mode needs a listing)."""
        problems = []
        for name, mode in (("tags", self.tags_mode), ("assigned", self.assigned_mode)):
            if mode is ListMode.ADD and (
                problem := mode_problem(self.compare_with, name, send_not_found=self.send_not_found)
            ):
                problems.append((f"{name}_mode", problem))
        return problems


@dataclass(slots=True)
class _Desired:
    conversation_id: str
    fields: dict[str, NormalValue]
    row: int
    #: what the plan does with it (``None``: not decided yet)
    action: Action | None = None

    @property
    def decided(self) -> bool:
        return self.action is not None


class SyncRunner:
    """Runs one sync.

    :param hook: the Hilos hook (its quota, breaker and retries cover the reads and the writes).
    :param settings: how to compare and apply.
    :param options: the batch options of the apply phase.
    :param store: where the state between runs is kept (``None``: no state: ``last_sync`` then compares with
        nothing).
    :param log: where progress goes.
    :param keep_entries: keep every entry that is not ``unchanged`` (for the sync log in the warehouse).
    """

    def __init__(
        self,
        hook: HilosHook,
        settings: SyncSettings,
        options: BatchOptions,
        *,
        store: SyncStateStore | None,
        log: Log,
        keep_entries: bool = False,
    ) -> None:
        self.hook = hook
        self.settings = settings
        self.options = options
        self.store = store
        self.log = log
        self.summary = PlanSummary(shown_limit=settings.shown)
        self.desired: dict[int, _Desired] = {}
        self.updates: list[ValidatedUpdate] = []
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.read_requests = 0
        self.snapshot = Snapshot()
        self._plan = PlanFile(None)
        self._invalid: list[PlanEntry] = []
        self._keep_updates = True
        self.keep_entries = keep_entries
        #: the entries that are not unchanged (only with ``keep_entries``)
        self.entries: list[PlanEntry] = []
        #: the conversations whose update puts back a hand edit
        self.drifted: set[str] = set()
        #: the writes compare_with="last_sync" would have sent (see :meth:`costs`)
        self.last_sync_writes = 0
        self._started = time.monotonic()

    # -- 1. the desired state --

    def read_desired(self, rows: Iterator[tuple[int, Any]]) -> None:
        """Validate every desired row (a repeated conversation is invalid from its second row on).

        :raises HilosValidationError: invalid rows, unless the options skip them; nothing has been sent.
        """
        checker = RowChecker()
        invalid: list[PlanEntry] = []
        survey = Survey()
        for number, row in rows:
            survey.total += 1
            try:
                update = checker.check(number, row)
            except HilosValidationError as exc:
                survey.invalid += 1
                entry = PlanEntry(plain_conversation_id(row), Action.INVALID, reason=reasons(exc), row=number)
                if len(survey.listed) < MAX_LISTED_INVALID_ROWS:
                    survey.listed.append((f"row {number}{row_label(row)}", entry.reason))
                if len(invalid) < _KEPT_INVALID:  # the first ones go in the plan file; all are counted
                    invalid.append(entry)
                self.summary.add(entry)
                continue
            key = id_key(update.conversation_id)
            self.desired[key] = _Desired(update.conversation_id, normal_fields(update.body), number)
        self._invalid = invalid
        count = survey.invalid
        if refusal := validation_verdict(survey, self.options):  # the batch's rule, on the desired rows
            raise refusal
        self.log.info(
            "Hilos sync: %d desired conversation(s) read%s",
            len(self.desired),
            f", {count} invalid row(s) skipped" if count else "",
        )

    # -- 2. the plan --

    def plan(self, plan_file: AtomicText | None, *, keep_updates: bool = True) -> None:
        """Compare, and plan every desired conversation (written to ``plan_file`` as it goes).

        :param keep_updates: keep the updates to send (a dry run only counts them: its memory stays that of the
            desired state).
        """
        self._keep_updates = keep_updates
        if self.store is not None:
            self.snapshot = self.store.load()
            if self.snapshot.found:
                self.log.info(
                    "Hilos sync: the last run (%s) left %d conversation(s) in the snapshot, %d failed",
                    self.snapshot.run_id,
                    len(self.snapshot),
                    len(self.snapshot.failed),
                )
        stream = plan_file.open() if plan_file is not None else None
        self._plan = PlanFile(stream)
        try:
            for entry in self._invalid:
                self._plan.write(entry)
                if self.keep_entries:
                    self.entries.append(entry)
            if self.settings.compare_with is CompareWith.HILOS:
                self._plan_from_listing()
            else:
                for key, desired in self.desired.items():
                    self._decide(key, desired, current=None)
            if plan_file is not None:
                plan_file.commit()
        finally:
            if plan_file is not None:
                plan_file.abort()

    def _decide(self, key: int, desired: _Desired, *, current: Mapping[str, NormalValue] | None) -> None:
        failed = key in self.snapshot.failed
        previous = self.snapshot.fields_of(key)
        # what compare_with="last_sync" would have sent, for the plan's costs (counted as each is planned)
        if failed or previous is None or any(previous.get(k, UNKNOWN) != v for k, v in desired.fields.items()):
            self.last_sync_writes += 1
        entry = plan_conversation(
            desired.conversation_id,
            desired.fields,
            compare_with=self.settings.compare_with,
            current=current,
            previous=None if failed else previous,
            failed_before=failed,
            tags_mode=self.settings.tags_mode,
            assigned_mode=self.settings.assigned_mode,
            send_not_found=self.settings.send_not_found,
            row=desired.row,
        )
        if entry.action is Action.UPDATE:
            try:
                update = validate_row(entry.change_row())
                if self._keep_updates:
                    self.updates.append(update)
            except HilosValidationError as exc:  # e.g. a union of tags the API would refuse
                entry = PlanEntry(entry.conversation_id, Action.INVALID, reason=reasons(exc), row=desired.row)
        desired.action = entry.action
        self._record(entry)

    def _record(self, entry: PlanEntry) -> None:
        if entry.drift and entry.conversation_id:
            self.drifted.add(entry.conversation_id)
        self.summary.add(entry)
        self._plan.write(entry)
        if self.keep_entries and entry.action is not Action.UNCHANGED:
            self.entries.append(entry)

    def _plan_from_listing(self) -> None:
        pages = 0
        duplicates = 0
        size = self.settings.page_size or self.hook.settings.page_size

        def progress(listing: Any) -> None:
            nonlocal pages, duplicates
            pages, duplicates = listing.pages, listing.duplicates

        listed = 0
        for row in self.hook.iter_conversations(page_size=size, on_page=progress):
            listed += 1
            self._consider(row)
        self.read_requests += pages
        missing = sum(1 for d in self.desired.values() if not d.decided)
        self.log.info(
            "Hilos sync: read %d conversation(s) in %d page(s); %d desired conversation(s) not listed",
            listed,
            pages,
            missing,
        )
        if missing:
            self._look_again(size, duplicates)
        for key, desired in self.desired.items():
            if not desired.decided:
                self._decide(key, desired, current=None)

    def _consider(self, row: Any) -> None:
        cid = row.get("id") if isinstance(row, Mapping) else None
        try:
            key = id_key(cid) if isinstance(cid, str) and len(cid) == 36 else None
        except ValueError:
            key = None  # a row without a usable id: nothing the warehouse can name
        desired = None if key is None else self.desired.get(key)
        if key is not None and desired is not None and not desired.decided:
            self._decide(key, desired, current=row_fields(row))

    def _look_again(self, size: int, duplicates: int) -> None:
        """A listing by page number misses the conversations that moved to the front (new activity) while it ran,
        and each such move shows one row twice: re-read the front of the list, as many pages as that takes."""
        pages = max(1, math.ceil((duplicates + 1) / size) + 1)
        self.log.info("Hilos sync: looking again at the first %d page(s) for conversations that moved", pages)
        for page in range(1, pages + 1):
            try:
                answer = self.hook.list_conversations(page=page, page_size=size)
            except Exception as exc:
                status = getattr(exc, "status_code", None)
                if status == 404:
                    break
                raise
            self.read_requests += 1
            rows = answer.get("results") or []
            for row in rows:
                self._consider(row)
            if not answer.get("next") or all(d.decided for d in self.desired.values()):  # O(n) per page, few pages
                break

    # -- 3. apply --

    def apply(
        self,
        *,
        report: ReportTarget = None,
        checkpoint: Checkpoint | None = None,
        engine: Callable[[BatchEngine], None] | None = None,
    ) -> dict[str, Any] | None:
        """Send the plan's updates through the batch engine; the batch result (``None``: nothing to send).

        :raises HilosBatchError: the batch failed (the state is still kept: failed conversations are retried next run).
        """
        if not self.updates:
            return None
        sent_before = self.hook.transport.sent["PATCH"]
        try:
            result = self.hook.update_conversations(
                UpdatePipeline(self.updates),
                self.options,
                report=report,
                checkpoint=checkpoint,
                engine=engine,
                on_outcome=self._outcome,
            ).to_dict()
        except HilosBatchError:
            self.write_requests = self.hook.transport.sent["PATCH"] - sent_before
            raise
        self.write_requests = self.hook.transport.sent["PATCH"] - sent_before
        return result

    write_requests = 0

    def _outcome(self, record: dict[str, Any]) -> None:
        cid = record.get("conversation_id")
        if isinstance(cid, str):
            self.outcomes[cid] = record

    # -- 4. what the next run reads --

    def next_snapshot(self) -> Snapshot:
        """The snapshot the next run compares with: each desired conversation now as desired, with its desired
        fields; the ones whose update failed or was not sent keep their last good entry and are marked failed."""
        snapshot = Snapshot()
        for key, desired in self.desired.items():
            cid = desired.conversation_id
            previous = self.snapshot.entries.get(key)
            if desired.action is Action.UPDATE:
                if self.outcomes.get(cid, {}).get("outcome") in _DONE:
                    snapshot.entries[key] = (cid, desired.fields)
                else:  # failed, not sent, or the task stopped first: sent again next run, whatever it says
                    snapshot.entries[key] = previous if previous is not None else (cid, {})
                    snapshot.failed.add(key)
            elif desired.action is Action.UNCHANGED:
                snapshot.entries[key] = (cid, desired.fields)
            elif previous is not None:  # not found, or invalid: nothing new is known of it
                snapshot.entries[key] = previous
                if key in self.snapshot.failed:
                    snapshot.failed.add(key)
        return snapshot

    def save(self, run_id: str | None) -> None:
        """Keep the state for the next run (after every apply, successful or not)."""
        if self.store is not None:
            self.store.save(self.next_snapshot(), run_id=run_id)

    # -- the result --

    def counts(self, batch: Mapping[str, Any] | None) -> dict[str, Any]:
        """The result's counts (see the operator's ``:return:``)."""
        summary = self.summary
        failed = 0 if batch is None else int(batch.get("failed", 0)) + int(batch.get("not_sent", 0))
        updated = 0 if batch is None else int(batch.get("updated", 0)) + int(batch.get("already_applied", 0))
        return {
            "desired": len(self.desired) + summary.count(Action.INVALID),
            "unchanged": summary.count(Action.UNCHANGED),
            "to_update": summary.count(Action.UPDATE),
            "updated": updated,
            "failed": failed,
            "not_found": summary.count(Action.NOT_FOUND),
            "invalid": summary.count(Action.INVALID),
            # hand edits put back: the drift updates that landed (in a dry run, none)
            "drift_corrected": sum(1 for cid in self.drifted if self.outcomes.get(cid, {}).get("outcome") in _DONE),
            "drift_found": summary.drift_corrected,
            "retried_from_last_run": summary.retried,
            "read_requests": self.read_requests,
            "write_requests": self.write_requests,
            "duration_seconds": round(time.monotonic() - self._started, 3),
        }

    def costs(self) -> dict[str, dict[str, int | None]]:
        """What each compare mode costs (requests) for this desired state: the chosen one as measured, the others
        as estimated from the snapshot and the plan."""
        valid = len(self.desired)
        size = self.settings.page_size or self.hook.settings.page_size
        reads = self.read_requests if self.settings.compare_with is CompareWith.HILOS else None
        return {
            "hilos": {
                "reads": reads,
                "reads_at_least": math.ceil(valid / size) if valid else 0,
                "writes": self.summary.count(Action.UPDATE)
                if self.settings.compare_with is CompareWith.HILOS
                else None,
            },
            "last_sync": {"reads": 0, "writes": self.last_sync_writes},
            "nothing": {"reads": 0, "writes": valid},
        }
