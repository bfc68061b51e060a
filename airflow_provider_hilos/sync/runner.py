"""One sync run: read the desired state, read what to compare it with, plan, and apply the plan through the batch
engine; then keep the state for the next run and log every changed or failed conversation.

The order matters: every desired row is validated before the first request (bad input never half-syncs); with
``compare_with="hilos"`` every page is read before the first write (a write moves a conversation to the front of
the list, which would shift the pages still to read), and a conversation is planned only once the whole listing
is read (a conversation listed twice is compared with its later, newer copy).

Rows are named by their conversation id wherever they have one, and by their position in the desired state only
when they have none: a query's rows come in no stable order, so a position moves between runs.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_hilos.batch.options import BatchOptions, FailurePolicy
from airflow_provider_hilos.batch.pipeline import MAX_LISTED_INVALID_ROWS, Survey, UpdatePipeline
from airflow_provider_hilos.batch.verdict import allowed_failures, validation_verdict
from airflow_provider_hilos.batch.wording import SYNC_ROWS, SYNC_UPDATES
from airflow_provider_hilos.conversations import UNKNOWN, NormalValue, _Unknown, normal_fields, row_fields
from airflow_provider_hilos.exceptions import HilosBatchError, HilosValidationError
from airflow_provider_hilos.rows import RowChecker, reasons, validate_row
from airflow_provider_hilos.schemas import (
    ValidatedUpdate,
    canonical_conversation_id,
    conversation_id_problem,
    id_key,
    show,
)
from airflow_provider_hilos.storage import AtomicText
from airflow_provider_hilos.sync.diff import (
    Action,
    CompareWith,
    ListMode,
    PlanEntry,
    mode_problem,
    plan_conversation,
)
from airflow_provider_hilos.sync.plan import LOGGED_NOT_FOUND, PlanFile, PlanSummary
from airflow_provider_hilos.sync.state import Snapshot, SyncStateStore

if TYPE_CHECKING:
    from airflow_provider_hilos.batch.engine import BatchEngine, ReportTarget
    from airflow_provider_hilos.batch.report import OutcomeListener
    from airflow_provider_hilos.checkpoint import Checkpoint
    from airflow_provider_hilos.hooks.hilos import HilosHook, ListingProgress
    from airflow_provider_hilos.transport import Log

#: How many invalid rows the plan file and the sync log list (all are counted).
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
    :param plan_unchanged: list the unchanged conversations in the plan file too.
    """

    compare_with: CompareWith = CompareWith.HILOS
    tags_mode: ListMode = ListMode.REPLACE
    assigned_mode: ListMode = ListMode.REPLACE
    send_not_found: bool = False
    page_size: int | None = None
    shown: int = 20
    plan_unchanged: bool = False

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
    #: what Hilos listed for it (its latest copy), or ``None``: not listed
    current: dict[str, NormalValue | _Unknown] | None = None


def row_name(number: int, row: Any) -> str:
    """A desired row as messages name it: ``conversation <id>`` when it has a usable id, else ``row <n>`` (with
    the id as given, if any)."""
    raw = row.get("conversation_id") if isinstance(row, Mapping) else None
    if (canonical := canonical_conversation_id(raw)) is not None:
        return f"conversation {canonical}"
    return f"row {number}" + (f" (conversation_id {show(raw)})" if raw is not None else "")


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
        self.rows_read = 0
        #: the updates to send, each with its desired row's number
        self.updates: list[tuple[int, ValidatedUpdate]] = []
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.snapshot = Snapshot()
        self._plan = PlanFile(None)
        self._invalid: list[PlanEntry] = []
        self._keep_updates = True
        self.keep_entries = keep_entries
        #: the entries that are not unchanged (only with ``keep_entries``)
        self.entries: list[PlanEntry] = []
        #: the conversations whose update puts back a hand edit
        self.drifted: set[str] = set()
        #: the conversations found unreadable (not sent: they count as failed)
        self.unreadable: list[PlanEntry] = []
        #: the writes compare_with="last_sync" would have sent (see :meth:`costs`)
        self.last_sync_writes = 0
        #: desired conversations the listing did not show although it moved while it was read
        self.unseen_while_moving = 0
        #: where the plan was written (``None``: it was not)
        self.plan_path: str | None = None
        self._started = time.monotonic()
        self._sent_before: Counter[str] | None = None
        self._retried_before: Counter[str] | None = None
        self.listed = 0

    # -- 1. the desired state --

    def read_desired(self, rows: Iterator[tuple[int, Any]]) -> None:
        """Validate every desired row. A conversation in several rows is invalid in all of them (which one should
        win is not known); a row whose managed cells are all NULL manages nothing (it is unchanged).

        :raises HilosValidationError: invalid rows, unless the options skip them; nothing has been sent.
        """
        checker = RowChecker(refuse_repeats=False)
        survey = Survey()
        repeated: dict[int, list[int]] = {}
        for number, row in rows:
            survey.total += 1
            try:
                cid, fields = _checked(checker, number, row)
            except HilosValidationError as exc:
                self._invalid_row(survey, number, row, canonical_conversation_id(_raw_id(row)), reasons(exc))
                continue
            key = id_key(cid)
            if key in repeated:
                repeated[key].append(number)
                continue
            earlier = self.desired.get(key)
            if earlier is not None:
                repeated[key] = [earlier.row, number]
                continue
            self.desired[key] = _Desired(cid, fields, number)
        for key, numbers in repeated.items():
            cid = self.desired.pop(key).conversation_id
            why = (
                f"conversation_id: {cid} is in {len(numbers)} rows of the desired state (rows "
                f"{', '.join(map(str, numbers[:10]))}{', ...' if len(numbers) > 10 else ''}); keep one row per "
                "conversation: none of them is synced, as which one should win is not known"
            )
            for number in numbers:
                self._invalid_row(survey, number, None, cid, why)
        self.rows_read = survey.total
        if refusal := validation_verdict(survey, self.options, SYNC_ROWS):  # the batch's rule, the sync's words
            raise refusal
        count = survey.invalid
        self.log.info(
            "Hilos sync: %d desired conversation(s) read%s",
            len(self.desired),
            f", {count} invalid row(s) skipped" if count else "",
        )

    def _invalid_row(self, survey: Survey, number: int, row: Any, cid: str | None, why: str) -> None:
        survey.invalid += 1
        name = f"conversation {cid}" if cid else row_name(number, row)
        if len(survey.listed) < MAX_LISTED_INVALID_ROWS:
            survey.listed.append((name, why))
        raw = _raw_id(row)
        entry = PlanEntry(cid or (raw if isinstance(raw, str) else None), Action.INVALID, reason=why, row=number)
        if len(self._invalid) < _KEPT_INVALID:  # the first ones go in the plan file and the log; all are counted
            self._invalid.append(entry)
        self.summary.add(entry)

    @property
    def invalid_entries(self) -> list[PlanEntry]:
        """The invalid rows kept (the first 10,000), for the sync log of a refused run."""
        return list(self._invalid)

    # -- 2. the plan --

    def plan(self, plan_file: AtomicText | None, *, keep_updates: bool = True) -> None:
        """Compare, and plan every desired conversation (written to ``plan_file``: every entry that is not
        unchanged, the unchanged ones too with ``plan_unchanged``).

        :param keep_updates: keep the updates to send (a dry run only counts them: its memory stays that of the
            desired state).
        :raises HilosValidationError: conversations that became invalid while planning (a union of tags the API would
            refuse), unless the options skip invalid rows: nothing has been sent.
        """
        self._keep_updates = keep_updates
        self._count_requests_from_here()
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
        self._plan = PlanFile(stream, unchanged=self.settings.plan_unchanged)
        try:
            for entry in self._invalid:
                self._plan.write(entry)
                if self.keep_entries:
                    self.entries.append(entry)
            if self.settings.compare_with is CompareWith.HILOS:
                self._read_hilos()
            for key, desired in self.desired.items():
                self._decide(key, desired)
            if plan_file is not None:
                plan_file.commit()
                self.plan_path = str(plan_file.target)
        finally:
            if plan_file is not None:
                plan_file.abort()
        self._judge_plan()

    def _judge_plan(self) -> None:
        """A row that became invalid while planning gets the verdict of an invalid input row (A4): nothing is sent
        unless invalid rows may be skipped."""
        invalid = self.summary.count(Action.INVALID)
        planned = [e for e in self._invalid if e.reason and e.action is Action.INVALID]
        if not invalid:
            return
        survey = Survey(total=self.rows_read, invalid=invalid)
        survey.listed = [
            (f"conversation {e.conversation_id}" if e.conversation_id else f"row {e.row}", e.reason)
            for e in planned[:MAX_LISTED_INVALID_ROWS]
        ]
        if refusal := validation_verdict(survey, self.options, SYNC_ROWS):
            raise refusal

    def _decide(self, key: int, desired: _Desired) -> None:
        failed = key in self.snapshot.failed
        previous = self.snapshot.fields_of(key)
        # what compare_with="last_sync" would have sent, for the plan's costs (counted as each is planned)
        if failed or previous is None or any(previous.get(k, UNKNOWN) != v for k, v in desired.fields.items()):
            self.last_sync_writes += 1 if desired.fields else 0
        entry = plan_conversation(
            desired.conversation_id,
            desired.fields,
            compare_with=self.settings.compare_with,
            current=desired.current,
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
                    self.updates.append((desired.row, update))
            except HilosValidationError as exc:  # e.g. a union of tags the API would refuse
                entry = PlanEntry(entry.conversation_id, Action.INVALID, reason=reasons(exc), row=desired.row)
                if len(self._invalid) < _KEPT_INVALID:
                    self._invalid.append(entry)
        desired.action = entry.action
        if entry.action is Action.UNREADABLE:
            self.unreadable.append(entry)
        self._record(entry)

    def _record(self, entry: PlanEntry) -> None:
        if entry.drift and entry.conversation_id:
            self.drifted.add(entry.conversation_id)
        self.summary.add(entry)
        self._plan.write(entry)
        if self.keep_entries and entry.action is not Action.UNCHANGED:
            self.entries.append(entry)

    def _read_hilos(self) -> None:
        size = self.settings.page_size or self.hook.settings.page_size
        listing: list[ListingProgress] = []
        seen: set[int] = set()
        for row in self.hook.iter_conversations(page_size=size, on_page=_keep_last(listing), repeats=True):
            self.listed += 1
            self._consider(row, seen)
        pages = listing[-1].pages if listing else 0
        duplicates = listing[-1].duplicates if listing else 0
        missing = sum(1 for d in self.desired.values() if d.current is None)
        self.log.info(
            "Hilos sync: read %d conversation(s) in %d page(s); %d desired conversation(s) not listed",
            len(seen),
            pages,
            missing,
        )
        if missing:
            self._look_again(size, duplicates, pages, seen)

    def _consider(self, row: Any, seen: set[int]) -> bool:
        """A listed row: the latest copy of a desired conversation is what it is compared with. Whether the row is
        one not seen before."""
        cid = canonical_conversation_id(row.get("id")) if isinstance(row, Mapping) else None
        if cid is None:
            return False  # a row without a canonical UUID: nothing the warehouse can name (never matched)
        key = id_key(cid)
        new = key not in seen
        seen.add(key)
        desired = self.desired.get(key)
        if desired is not None:
            desired.current = row_fields(row)
        return new

    def _look_again(self, size: int, duplicates: int, pages: int, seen: set[int]) -> None:
        """A listing by page number misses the conversations that moved to the front (new activity) while it ran,
        and each such move shows one row twice: read the front of the list again until a page brings no
        conversation not seen before (at least as many pages as the repeats seen; at most twice the first pass and
        that many more: the list keeps moving while it is read again, so a churning list needs more pages than it
        has), and say how many desired conversations could still not be seen."""
        missing = {key for key, d in self.desired.items() if d.current is None}
        minimum = duplicates // size + 1
        most = minimum + 2 * pages
        state = _LookAgain()

        def on_page(progress: ListingProgress) -> None:
            state.pages += 1
            if not missing or state.pages >= most or (state.pages >= minimum and state.new == 0):
                state.stop = True
            state.new = 0

        while not state.stop:  # a round reaching the end of the list with new rows found starts again at page 1
            state.round_new = 0
            listing = self.hook.iter_conversations(page_size=size, on_page=on_page, repeats=True)
            try:
                for row in listing:
                    if state.stopped():
                        break
                    if self._consider(row, seen):
                        state.new += 1
                        state.round_new += 1
                    cid = canonical_conversation_id(row.get("id")) if isinstance(row, Mapping) else None
                    if cid is not None:
                        missing.discard(id_key(cid))
            finally:
                close = getattr(listing, "close", None)
                if close is not None:
                    close()  # the generator stops its read-ahead
            if not state.round_new:
                break
        still = len(missing)
        self.log.info(
            "Hilos sync: read the front of the list again (%d page(s)): %d desired conversation(s) still not listed",
            state.pages,
            still,
        )
        if still and duplicates:
            self.unseen_while_moving = still
            self.log.warning(
                "Hilos sync: %d desired conversation(s) were not seen although the list moved while it was read (%d "
                "row(s) shown twice): Hilos may well hold them; they are reported not_found, and the next run looks "
                "for them again",
                still,
                duplicates,
            )

    # -- 3. the apply --

    def apply(
        self,
        *,
        report: ReportTarget = None,
        checkpoint: Checkpoint | None = None,
        engine: Callable[[BatchEngine], None] | None = None,
        on_outcome: OutcomeListener | None = None,
    ) -> dict[str, Any]:
        """Send the plan's updates through the batch engine (only the fields that differ).

        :param on_outcome: also told each update's outcome record as it arrives (the pending sync log).
        :raises HilosBatchError: the batch's failure policy failed it (the outcomes are kept first).
        """
        if not self._keep_updates:
            raise RuntimeError("plan(keep_updates=False) was a dry run: there is nothing to apply")

        def told(record: dict[str, Any]) -> None:
            self._outcome(record)
            if on_outcome is not None:
                on_outcome(record)

        pipeline = UpdatePipeline(self.updates, total=len(self.updates), numbered=True)
        try:
            result = self.hook.update_conversations(
                pipeline,
                self.options,
                report=report,
                checkpoint=checkpoint,
                engine=engine,
                on_outcome=told,
                words=SYNC_UPDATES,
            ).to_dict()
        except HilosBatchError as exc:
            exc.result = self._with_unreadable(exc.result)
            raise
        result = self._with_unreadable(result)
        if failure := self._unreadable_verdict(result):
            raise failure
        return result

    def _with_unreadable(self, result: dict[str, Any]) -> dict[str, Any]:
        """The batch's result with the unreadable conversations among its failed rows (they were not sent)."""
        if self.unreadable:
            rows = [
                {"row": e.row, "conversation_id": e.conversation_id, "status_code": None, "error": e.reason}
                for e in self.unreadable[: self.options.max_failed_rows]
            ]
            result = {**result, "failed_rows": [*result.get("failed_rows", []), *rows]}
        return result

    def _unreadable_verdict(self, result: Mapping[str, Any]) -> HilosBatchError | None:
        """Conversations Hilos listed unreadably count as failed for the failure policy (retryable: the next run or
        try lists them again)."""
        unreadable = len(self.unreadable)
        if not unreadable or self.options.policy is FailurePolicy.NEVER:
            return None
        failed = int(result.get("failed", 0)) + int(result.get("not_sent", 0)) + unreadable
        allowed = allowed_failures(self.options, len(self.updates) + unreadable)
        if failed <= allowed:
            return None
        first = "; ".join(f"conversation {e.conversation_id}" for e in self.unreadable[:5])
        return HilosBatchError(
            f"Hilos sync failed: {unreadable} conversation(s) could not be compared, as Hilos listed them without a "
            f"field add mode needs ({first}); {failed} of {len(self.updates) + unreadable} update(s) failed in all "
            f"(allowed: {allowed}, max_failed_ratio={self.options.max_failed_ratio}). They are sent next run",
            result=dict(result),
        )

    def _outcome(self, record: dict[str, Any]) -> None:
        cid = record.get("conversation_id")
        if isinstance(cid, str):
            self.outcomes[cid] = record

    # -- 4. what the next run reads --

    def next_snapshot(self) -> Snapshot:
        """The snapshot the next run compares with: each desired conversation now as desired, with its desired
        fields; the ones whose update failed or was not sent, or that were unreadable, keep their last good entry
        and are marked failed."""
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
            elif desired.action is Action.UNREADABLE:
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

    def _count_requests_from_here(self) -> None:
        if self._sent_before is None:
            self._sent_before = Counter(self.hook.transport.sent)
            self._retried_before = Counter(self.hook.transport.retried)

    def requests(self) -> dict[str, int]:
        """Every request this run sent, by kind (retries included), and how many of them were retries."""
        if self._sent_before is None:
            return {"read_requests": 0, "write_requests": 0, "retried_requests": 0}
        transport = self.hook.transport
        sent = Counter(transport.sent)
        sent.subtract(self._sent_before)
        retried = Counter(transport.retried)
        retried.subtract(self._retried_before or Counter())
        return {
            "read_requests": sent["GET"],
            "write_requests": sent["PATCH"],
            "retried_requests": sum(n for n in retried.values() if n > 0),
        }

    def counts(self, batch: Mapping[str, Any] | None, *, dry_run: bool = False) -> dict[str, Any]:
        """The result's counts (see the operator's ``:return:``): what the plan found, then, unless ``dry_run``,
        what the apply did (``updated``, ``failed``, ``drift_corrected``: a dry run did none of it)."""
        summary = self.summary
        counts: dict[str, Any] = {
            "desired": self.rows_read,
            "unchanged": summary.count(Action.UNCHANGED),
            "to_update": summary.count(Action.UPDATE),
            "not_found": summary.count(Action.NOT_FOUND),
            "invalid": summary.count(Action.INVALID),
            "unreadable": summary.count(Action.UNREADABLE),
            # planned updates that put back a hand edit
            "drift_found": summary.drift_found,
            "retried_from_last_run": summary.retried,
        }
        if not dry_run:
            failed = 0 if batch is None else int(batch.get("failed", 0)) + int(batch.get("not_sent", 0))
            updated = 0 if batch is None else int(batch.get("updated", 0)) + int(batch.get("already_applied", 0))
            counts["updated"] = updated
            counts["failed"] = failed + len(self.unreadable)
            # hand edits put back: the drift updates that landed
            counts["drift_corrected"] = sum(
                1 for cid in self.drifted if self.outcomes.get(cid, {}).get("outcome") in _DONE
            )
        counts.update(self.requests())
        counts["duration_seconds"] = round(time.monotonic() - self._started, 3)
        return counts

    def costs(self) -> dict[str, dict[str, int | None]]:
        """What each compare mode costs (requests) for this desired state: the chosen one as measured, the others
        as estimated from the snapshot and the plan."""
        valid = len(self.desired)
        size = self.settings.page_size or self.hook.settings.page_size
        hilos = self.settings.compare_with is CompareWith.HILOS
        return {
            "hilos": {
                "reads": self.requests()["read_requests"] if hilos else None,
                "reads_at_least": math.ceil(valid / size) if valid else 0,
                "writes": self.summary.count(Action.UPDATE) if hilos else None,
            },
            "last_sync": {"reads": 0, "writes": self.last_sync_writes},
            "nothing": {"reads": 0, "writes": sum(1 for d in self.desired.values() if d.fields)},
        }

    def not_found_names(self, limit: int = LOGGED_NOT_FOUND) -> list[str]:
        """The first ``limit`` desired conversations Hilos did not list."""
        return [d.conversation_id for d in self.desired.values() if d.action is Action.NOT_FOUND][:limit]


@dataclass
class _LookAgain:
    """How far the second look at the front of the list got."""

    pages: int = 0
    new: int = 0
    round_new: int = 0
    stop: bool = False

    def stopped(self) -> bool:
        return self.stop


def _raw_id(row: Any) -> Any:
    return row.get("conversation_id") if isinstance(row, Mapping) else None


def _checked(checker: RowChecker, number: int, row: Any) -> tuple[str, dict[str, NormalValue]]:
    """The canonical id and the managed fields (normal form) of one desired row; a row whose managed cells are all
    NULL (only its id is left) manages nothing.

    :raises HilosValidationError: the row is invalid.
    """
    if isinstance(row, Mapping) and "conversation_id" in row and len(row) == 1:
        canonical = canonical_conversation_id(row["conversation_id"])
        if canonical is None:
            problem = conversation_id_problem(row["conversation_id"]) or "is not a conversation UUID"
            raise HilosValidationError([("conversation_id", problem)], "Invalid row")
        return canonical, {}
    update = checker.check(number, row)
    return update.conversation_id, normal_fields(update.body)


def _keep_last(into: list[ListingProgress]) -> Callable[[ListingProgress], None]:
    def keep(progress: ListingProgress) -> None:
        into[:] = [progress]

    return keep
