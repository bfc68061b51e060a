"""One sync run, for any object (:mod:`~airflow_provider_hilos.sync.objects`): read the desired state, read what to
compare it with, plan, and apply the plan through the batch engine; then keep the state for the next run and log
every changed or failed object.

The order matters: every desired row is validated before the first request (bad input never half-syncs); with
``compare_with="hilos"`` every page is read before the first write (a write moves an object to the front of the
list, which would shift the pages still to read), and an object is planned only once the whole listing is read (an
object listed twice is compared with its later, newer copy).

Memory does not grow with the account: the desired rows, the listed ones, the last state, the plan and the outcomes
are joined by key in the run's work database (:class:`~airflow_provider_hilos.sync.work.WorkStore`, an embedded
SQLite file in the task's temporary folder); Python holds a page or a chunk at a time, and the plan's summary.

Rows are named by their key wherever they have one, and by their position in the desired state only when they have
none: a query's rows come in no stable order, so a position moves between runs.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_hilos.batch.options import BatchOptions, FailurePolicy
from airflow_provider_hilos.batch.pipeline import MAX_LISTED_INVALID_ROWS, Survey, UpdatePipeline
from airflow_provider_hilos.batch.verdict import allowed_failures, validation_verdict
from airflow_provider_hilos.exceptions import HilosBatchError, HilosValidationError
from airflow_provider_hilos.resources.paging import ListingProgress
from airflow_provider_hilos.rows import reasons
from airflow_provider_hilos.schemas import canonical_conversation_id, show
from airflow_provider_hilos.storage import AtomicText
from airflow_provider_hilos.sync.diff import (
    WRITING,
    Action,
    CompareWith,
    ListMode,
    PlanEntry,
    mode_problem,
)
from airflow_provider_hilos.sync.guard import PlanSize, plan_digest, row_hash
from airflow_provider_hilos.sync.objects import NotWritable, SyncObject
from airflow_provider_hilos.sync.objects.conversation import ConversationObject
from airflow_provider_hilos.sync.plan import LOGGED_NOT_FOUND, PlanFile, PlanSummary, entry_record
from airflow_provider_hilos.sync.state import SyncStateStore
from airflow_provider_hilos.sync.work import CHUNK, WorkStore, unpack

if TYPE_CHECKING:
    from airflow_provider_hilos.batch.engine import BatchEngine, ReportTarget
    from airflow_provider_hilos.batch.report import OutcomeListener
    from airflow_provider_hilos.checkpoint import Checkpoint
    from airflow_provider_hilos.hooks.hilos import HilosHook
    from airflow_provider_hilos.people import PeopleResolver
    from airflow_provider_hilos.transport import Log

#: How many invalid rows the plan file and the sync log list (all are counted).
_KEPT_INVALID = 10_000
#: Why a write was held back after an approval.
HELD_BACK = (
    "not sent: what it would write is not what was approved (the object changed in Hilos or in the warehouse since "
    "the plan was approved); the next run plans it again"
)
_UNCHANGED = Action.UNCHANGED.value
#: The outcomes of the batch engine that leave an object as desired.
_DONE = ("updated", "created", "deleted", "already_applied")


@dataclass(frozen=True)
class SyncSettings:
    """How a sync compares and applies.

    :param compare_with: ``"hilos"``, ``"last_sync"`` or ``"nothing"``
        (:class:`~airflow_provider_hilos.sync.diff.CompareWith`).
    :param tags_mode: (conversations) ``"replace"`` or ``"add"``.
    :param assigned_mode: (conversations) ``"replace"`` or ``"add"``.
    :param send_not_found: (conversations) send a desired conversation the listing did not show.
    :param page_size: rows per list page (``None``: the connection's).
    :param shown: how many diffs are logged in full and returned.
    :param plan_unchanged: list the unchanged objects in the plan file too.
    :param list_concurrency: list pages read at once (under the connection's quota).
    """

    compare_with: CompareWith = CompareWith.HILOS
    tags_mode: ListMode = ListMode.REPLACE
    assigned_mode: ListMode = ListMode.REPLACE
    send_not_found: bool = False
    page_size: int | None = None
    shown: int = 20
    plan_unchanged: bool = False
    list_concurrency: int = 4

    def problems(self) -> list[tuple[str, str]]:
        """What is wrong with this combination of settings (``add`` mode needs a listing)."""
        problems = []
        for name, mode in (("tags", self.tags_mode), ("assigned", self.assigned_mode)):
            if mode is ListMode.ADD and (
                problem := mode_problem(self.compare_with, name, send_not_found=self.send_not_found)
            ):
                problems.append((f"{name}_mode", problem))
        return problems


def row_name(number: int, row: Any, key_column: str = "conversation_id") -> str:
    """A desired row as messages name it: ``conversation <id>`` when it has a usable id, else ``row <n>`` (with the
    key as given, if any)."""
    raw = row.get(key_column) if isinstance(row, Mapping) else None
    if key_column == "conversation_id" and (canonical := canonical_conversation_id(raw)) is not None:
        return f"conversation {canonical}"
    return f"row {number}" + (f" ({key_column} {show(raw)})" if raw is not None else "")


def peak_memory_mb() -> float:
    """The process's peak resident memory, in MB: Linux's ``VmHWM`` (the peak of this program: a process started
    from a large one does not inherit its figure, as ``getrusage`` has it across ``exec``), else ``getrusage``
    (Linux counts kilobytes, macOS bytes)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 2**10, 1)
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def last_sync_would_write(desired: Mapping[str, Any], previous: Mapping[str, Any] | None, *, failed: bool) -> bool:
    """Whether ``compare_with="last_sync"`` would have written this object (for the plan's costs): it manages a field,
    and its last write failed, or the last snapshot lacks it or holds another value for a managed field."""
    return bool(desired) and (failed or previous is None or any(previous.get(k) != v for k, v in desired.items()))


class _ListingSeen:
    """What the listing has seen, kept in the work database: each page's rows are read once into it (the latest
    copy of each key of interest, the key alone for the others), and which of them are new is counted."""

    def __init__(self, runner: SyncRunner) -> None:
        self.runner = runner
        self.new_desired = 0
        self.new_rows = 0
        self.keyless = 0

    def fresh(self, rows: Sequence[Any]) -> list[bool]:
        obj, work = self.runner.obj, self.runner.work
        parsed = [obj.listed_key(row) for row in rows]
        keys = [key for key, _ in parsed if key is not None]
        desired, managed, before = work.of_interest(keys)
        listed: list[tuple[str, str | None, dict[str, Any] | None, int]] = []
        flags = []
        for row, (key, oid) in zip(rows, parsed, strict=True):
            if key is None:
                flags.append(True)  # nothing the warehouse can name: never a repeat (and never matched)
                self.keyless += 1
                continue
            new = key not in before
            flags.append(new)
            if new:
                before.add(key)
                self.new_rows += 1
                self.new_desired += key in desired
            fields, same = None, 0
            if key in desired or key in managed:
                fields = obj.listed_fields(row)
                if key in desired:
                    same = self._same(desired[key], fields, managed.get(key))
            listed.append((key, oid, fields, same))
        work.add_listed(listed)
        self.runner.listed += len(rows)
        return flags

    def _same(self, blob: bytes, current: dict[str, Any], previous: tuple[bytes | None, bool] | None) -> int:
        """Whether this copy shows a desired object already as desired (the plan's common case, decided as the page
        arrives so that the object's fields are neither kept nor read again): 0 no, 1 yes, 2 yes but
        ``compare_with="last_sync"`` would have written it (for the plan's costs). A later copy decides again."""
        desired = unpack(blob) or {}
        failed = previous is not None and previous[1]
        if not self.runner.obj.already_as_desired(desired, current, failed):
            return 0
        last = None if previous is None else unpack(previous[0])
        return 2 if last_sync_would_write(desired, last, failed=False) else 1


class SyncRunner:
    """Runs one sync.

    :param hook: the Hilos hook (its quota, breaker and retries cover the reads and the writes).
    :param settings: how to compare and apply.
    :param options: the batch options of the apply phase.
    :param store: where the state between runs is kept (``None``: no state: ``last_sync`` then compares with
        nothing).
    :param log: where progress goes.
    :param obj: what is synced (default: conversations, with the settings' modes).
    :param people: resolves agents given by email and teams given by name (``None``: ids only).
    :param work_dir: where the run's work database goes (default: the system's temporary folder).
    """

    def __init__(
        self,
        hook: HilosHook,
        settings: SyncSettings,
        options: BatchOptions,
        *,
        store: SyncStateStore | None,
        log: Log,
        obj: SyncObject | None = None,
        people: PeopleResolver | None = None,
        keep_entries: bool = False,
        work_dir: str | None = None,
    ) -> None:
        self.hook = hook
        self.settings = settings
        self.options = options
        self.store = store
        self.log = log
        self.obj = obj or ConversationObject(
            tags_mode=settings.tags_mode, assigned_mode=settings.assigned_mode, send_not_found=settings.send_not_found
        )
        self.people = people
        self.keep_entries = keep_entries
        self.id_field = self.obj.id_field
        self.summary = PlanSummary(shown_limit=settings.shown, key_field=self.obj.key_column, id_field=self.id_field)
        self.work = WorkStore(work_dir)
        if self.work.swept:
            log.info(
                "Hilos sync: removed %d work folder(s) that killed runs on this host left behind: %s",
                len(self.work.swept),
                ", ".join(self.work.swept[:5]),
            )
        self.rows_read = 0
        self.outcomes: dict[str, dict[str, Any]] = {}
        #: invalid rows, as read (the first 10,000), and those that became invalid while planning (in the plan table)
        self._read_invalid: list[PlanEntry] = []
        self._plan_invalid: list[PlanEntry] = []
        self._keep_updates = True
        #: the writes' count (the apply's total)
        self.write_count = 0
        #: the objects found unreadable (not sent: they count as failed)
        self.unreadable: list[PlanEntry] = []
        #: the writes compare_with="last_sync" would have sent (see :meth:`costs`)
        self.last_sync_writes = 0
        #: desired objects the listing did not show although it moved while it was read
        self.unseen_while_moving = 0
        #: where the plan was written (``None``: it was not)
        self.plan_path: str | None = None
        self.previous = (0, 0)
        self.previous_run: str | None = None
        self.listed = 0
        self._started = time.monotonic()
        #: seconds from the first desired row read to the plan written (``None``: not planned yet)
        self.plan_seconds: float | None = None
        #: planned writes not sent because they were not the approved ones (:meth:`keep_only_approved`)
        self.held_back = 0
        self._sent_before: Counter[str] | None = None
        self._retried_before: Counter[str] | None = None

    def close(self) -> None:
        """Remove the run's work database."""
        self.work.close()

    # -- 1. the desired state --

    def read_desired(self, rows: Iterator[tuple[int, Any]]) -> None:
        """Validate every desired row. An object in several rows is invalid in all of them (which one should win is
        not known); a row whose managed cells are all NULL manages nothing.

        :raises HilosValidationError: invalid rows, unless the options skip them; nothing has been sent.
        """
        obj = self.obj
        survey = Survey()
        with self.work.transaction():
            chunk: list[tuple[int, str, dict[str, Any]]] = []
            for number, row in rows:
                survey.total += 1
                if self.people is not None and isinstance(row, Mapping):
                    row, problems = self.people.resolve(row)
                    if problems:
                        self._invalid_row(survey, number, row, None, "; ".join(f"{f}: {m}" for f, m in problems))
                        continue
                try:
                    key, fields = obj.desired(number, row)
                except HilosValidationError as exc:
                    self._invalid_row(survey, number, row, None, reasons(exc))
                    continue
                chunk.append((number, key, fields))
                if len(chunk) >= CHUNK:
                    self.work.add_desired(chunk)
                    chunk = []
            if chunk:
                self.work.add_desired(chunk)
            for key, numbers in self.work.finish_desired():
                why = (
                    f"{obj.key_column}: {key} is in {len(numbers)} rows of the desired state (rows "
                    f"{', '.join(map(str, numbers[:10]))}{', ...' if len(numbers) > 10 else ''}); keep one row per "
                    f"{obj.name}: none of them is synced, as which one should win is not known"
                )
                for number in numbers:
                    self._invalid_row(survey, number, None, key, why)
        self.rows_read = survey.total
        if refusal := validation_verdict(survey, self.options, obj.rows_words):
            raise refusal
        count = survey.invalid
        self.log.info(
            "Hilos sync: %d desired %s(s) read%s",
            self.work.desired_count(),
            obj.name,
            f", {count} invalid row(s) skipped" if count else "",
        )

    def _invalid_row(self, survey: Survey, number: int, row: Any, key: str | None, why: str) -> None:
        survey.invalid += 1
        name = f"{self.obj.name} {key}" if key else row_name(number, row, self.obj.key_column)
        if len(survey.listed) < MAX_LISTED_INVALID_ROWS:
            survey.listed.append((name, why))
        raw = row.get(self.obj.key_column) if isinstance(row, Mapping) else None
        if key is None and self.obj.key_column == "conversation_id":
            key = canonical_conversation_id(raw)
        entry = PlanEntry(key or (raw if isinstance(raw, str) else None), Action.INVALID, reason=why, row=number)
        if len(self._read_invalid) < _KEPT_INVALID:  # the first ones go in the plan file and the log; all are counted
            self._read_invalid.append(entry)
        self.summary.add(entry)

    @property
    def invalid_entries(self) -> list[PlanEntry]:
        """The invalid rows kept (the first 10,000 read, and those that became invalid while planning), for the sync
        log of a refused run."""
        return [*self._read_invalid, *self._plan_invalid]

    # -- 2. the plan --

    def plan(self, plan_file: AtomicText | None, *, keep_updates: bool = True) -> None:
        """Compare, and plan every desired object; write the plan to ``plan_file`` (every entry that is not
        unchanged, the unchanged ones too with ``plan_unchanged``).

        :param keep_updates: keep the writes to send (a dry run only counts them).
        :raises HilosValidationError: objects that became invalid while planning (a union of tags the API would
            refuse), unless the options skip invalid rows: nothing has been sent. (The guard judges the plan
            afterwards: :meth:`plan_size`, :meth:`digest`.)
        """
        self._keep_updates = keep_updates
        self._count_requests_from_here()
        with self.work.transaction():  # a million keys in random order: one commit, not one a page
            if self.store is not None:
                header, entries = self.store.read()
                if header is not None:
                    self.previous_run = header.run_id
                    self.work.add_previous(entries)
                    self.previous = self.work.previous_count()
                    self.log.info(
                        "Hilos sync: the last run (%s) left %d %s(s) in the snapshot, %d failed",
                        header.run_id,
                        self.previous[0],
                        self.obj.name,
                        self.previous[1],
                    )
            if self.settings.compare_with is CompareWith.HILOS:
                self._read_hilos()
            self._decide_all()
            if self.obj.mirrors:
                self._plan_deletes()
        self._write_plan(plan_file)
        self.plan_seconds = time.monotonic() - self._started
        self.log.info("Hilos sync: %s", self.size_line())
        self._judge_plan()

    def _decide_all(self) -> None:
        obj, compare_with = self.obj, self.settings.compare_with
        batch: list[tuple[str, int, str, bool, str | None, Any, str | None]] = []
        recorded = self.settings.plan_unchanged  # each unchanged object gets its record in the plan
        if not recorded:  # the objects listed already as desired are unchanged: counted, not read one by one
            as_desired, would_write = self.work.same_counts()
            self.summary.add_unchanged(as_desired)
            self.last_sync_writes += would_write
        for n, key, desired, oid, current, previous, pid, failed, same in self.work.plan_rows(same=recorded):
            if len(batch) >= CHUNK:
                self.work.add_plan(batch)
                batch = []
            if same:  # listed already as desired (see _ListingSeen._same)
                self.last_sync_writes += same == 2
                unchanged = PlanEntry(key, Action.UNCHANGED, row=n, object_id=oid or pid)
                planned = self._planned(unchanged, None, {})
                if planned[4] is not None:  # plan_unchanged: its record
                    batch.append(planned)
                continue
            assert desired is not None
            # what compare_with="last_sync" would have sent, for the plan's costs (counted as each is planned)
            self.last_sync_writes += last_sync_would_write(desired, previous, failed=failed)
            entry = obj.plan(
                key,
                desired,
                compare_with=compare_with,
                current=current,
                previous=None if failed else previous,
                failed_before=failed,
                row=n,
                object_id=oid or pid,
            )
            planned = self._planned(entry, current, desired)
            if planned[2] != _UNCHANGED or planned[4] is not None:  # an unchanged object without a record: no row
                batch.append(planned)
        if batch:
            self.work.add_plan(batch)
        self.work.planned()

    def _planned(
        self, entry: PlanEntry, current: Mapping[str, Any] | None, desired: Mapping[str, Any]
    ) -> tuple[str, int, str, bool, str | None, Any, str | None]:
        """An entry recorded: its write made (an invalid write makes the entry invalid, an unwritable one
        unreadable) and hashed (the plan's digest), counted in the summary."""
        write = hashed = None
        if entry.action in WRITING:
            try:
                stored = self.obj.stored(self.obj.write(entry, current=current, desired=desired))
                hashed = row_hash(entry.key or "", entry.action.value, stored)
                write = stored if self._keep_updates else None
                self.write_count += 1
            except HilosValidationError as exc:  # e.g. a union of tags the API would refuse
                entry = PlanEntry(entry.key, Action.INVALID, reason=reasons(exc), row=entry.row)
                if len(self._plan_invalid) < _KEPT_INVALID:
                    self._plan_invalid.append(entry)
            except NotWritable as exc:
                entry = PlanEntry(
                    entry.key, Action.UNREADABLE, reason=str(exc), row=entry.row, object_id=entry.object_id
                )
        if entry.action is Action.UNREADABLE:
            self.unreadable.append(entry)
        self.summary.add(entry)
        record = None
        if entry.action is not Action.UNCHANGED or self.settings.plan_unchanged:
            record = json.dumps(entry_record(entry, self.obj.key_column, self.id_field), ensure_ascii=False)
        return (entry.key or "", entry.row, entry.action.value, entry.drift, record, write, hashed)

    def _plan_deletes(self) -> None:
        """A mirror: every object this sync created or managed that left the desired state and Hilos still lists is
        deleted; one it never managed never is. (The guard, :mod:`~airflow_provider_hilos.sync.guard`, judges the
        deletes against ``max_deletes`` and ``max_delete_ratio`` with the other limits, before any write.)"""
        batch = []
        for key, oid, current, _ in self.work.managed_not_desired():
            if current is None or oid is None:
                continue  # not listed: already gone
            entry = PlanEntry(
                key,
                Action.DELETE,
                reason="this sync managed it, and it left the desired state (mode='mirror')",
                object_id=oid,
            )
            batch.append(self._planned(entry, current, {}))
        self.work.add_plan(batch)

    # -- the guard --

    def plan_size(self) -> PlanSize:
        """What the plan writes, for the guard: its writes, the desired rows, its deletes, the managed objects."""
        summary = self.summary
        return PlanSize(
            changes=sum(summary.count(action) for action in WRITING),
            desired=self.rows_read,
            deletes=summary.count(Action.DELETE),
            managed=self.work.managed_count() if self.obj.mirrors else 0,
        )

    def digest(self) -> str:
        """The plan's digest (:func:`~airflow_provider_hilos.sync.guard.plan_digest`): every write it sends."""
        return plan_digest(self.work.hashes())

    def write_hashes(self) -> Iterator[tuple[str, str]]:
        """Every planned write's ``(key, hash)`` in key order (what an approval keeps)."""
        return self.work.hashes()

    def keep_only_approved(self, approved: Iterable[tuple[str, str]]) -> list[tuple[str, int]]:
        """Send only the writes a person approved: a planned write that is not exactly one of ``approved`` (its
        object changed in Hilos or in the warehouse since the approval, or it is new) is held back, not sent, and
        planned again by the next run; the keys held back and their rows."""
        self.work.add_approved(approved)
        held = self.work.hold_back_unapproved()
        self.write_count -= len(held)
        self.held_back = len(held)
        if held:
            self.work.add_outcomes([(key, "not_approved", HELD_BACK) for key, _ in held])
        return held

    def _write_plan(self, plan_file: AtomicText | None) -> None:
        if plan_file is None:
            return
        try:
            stream = PlanFile(
                plan_file.open(),
                unchanged=self.settings.plan_unchanged,
                key_field=self.obj.key_column,
                id_field=self.id_field,
            )
            for entry in self._read_invalid:
                stream.write(entry)
            for _, _, record in self.work.entries(unchanged=self.settings.plan_unchanged):
                if record:
                    stream.write_record(record)
            plan_file.commit()
            self.plan_path = str(plan_file.target)
        finally:
            plan_file.abort()

    def _judge_plan(self) -> None:
        """An object that became invalid while planning gets the verdict of an invalid input row: nothing is sent
        unless invalid rows may be skipped."""
        invalid = self.summary.count(Action.INVALID)
        if not invalid:
            return
        survey = Survey(total=self.rows_read, invalid=invalid)
        survey.listed = [
            (f"{self.obj.name} {e.key}" if e.key else f"row {e.row}", e.reason)
            for e in self.invalid_entries[:MAX_LISTED_INVALID_ROWS]
        ]
        if refusal := validation_verdict(survey, self.options, self.obj.rows_words):
            raise refusal

    def _read_hilos(self) -> None:
        size = self.settings.page_size or self.hook.settings.page_size
        progress = ListingProgress()
        seen = _ListingSeen(self)
        self.hook.ensure_pool(self.settings.list_concurrency)  # a connection for each page read at once
        for _ in self.obj.pages(
            self.hook, page_size=size, concurrency=self.settings.list_concurrency, progress=progress, seen=seen
        ):
            pass
        missing = self.work.unlisted_count()
        self.log.info(
            "Hilos sync: read %d %s(s) in %d page(s); %d desired %s(s) not listed",
            self.work.listed_count(),
            self.obj.name,
            progress.pages,
            missing,
            self.obj.name,
        )
        if missing:
            self._look_again(size, progress.duplicates, progress.pages, progress.count, missing, seen)

    def _look_again(
        self, size: int, duplicates: int, pages: int, count: int | None, missing: int, seen: _ListingSeen
    ) -> None:
        """A listing by page number misses the objects that moved to the front (new activity) while it ran, and
        each such move shows one row twice: read the front of the list again until a page brings no object not seen
        before (at least as many pages as the repeats seen; at most twice the first pass and that many more: the
        list keeps moving while it is read again), and say how many desired objects could still not be seen.

        A page without new rows ends it only once as many rows were seen as the API counts: short of that, rows the
        list skipped are still to come (under heavy movement they surface further down, or at the front again)."""
        minimum = duplicates // size + 1
        most = minimum + 2 * pages
        read = 0
        found_before, keyless = seen.new_desired, seen.keyless  # rows without a key: counted once, in the first pass
        stopped = False
        while not stopped:  # a round reaching the end of the list with new rows found starts again at page 1
            round_start = last = seen.new_rows
            progress = ListingProgress(count=count)
            pages_of_round = self.obj.pages(  # no page asked for ahead: a request for a page moves the list
                self.hook, page_size=size, concurrency=0, progress=progress, seen=seen, stale_pages=None
            )
            try:
                for _ in pages_of_round:
                    read += 1
                    new_in_page, last = seen.new_rows - last, seen.new_rows
                    left = missing - (seen.new_desired - found_before)
                    count = progress.count
                    all_seen = count is None or seen.new_rows + keyless >= count
                    if left <= 0 or read >= most or (read >= minimum and new_in_page == 0 and all_seen):
                        stopped = True
                        break
            finally:
                close = getattr(pages_of_round, "close", None)
                if close is not None:
                    close()  # the listing stops its read-ahead
            if read >= most or (seen.new_rows == round_start and all_seen):
                break
        still = self.work.unlisted_count()
        self.log.info(
            "Hilos sync: read the front of the list again (%d page(s)): %d desired %s(s) still not listed",
            read,
            still,
            self.obj.name,
        )
        if still and duplicates:
            self.unseen_while_moving = still
            self.log.warning(
                "Hilos sync: %d desired %s(s) were not seen although the list moved while it was read (%d row(s) "
                "shown twice): Hilos may well hold them; they are reported %s, and the next run looks for them again",
                still,
                self.obj.name,
                duplicates,
                "not_found" if self.obj.missing() is Action.NOT_FOUND else "to create (the API updates by phone)",
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
        """Send the plan's writes through the batch engine (only the fields that differ).

        :param on_outcome: also told each write's outcome record as it arrives (the pending sync log).
        :raises HilosBatchError: the batch's failure policy failed it (the outcomes are kept first).
        """
        if not self._keep_updates:
            raise RuntimeError("plan(keep_updates=False) was a dry run: there is nothing to apply")
        key_field = self.obj.updates_words.key_field
        pending: list[tuple[str, str, str | None]] = []

        def told(record: dict[str, Any]) -> None:
            key = record.get(key_field)
            if isinstance(key, str):
                self.outcomes[key] = {"outcome": record.get("outcome"), "error": record.get("error")}
                pending.append((key, str(record.get("outcome")), record.get("error")))
                if len(pending) >= 500:
                    self.work.add_outcomes(pending)
                    pending.clear()
            if on_outcome is not None:
                on_outcome(record)

        restored = ((n, self.obj.restored(w)) for n, _, w in self.work.writes())
        pipeline = UpdatePipeline(restored, total=self.write_count, numbered=True, unique=True)
        try:
            result = self.hook.update_conversations(
                pipeline,
                self.options,
                report=report,
                checkpoint=checkpoint,
                engine=engine,
                on_outcome=told,
                words=self.obj.updates_words,
            ).to_dict()
        except HilosBatchError as exc:
            exc.result = self._with_unreadable(exc.result)
            raise
        finally:
            self.work.add_outcomes(pending)
        result = self._with_unreadable(result)
        if failure := self._unreadable_verdict(result):
            raise failure
        return result

    def _with_unreadable(self, result: dict[str, Any]) -> dict[str, Any]:
        """The batch's result with the unreadable objects among its failed rows (they were not sent)."""
        if self.unreadable:
            key = self.obj.updates_words.key_field
            rows = [
                {"row": e.row, key: e.key, "status_code": None, "error": e.reason}
                for e in self.unreadable[: self.options.max_failed_rows]
            ]
            result = {**result, "failed_rows": [*result.get("failed_rows", []), *rows]}
        return result

    def _unreadable_verdict(self, result: Mapping[str, Any]) -> HilosBatchError | None:
        """Objects Hilos listed unreadably count as failed for the failure policy (retryable: the next run or try
        lists them again)."""
        unreadable = len(self.unreadable)
        if not unreadable or self.options.policy is FailurePolicy.NEVER:
            return None
        failed = int(result.get("failed", 0)) + int(result.get("not_sent", 0)) + unreadable
        allowed = allowed_failures(self.options, self.write_count + unreadable)
        if failed <= allowed:
            return None
        first = "; ".join(f"{self.obj.name} {e.key}" for e in self.unreadable[:5])
        return HilosBatchError(
            f"Hilos sync failed: {unreadable} {self.obj.name}(s) could not be compared or written from what Hilos "
            f"listed ({first}); {failed} of {self.write_count + unreadable} write(s) failed in all (allowed: "
            f"{allowed}, max_failed_ratio={self.options.max_failed_ratio}). They are sent next run",
            result=dict(result),
        )

    # -- 4. what the next run reads --

    def snapshot_entries(self) -> Iterator[tuple[str, str | None, dict[str, Any], bool]]:
        """The snapshot the next run compares with: each desired object now as desired, with its desired fields; the
        ones whose write failed or was not sent, or that were unreadable, keep their last good entry and are marked
        failed; a managed object that left the desired state stays managed (a mirror deletes it), until deleted."""
        keeps_departed = self.obj.lifecycle
        for key, desired, action, outcome, oid, previous, pid, failed in self.work.for_snapshot():
            known_id = oid or pid
            if action in (Action.UPDATE.value, Action.CREATE.value):
                if outcome in _DONE:
                    yield key, known_id, desired, False
                else:  # failed, not sent, or the task stopped first: sent again next run, whatever it says
                    yield key, known_id, previous or {}, True
            elif action == Action.DELETE.value:
                if outcome not in _DONE:
                    yield key, known_id, previous or {}, True  # the delete is tried again next run
            elif action == Action.UNREADABLE.value:
                yield key, known_id, previous or {}, True
            elif action == Action.UNCHANGED.value:
                yield key, known_id, desired, False
            elif previous is not None and (action is not None or keeps_departed):
                # not found, invalid, or (contacts) managed and no longer desired: nothing new is known of it
                yield key, known_id, previous, failed

    def save(self, run_id: str | None) -> None:
        """Keep the state for the next run (after every apply, successful or not)."""
        if self.store is not None:
            self.store.write(self.snapshot_entries(), run_id=run_id)

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
            "write_requests": sum(n for method, n in sent.items() if method != "GET" and n > 0),
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
            # planned writes that put back a hand edit
            "drift_found": summary.drift_found,
            "retried_from_last_run": summary.retried,
        }
        if self.obj.lifecycle:
            counts["to_create"] = summary.count(Action.CREATE)
            counts["to_delete"] = summary.count(Action.DELETE)
        if not dry_run:
            failed = 0 if batch is None else int(batch.get("failed", 0)) + int(batch.get("not_sent", 0))
            counts["failed"] = failed + len(self.unreadable)
            done = self._done_by_action()
            if self.obj.lifecycle:
                counts["created"] = done.get(Action.CREATE.value, 0)
                counts["updated"] = done.get(Action.UPDATE.value, 0)
                counts["deleted"] = done.get(Action.DELETE.value, 0)
            else:
                counts["updated"] = (
                    0 if batch is None else int(batch.get("updated", 0)) + int(batch.get("already_applied", 0))
                )
            # hand edits put back: the drift writes that landed
            counts["drift_corrected"] = self.work.drift_landed(_DONE)
            # planned writes not sent because they were not the approved ones
            counts["not_approved"] = self.held_back
        counts.update(self.requests())
        counts["duration_seconds"] = round(time.monotonic() - self._started, 3)
        counts.update(self.size())
        return counts

    def size(self) -> dict[str, Any]:
        """How big the run was and what it took: ``listed_rows`` (list rows read, repeats included),
        ``plan_seconds`` (reading the desired state and the list, comparing, writing the plan), ``plan_rows_per_second``
        (desired rows planned per second), ``peak_memory_mb`` (the process's peak resident memory so far) and
        ``work_db_mb`` (the run's work database on disk)."""
        seconds = self.plan_seconds
        return {
            "listed_rows": self.listed,
            "plan_seconds": None if seconds is None else round(seconds, 3),
            "plan_rows_per_second": None if not seconds else round(self.rows_read / seconds),
            "peak_memory_mb": peak_memory_mb(),
            "work_db_mb": round(self.work.size_on_disk() / 2**20, 1),
        }

    def size_line(self) -> str:
        """The size of the plan, as the log says it."""
        size = self.size()
        return (
            f"planned {self.rows_read:,} desired row(s) against {size['listed_rows']:,} listed in "
            f"{size['plan_seconds']:.1f} s ({size['plan_rows_per_second'] or 0:,} rows/s); peak memory "
            f"{size['peak_memory_mb']:.0f} MB, work database {size['work_db_mb']:.1f} MB on disk"
        )

    def _done_by_action(self) -> dict[str, int]:
        rows = self.work.db.execute(
            "SELECT p.action, count(*) FROM plan p JOIN outcome o ON o.k = p.k WHERE o.outcome IN (?, ?, ?, ?) "
            "GROUP BY p.action",
            _DONE,
        )
        return {action: int(count) for action, count in rows}

    def costs(self) -> dict[str, dict[str, int | None]]:
        """What each compare mode costs (requests) for this desired state: the chosen one as measured, the others
        as estimated from the snapshot and the plan."""
        valid = self.work.desired_count()
        size = self.settings.page_size or self.hook.settings.page_size
        hilos = self.settings.compare_with is CompareWith.HILOS
        writes = sum(self.summary.count(action) for action in WRITING)
        return {
            "hilos": {
                "reads": self.requests()["read_requests"] if hilos else None,
                "reads_at_least": math.ceil(valid / size) if valid else 0,
                "writes": writes if hilos else None,
            },
            "last_sync": {"reads": 0, "writes": self.last_sync_writes},
            "nothing": {"reads": 0, "writes": self.work.managed_field_count()},
        }

    def not_found_names(self, limit: int = LOGGED_NOT_FOUND) -> list[str]:
        """The first ``limit`` desired objects Hilos did not list."""
        return self.summary.not_found_ids[:limit]

    def log_records(self) -> Iterator[dict[str, Any]]:
        """Every entry the sync log gets (not unchanged), as the plan file has them: the invalid rows read, then the
        plan's, in row order."""
        for entry in self._read_invalid:
            yield entry_record(entry, self.obj.key_column, self.id_field)
        for _, _, record in self.work.entries():
            if record:
                yield json.loads(record)
