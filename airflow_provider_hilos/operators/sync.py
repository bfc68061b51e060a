"""``ConversationSyncOperator``: make Hilos hold what the warehouse declares, sending only what differs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_hilos.batch.options import (
    BatchOptions,
    insert_param_docs,
    with_batch_option_docs,
    with_batch_options,
)
from airflow_provider_hilos.batch.result import StopReason
from airflow_provider_hilos.connection import page_size_is_valid
from airflow_provider_hilos.exceptions import (
    HilosBatchError,
    HilosSyncBusyError,
    HilosSyncLogError,
    HilosSyncNotApprovedError,
    HilosValidationError,
)
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.inputs import INPUT_FORMATS, CsvColumns, list_separator_problem, rows_from_path
from airflow_provider_hilos.operators._common import (
    DEFAULT_DEFER_AFTER_SECONDS,
    DEFAULT_MAX_WAIT,
    BatchArguments,
    EmitsLineage,
    EngineStopper,
    WaitsOutOutages,
    announce,
    default_checkpoint_root,
    parse_flag,
    task_checkpoint,
    with_wait_option_docs,
)
from airflow_provider_hilos.people import PeopleResolver
from airflow_provider_hilos.schemas import show
from airflow_provider_hilos.storage import AtomicText, StoragePath, same_place_key, storage_path
from airflow_provider_hilos.sync.approval import (
    approval_body,
    approval_path,
    approval_subject,
    approved_writes,
    can_ask,
    duration,
    forget_approved,
    keep_approved,
    names,
    read_answer,
    request_approval,
)
from airflow_provider_hilos.sync.desired import (
    CONVERSATION_COLUMNS,
    DEFAULT_CHUNK_SIZE,
    Columns,
    RowShaper,
    column_map_problem,
    rows_from_sql,
    sql_hook,
)
from airflow_provider_hilos.sync.diff import CompareWith, ListMode
from airflow_provider_hilos.sync.guard import (
    Approval,
    Decision,
    Limits,
    Verdict,
    decide,
    digest_problem,
    over_limits,
    share_or_none,
    whole_or_none,
)
from airflow_provider_hilos.sync.lease import DEFAULT_LEASE_SECONDS, SyncLease
from airflow_provider_hilos.sync.objects import SyncObject
from airflow_provider_hilos.sync.objects.conversation import ConversationObject
from airflow_provider_hilos.sync.plan import LOGGED_NOT_FOUND
from airflow_provider_hilos.sync.runner import HELD_BACK, SyncRunner, SyncSettings
from airflow_provider_hilos.sync.state import SyncStateStore, sync_name, sync_owner
from airflow_provider_hilos.sync.warehouse_log import (
    PendingLog,
    check_log_table,
    flush_pending,
    pending_count,
    planned_rows,
    table_name_problem,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

#: XCom key of a sync's result (also its return value when it succeeds, and pushed when it fails).
SYNC_RESULT_XCOM_KEY = "hilos_sync_result"
#: XCom key of a run's record: the few counts the "Hilos syncs" page shows (a small value, read for 100 runs of
#: every sync).
SYNC_RUN_XCOM_KEY = "hilos_sync_run"
#: What a run's record keeps of its result.
RUN_RECORD_FIELDS = (
    "object",
    "dry_run",
    "awaiting_approval",
    "created",
    "updated",
    "deleted",
    "unchanged",
    "failed",
    "not_found",
    "invalid",
    "drift_corrected",
    "to_create",
    "to_update",
    "to_delete",
    "read_requests",
    "write_requests",
    "duration_seconds",
    "plan_path",
)


def run_record(result: Mapping[str, Any]) -> dict[str, Any]:
    """The record of a run the "Hilos syncs" page reads: its counts, whether it was refused, who approved it."""
    record = {name: result[name] for name in RUN_RECORD_FIELDS if name in result}
    approval = result.get("approval") or {}
    record["refused"] = bool(result.get("refused"))
    record["approved_by"] = approval.get("approved_by")
    record["decision"] = approval.get("decision")
    record["failed_keys"] = [
        {k: row.get(k) for k in ("row", "conversation_id", "phone", "contact_id", "error") if row.get(k) is not None}
        for row in list(result.get("failed_rows") or [])[:20]
        if isinstance(row, Mapping)
    ]
    return record


def plan_link(ti: Any) -> str:
    """Where the "Hilos syncs" page serves this run's plan file (a path on the api-server, as the UI links it)."""
    from urllib.parse import urlencode

    query = {"dag_id": ti.dag_id, "task_id": ti.task_id, "run_id": ti.run_id, "map_index": getattr(ti, "map_index", -1)}
    return f"/hilos/plan?{urlencode(query)}"


def push_result(ti: Any, result: Mapping[str, Any]) -> None:
    """Push a sync's result (``hilos_sync_result``) and its record for the "Hilos syncs" page (``hilos_sync_run``)."""
    ti.xcom_push(key=SYNC_RESULT_XCOM_KEY, value=result)
    ti.xcom_push(key=SYNC_RUN_XCOM_KEY, value=run_record(result))


#: How long a plan waits for approval by default.
DEFAULT_APPROVAL_TIMEOUT = timedelta(hours=24)


#: The guard's arguments, in the docs of every sync operator (its line ``{guard_options}``).
GUARD_OPTION_DOCS = """\
:param max_changes: a plan that writes more objects than this (updates, creates and deletes) is over its limits
    (default: no count) (templated).
:param max_change_ratio: ... or one that writes more than this share of the desired rows (0 to 1; default: no
    share) (templated).
:param approval: what happens to a plan over its limits, judged before the first write: ``"over_limits"``
    (default: a plan within them is applied at once; one over them waits for a person's approval in the Airflow UI,
    Airflow's Human-in-the-loop, holding no worker slot), ``"always"`` (every plan that writes waits) or ``"never"``
    (a plan over its limits fails the task, sending nothing). Where Airflow has no Human-in-the-loop (Airflow 2,
    3.0), a plan that would wait fails instead, with its summary and digest (templated).
:param approval_timeout: how long a plan waits for an answer (a ``timedelta`` or seconds; default 24 hours;
    ``None``: no bound); without one, nothing is sent and the task fails.
:param approve_plan: the digest of a plan this run may apply whatever its size, as a refused run's log and result
    give it (default: ``approve_plan`` from the run's params or conf, as the trigger form sets it): a plan with
    another digest is refused (templated)."""


def with_guard_option_docs(doc: str | None) -> str:
    """A sync operator's docstring with :data:`GUARD_OPTION_DOCS` in place of its line ``{guard_options}``."""
    return insert_param_docs(doc, "{guard_options}", GUARD_OPTION_DOCS)


def _timeout(value: timedelta | float | None, where: str) -> timedelta | None:
    """``approval_timeout`` as a ``timedelta`` (seconds may be given; ``None``: no bound)."""
    if value is None or isinstance(value, timedelta):
        seconds = None if value is None else value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        seconds = -1.0
    if seconds is not None and not 0 < seconds <= 90 * 86400:
        raise ValueError(
            f"{where}: approval_timeout={show(value)} must be a timedelta or a number of seconds, more than 0 and at "
            "most 90 days (or None: wait for an answer however long it takes)"
        )
    return None if seconds is None else timedelta(seconds=seconds)


class HilosSyncBase(EmitsLineage, WaitsOutOutages, EngineStopper, BatchArguments, BaseOperator):
    """What every sync operator does (:class:`ConversationSyncOperator`, :class:`ContactSyncOperator
    <airflow_provider_hilos.operators.contacts.ContactSyncOperator>`): read the desired state, take the sync's lease,
    compare, plan, apply through the batch engine, keep the state and log every object. A subclass says what is synced
    (:meth:`_object`) and how (:meth:`_settings`), and adds its own arguments."""

    #: the arguments every sync templates (a subclass adds its own modes)
    COMMON_TEMPLATE_FIELDS: ClassVar[tuple[str, ...]] = (
        "sql",
        "sql_conn_id",
        "parameters",
        "log_table",
        "state_path",
        "state",
        "compare_with",
        "state_store",
        "plan_path",
        "report_path",
        "checkpoint_path",
        *BatchOptions.names(),
        "hilos_dry_run",
        "hilos_conn_id",
        "max_changes",
        "max_change_ratio",
        "approval",
        "approve_plan",
    )
    template_fields: Sequence[str] = COMMON_TEMPLATE_FIELDS
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"sql": "sql", "state": "json", "parameters": "json"}
    ui_color = "#075e54"
    #: the counts of a successful sync go into the event of every Asset in ``outlets``
    ASSET_EXTRA_FIELDS: ClassVar[tuple[str, ...]] = (
        "desired",
        "unchanged",
        "updated",
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
        sql: str | None = None,
        sql_conn_id: str | None = None,
        parameters: Mapping[str, Any] | list[Any] | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        log_table: str | None = None,
        state_path: str | None = None,
        state: list[dict[str, Any]] | str | None = None,
        column_map: Mapping[str, str] | None = None,
        list_separator: str = "|",
        input_format: str | None = None,
        compare_with: str = "hilos",
        page_size: int | None = None,
        list_concurrency: int | None = None,
        state_store: str | None = None,
        plan_path: str | None = None,
        report_path: str | None = None,
        resume: bool = True,
        checkpoint_path: str | None = None,
        dry_run: bool | str = False,
        show_diffs: int = 20,
        plan_unchanged: bool = False,
        wait_for_other_run: float = 1800.0,
        max_changes: int | str | None = None,
        max_change_ratio: float | str | None = None,
        approval: str = Approval.OVER_LIMITS.value,
        approval_timeout: timedelta | float | None = DEFAULT_APPROVAL_TIMEOUT,
        approve_plan: str | None = None,
        hilos_conn_id: str = HilosHook.default_conn_name,
        deferrable: bool | None = None,
        defer_after_seconds: float = DEFAULT_DEFER_AFTER_SECONDS,
        max_wait: float = DEFAULT_MAX_WAIT,
        **kwargs: Any,
    ) -> None:
        self._take_batch_options(kwargs)
        super().__init__(**kwargs)
        where = f"{type(self).__name__} {kwargs.get('task_id', '')!r}"
        self._take_wait_arguments(deferrable, defer_after_seconds, max_wait, where)
        given = [
            name for name, value in (("sql", sql), ("state_path", state_path), ("state", state)) if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                f"{where}: give exactly one of sql (with sql_conn_id), state_path (a change-set file) or state (a list "
                f"of rows){'; got ' + ', '.join(given) if given else ''}"
            )
        if sql is not None and not sql_conn_id:
            raise ValueError(f"{where}: sql needs sql_conn_id, the Airflow connection of the warehouse it runs on")
        if log_table and not sql_conn_id:
            raise ValueError(f"{where}: log_table needs sql_conn_id, the connection whose database holds the table")
        if problem := column_map_problem(column_map, self.COLUMNS):
            raise ValueError(f"{where}: column_map {problem}")
        if list_concurrency is not None and (
            isinstance(list_concurrency, bool)
            or not isinstance(list_concurrency, int)
            or not 1 <= list_concurrency <= 256
        ):
            raise ValueError(
                f"{where}: list_concurrency={show(list_concurrency)} must be a whole number from 1 to 256 (or None: "
                "max_concurrency)"
            )
        if problem := list_separator_problem(list_separator):
            raise ValueError(f"{where}: list_separator={problem}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"{where}: chunk_size={show(chunk_size)} must be a whole number, at least 1")
        if page_size is not None and not page_size_is_valid(page_size):
            raise ValueError(f"{where}: page_size={show(page_size)} must be a whole number from 1 to 10000")
        if isinstance(show_diffs, bool) or not isinstance(show_diffs, int) or show_diffs < 0:
            raise ValueError(f"{where}: show_diffs={show(show_diffs)} must be a whole number, 0 or more")
        if input_format not in (None, *INPUT_FORMATS):
            raise ValueError(f"{where}: input_format={show(input_format)} is not one of {', '.join(INPUT_FORMATS)}")
        if log_table and "{{" not in str(log_table) and (problem := table_name_problem(log_table)):
            raise ValueError(f"{where}: log_table={show(log_table)} {problem}")
        if (
            isinstance(wait_for_other_run, bool)
            or not isinstance(wait_for_other_run, int | float)
            or not 0 <= wait_for_other_run <= 7 * 24 * 3600
        ):
            raise ValueError(
                f"{where}: wait_for_other_run={show(wait_for_other_run)} must be a number of seconds from 0 to 604800"
            )
        self.sql = sql
        self.sql_conn_id = sql_conn_id
        self.parameters = parameters
        self.chunk_size = chunk_size
        self.log_table = log_table
        self.state_path = state_path
        self.state = state
        self.column_map = dict(column_map or {})
        self.list_separator = list_separator
        self.input_format = input_format
        self.compare_with = compare_with
        self.page_size = page_size
        self.list_concurrency = list_concurrency
        self.state_store = state_store
        self.plan_path = plan_path
        self.report_path = report_path
        self.resume = resume
        self.checkpoint_path = checkpoint_path
        self.hilos_dry_run = dry_run
        self.show_diffs = show_diffs
        self.plan_unchanged = plan_unchanged
        self.wait_for_other_run = float(wait_for_other_run)
        self.hilos_conn_id = hilos_conn_id
        self.max_changes = max_changes
        self.max_change_ratio = max_change_ratio
        self.approval = approval
        self.approve_plan = approve_plan
        self.approval_timeout = _timeout(approval_timeout, where)
        #: the approval this run resumed with (Human-in-the-loop): its digest, who, when, the approved writes' file
        self._approved: dict[str, Any] | None = None

    # -- what a subclass says --

    #: the desired state's columns
    COLUMNS: ClassVar[Columns] = CONVERSATION_COLUMNS
    #: the Hilos dataset its lineage names (``conversations``, ``contacts``)
    DATASET: ClassVar[str] = "conversations"

    def _object(self) -> SyncObject:
        """What is synced, with the (rendered) modes."""
        raise NotImplementedError

    def _settings(self) -> SyncSettings:
        """How it compares and applies (the rendered arguments, checked)."""
        raise NotImplementedError

    def _check_when_parsed(self, *names: str) -> None:
        """Check the settings when the DAG file is parsed (a wrong mode fails then, not at run time), unless one of
        ``names`` is a template."""
        if not any("{{" in str(getattr(self, name)) for name in names):
            self._settings()
            self._object()
        guard = ("max_changes", "max_change_ratio", "approval", "approve_plan", *self.GUARD_FIELDS)
        if not any("{{" in str(getattr(self, name)) for name in guard):
            self._guard()
            self._given_digest({})

    #: a subclass's own limits among the template fields (the contact sync's delete guard)
    GUARD_FIELDS: ClassVar[tuple[str, ...]] = ()

    def _guard(self) -> tuple[Limits, Approval]:
        """The rendered limits and approval mode, checked.

        :raises HilosValidationError: naming each wrong one and what it may be.
        """
        problems: list[tuple[str, str]] = []
        limits = Limits(
            max_changes=whole_or_none(self.max_changes, "max_changes", problems),
            max_change_ratio=share_or_none(self.max_change_ratio, "max_change_ratio", problems),
            **self._delete_limits(problems),
        )
        try:
            approval = Approval(str(self.approval).strip().lower())
        except ValueError:
            approval = Approval.OVER_LIMITS
            problems.append(("approval", f"{show(self.approval)} is not one of {', '.join(a.value for a in Approval)}"))
        if problems:
            raise HilosValidationError(problems, "Invalid Hilos sync arguments")
        return limits, approval

    def _delete_limits(self, problems: list[tuple[str, str]]) -> dict[str, Any]:
        """A subclass's delete limits (``max_deletes``, ``max_delete_ratio``), checked into ``problems``."""
        return {}

    def _given_digest(self, context: Mapping[str, Any]) -> str | None:
        """The plan digest this run may apply: ``approve_plan`` (the argument), else the run's params or conf
        (``approve_plan``, as the trigger form sets it); ``None`` when none is given.

        :raises HilosValidationError: it is not a digest.
        """
        value: Any = self.approve_plan
        if value in (None, ""):
            params = context.get("params") or {}
            conf = getattr(context.get("dag_run"), "conf", None)
            value = (params.get("approve_plan") if hasattr(params, "get") else None) or (
                conf.get("approve_plan") if isinstance(conf, Mapping) else None
            )
        if value in (None, ""):
            return None
        digest = str(value).strip().lower()
        if problem := digest_problem(digest):
            raise HilosValidationError([("approve_plan", problem)], "Invalid Hilos sync arguments")
        return digest

    def _modes(self, **kinds: type[Any]) -> dict[str, Any]:
        """The rendered modes (``compare_with``, ``tags_mode`` ...) read as their enums.

        :raises HilosValidationError: naming every wrong one and what it may be.
        """
        problems, values = [], {}
        for name, kind in kinds.items():
            raw = getattr(self, name)
            try:
                values[name] = kind(str(raw).strip().lower())
            except ValueError:
                choices = [m.value for m in kind] if isinstance(kind, type) and issubclass(kind, Enum) else []
                problems.append((name, f"{show(raw)} is not one of {', '.join(choices)}"))
        if problems:
            raise HilosValidationError(problems, "Invalid Hilos sync arguments")
        return values

    def _common_settings(self, **values: Any) -> SyncSettings:
        settings = SyncSettings(
            **self._modes(compare_with=CompareWith),
            page_size=self.page_size,
            shown=self.show_diffs,
            plan_unchanged=parse_flag(self.plan_unchanged, field="plan_unchanged"),
            list_concurrency=self._list_concurrency(),
            **values,
        )
        if problems := settings.problems():
            raise HilosValidationError(problems, "Invalid Hilos sync arguments")
        return settings

    def _list_concurrency(self) -> int:
        """List pages read at once: ``list_concurrency``, else the batch's ``max_concurrency`` (one quota for both)."""
        if self.list_concurrency is not None:
            return self.list_concurrency
        value = getattr(self, "max_concurrency", None)
        ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 256
        return value if ok else BatchOptions().max_concurrency  # type: ignore[return-value]

    def _desired_rows(self, obj: SyncObject) -> Iterator[tuple[int, Any]]:
        if self.sql is not None:
            assert self.sql_conn_id is not None
            origin, rows = (
                "sql",
                rows_from_sql(
                    self.sql_conn_id, self.sql, parameters=self.parameters, chunk_size=self.chunk_size, log=self.log
                ),
            )
        elif self.state_path is not None:
            origin = "state_path"
            rows = rows_from_path(
                self.state_path,
                input_format=self.input_format,
                list_separator=self.list_separator,
                name="state_path",
                columns=CsvColumns(obj.columns.key, obj.columns.names, obj.columns.lists, obj.columns.prefix),
            )()
        else:
            from airflow_provider_hilos.rows import rows_from_updates

            origin, rows = "state", rows_from_updates(self.state)()
        shaper = RowShaper(self.column_map, self.list_separator, origin, obj.columns)
        return ((number, shaper.shape(row)) for number, row in rows)

    def _state_root(self) -> StoragePath:
        if self.state_store:
            return storage_path(self.state_store)
        if self.report_path:
            return storage_path(self.report_path).parent / "_hilos_sync_state"
        return default_checkpoint_root(None).parent / "hilos_sync_state"

    def _plan_target(self) -> AtomicText | None:
        path = self._plan_path()
        return AtomicText(storage_path(path)) if path else None

    def _plan_path(self) -> str | None:
        return self.plan_path or (f"{self.report_path}.plan.jsonl" if self.report_path else None)

    def _check_paths(self) -> None:
        """Refuse, before anything is read or sent: an output that is the input, two outputs in one place (the
        report would overwrite the plan), or an output file that is a folder."""
        outputs = {
            "report_path": self.report_path,
            "plan_path": self._plan_path(),
            "checkpoint_path": self.checkpoint_path,
            "state_store": self.state_store,
        }
        given = {name: value for name, value in outputs.items() if value}
        places = {name: same_place_key(value) for name, value in given.items()}
        problems = []
        if self.state_path is not None:
            source = same_place_key(self.state_path)
            problems += [
                (name, "is the input (state_path): writing it would destroy the desired state; choose another path")
                for name, place in places.items()
                if place == source
            ]
        names = list(places)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                if places[first] == places[second]:
                    problems.append((second, f"is the same place as {first}: one would overwrite the other"))
        for name in ("report_path", "plan_path"):
            if name in given and (target := storage_path(given[name])).exists() and target.is_dir():
                problems.append((name, f"{given[name]!r} is a folder; give the path of a file"))
        if problems:
            raise HilosValidationError(problems, "Invalid Hilos sync arguments")

    # -- the run --

    def execute(self, context: Context) -> dict[str, Any]:
        return self._run_waiting(lambda: self._execute_once(context))

    def _execute_once(self, context: Context) -> dict[str, Any]:
        settings = self._settings()
        obj = self._object()
        options = self.batch_options()
        self._check_paths()
        self._guard()
        self._given_digest(context)
        dry = parse_flag(self.hilos_dry_run, field="dry_run")
        if self.log_table and (problem := table_name_problem(self.log_table)):
            raise HilosValidationError([("log_table", problem)], "Invalid Hilos sync arguments")
        ti = context["ti"]
        store = self._store(context, obj)
        self._say_what_runs(settings, store, dry)
        lease = SyncLease(
            store.folder, run_id=ti.run_id, try_number=getattr(ti, "try_number", None), seconds=self.LEASE_SECONDS
        )
        self._take_lease(lease, context)
        hook = self._hilos_hook = HilosHook(
            self.hilos_conn_id, pool_maxsize=options.max_concurrency, longest_hold=self._longest_hold()
        )
        try:
            lease.keep(on_lost=self._lease_lost)
            return self._sync(context, obj, settings, options, store, lease, hook, dry)
        finally:
            lease.release()
            hook.close()

    def _store(self, context: Context, obj: SyncObject) -> SyncStateStore:
        """This sync task's state (one per DAG, task and map index)."""
        ti = context["ti"]
        return SyncStateStore(
            self._state_root(), sync_owner(ti.dag_id, ti.task_id, getattr(ti, "map_index", None)), obj.name
        )

    #: How long the lease of a run lasts without renewal (a killed run holds up the next one at most this long).
    LEASE_SECONDS: ClassVar[float] = DEFAULT_LEASE_SECONDS
    #: How often a run waiting in the worker for another one looks at the lease.
    LEASE_POLL_SECONDS: ClassVar[float] = 2.0

    def _sync(
        self,
        context: Context,
        obj: SyncObject,
        settings: SyncSettings,
        options: BatchOptions,
        store: SyncStateStore,
        lease: SyncLease,
        hook: HilosHook,
        dry: bool,
    ) -> dict[str, Any]:
        log_hook = sql_hook(self.sql_conn_id) if self.log_table and self.sql_conn_id else None
        pending_before = 0
        if log_hook is not None:
            assert self.log_table is not None
            check_log_table(log_hook, self.log_table)  # a missing table or column fails now, not after the apply
            if dry:
                pending_before = pending_count(store.folder)
            else:
                flush_pending(store.folder, log_hook, self.log_table, self.log)  # rows earlier runs left, first
        plan_target = self._plan_target()
        people = PeopleResolver(hook.account_members.directory)
        runner = SyncRunner(hook, settings, options, store=store, log=self.log, obj=obj, people=people)
        try:
            return self._sync_with(context, runner, log_hook, store, lease, plan_target, dry, pending_before)
        finally:
            runner.close()

    def _sync_with(
        self,
        context: Context,
        runner: SyncRunner,
        log_hook: Any,
        store: SyncStateStore,
        lease: SyncLease,
        plan_target: AtomicText | None,
        dry: bool,
        pending_before: int,
    ) -> dict[str, Any]:
        ti, obj, settings = context["ti"], runner.obj, runner.settings
        try:
            runner.read_desired(self._desired_rows(obj))
            runner.plan(plan_target, keep_updates=not dry)
        except HilosValidationError as refusal:
            return self._refused(context, runner, refusal, log_hook, store, dry)
        self._log_plan(runner, settings, dry)
        verdict, approval = self._judge(context, runner, dry)
        if dry:
            result = self._result(runner, None, dry=True, store=store, saved=False)
            result["approval"] = approval
            if pending_before:
                result["log_rows_pending"] = pending_before
            push_result(ti, result)
            self._say_done(result)
            return result
        if verdict.decision is Decision.REFUSE:
            self._refuse_plan(context, runner, log_hook, store, verdict, approval)
        if verdict.decision is Decision.WAIT:
            self._ask_for_approval(context, runner, store, verdict, approval)
        held: list[tuple[str, int]] = []
        if self._approved is not None and self._approved["digest"] != approval["digest"]:
            held = runner.keep_only_approved(approved_writes(self._approved["path"]))
            approval["held_back"] = len(held)
            self.log.warning(
                "Hilos sync: the plan changed since it was approved (digest %s, approved %s): %d write(s) not "
                "approved are held back, not sent (the next run plans them again): %s",
                approval["digest"],
                self._approved["digest"],
                len(held),
                names([key for key, _ in held]),
            )
        checkpoint = self._checkpoint = task_checkpoint(
            context, resume=self.resume, checkpoint_path=self.checkpoint_path, report_path=self.report_path
        )
        report = AtomicText(storage_path(self.report_path)) if self.report_path else None
        journal = (
            PendingLog(store.folder, ti.run_id, key_field=obj.updates_words.key_field) if log_hook is not None else None
        )
        if journal is not None:  # before the first request: a row of this run is never lost
            journal.approved_by = approval.get("approved_by")
            journal.save(
                planned_rows(
                    runner.log_records(), object_name=obj.name, key_field=obj.key_column, id_field=runner.id_field
                )
            )
            for key, _ in held:
                journal.outcome({obj.updates_words.key_field: key, "outcome": "not_approved", "error": HELD_BACK})
        batch: dict[str, Any] | None = None
        failure: Exception | None = None
        try:
            batch = runner.apply(
                report=report,
                checkpoint=checkpoint,
                engine=self._keep_engine,
                on_outcome=journal.outcome if journal is not None else None,
            )
        except HilosBatchError as exc:
            failure, batch = exc, exc.result
        finally:
            if journal is not None:
                journal.close_outcomes()
            saved = not lease.lost.is_set()
            if saved:
                runner.save(ti.run_id)  # failed conversations are sent again next run
        if not saved:  # another run took over: its state is not ours to write
            failure = HilosSyncBusyError(
                f"Hilos sync lost its lease while applying ({lease.lost_reason}); it stopped sending and did not write "
                "its state over the state of the run that took over. That run compares with what Hilos holds now"
            )
        result = self._result(runner, batch, dry=False, store=store, saved=saved, report=report)
        result["approval"] = approval
        if journal is not None:
            assert log_hook is not None and self.log_table is not None
            try:
                result["log_rows_written"] = journal.write_to(log_hook, self.log_table)
                result["log_rows_pending"] = 0
                self.log.info(
                    "Hilos sync: %d row(s) written to the sync log %s", result["log_rows_written"], self.log_table
                )
            except HilosSyncLogError as exc:
                result["log_rows_written"], result["log_rows_pending"] = journal.count - exc.pending, exc.pending
                self.log.error("%s", exc)
                failure = failure or exc
        push_result(ti, result)
        self._say_done(result)
        if failure is not None:
            raise failure
        self._lineage_facts = {"base_url": runner.hook.settings.base_url, "result": result}
        announce(context, self.outlets, {name: result[name] for name in self.ASSET_EXTRA_FIELDS if name in result})
        return result

    def _refused(
        self,
        context: Context,
        runner: SyncRunner,
        refusal: HilosValidationError,
        log_hook: Any,
        store: SyncStateStore,
        dry: bool,
    ) -> dict[str, Any]:
        """A run refused for its invalid rows (nothing sent): its result is pushed and its invalid rows go to the
        sync log, then it fails."""
        result = self._result(runner, None, dry=dry, store=store, saved=False)
        result["refused"] = refusal.subject
        if log_hook is not None and not dry:
            self._log_refused(context, runner, runner.invalid_entries, log_hook, store, result)
        push_result(context["ti"], result)
        self.log.error(
            "%s%s (%d of %d desired row(s) invalid)%s",
            refusal.subject,
            " (a dry run)" if dry else "",
            result["invalid"],
            result["desired"],
            f"; {result['log_rows_written']} written to the sync log {self.log_table}"
            if result.get("log_rows_written")
            else "",
        )
        raise refusal

    def _log_refused(
        self,
        context: Context,
        runner: SyncRunner,
        entries: Iterable[Any],
        log_hook: Any,
        store: SyncStateStore,
        result: dict[str, Any],
        *,
        not_approved: str | None = None,
    ) -> None:
        """The sync log rows of a run refused before any write (``entries``: its invalid rows, or its plan), the
        planned writes as ``not_approved`` with that reason; what was written or left pending goes in ``result``."""
        assert self.log_table is not None
        obj = runner.obj
        journal = PendingLog(store.folder, context["ti"].run_id, key_field=obj.updates_words.key_field)
        journal.save(planned_rows(entries, object_name=obj.name, key_field=obj.key_column, id_field=runner.id_field))
        if not_approved is not None:
            for key, _ in runner.write_hashes():
                journal.outcome({obj.updates_words.key_field: key, "outcome": "not_approved", "error": not_approved})
        try:
            result["log_rows_written"] = journal.write_to(log_hook, self.log_table)
            result["log_rows_pending"] = 0
        except HilosSyncLogError as exc:
            result["log_rows_written"], result["log_rows_pending"] = journal.count - exc.pending, exc.pending
            self.log.error("%s", exc)

    # -- the guard, and approval --

    def _judge(self, context: Context, runner: SyncRunner, dry: bool) -> tuple[Verdict, dict[str, Any]]:
        """The guard's verdict on the plan, and what the result and the log say of it."""
        limits, approval = self._guard()
        digest = runner.digest()
        size = runner.plan_size()
        approved = self._approved
        if approved is not None:
            verdict = Verdict(
                Decision.APPLY_APPROVED,
                tuple(over_limits(size, limits, runner.obj.name)),
                f"approved by {approved['by'] or 'an unnamed user'} in the Airflow UI",
            )
        else:
            verdict = decide(
                size,
                limits,
                approval,
                digest=digest,
                approved_digest=self._given_digest(context),
                can_wait=can_ask(),
                noun=runner.obj.name,
            )
        by = None
        if approved is not None:
            by = approved["by"] or "an unnamed user"
        elif verdict.decision is Decision.APPLY_APPROVED:
            by = f"approve_plan={digest}"
        info: dict[str, Any] = {
            "decision": verdict.decision.value,
            "digest": digest,
            "changes": size.changes,
            "limits": limits.described(),
            "over_limits": list(verdict.over),
            "reason": verdict.reason,
            "mode": approval.value,
            "approved_by": by,
            "approved_at": approved["at"] if approved is not None else None,
            "held_back": 0,
        }
        what = "Hilos sync DRY RUN plan" if dry else "Hilos sync plan"
        if verdict.decision in (Decision.WAIT, Decision.REFUSE):
            self.log.warning(
                "%s: %s (%s); digest %s",
                what,
                f"a real run would {'WAIT FOR APPROVAL' if verdict.decision is Decision.WAIT else 'be REFUSED'}"
                if dry
                else ("WAITS FOR APPROVAL" if verdict.decision is Decision.WAIT else "REFUSED"),
                verdict.reason,
                digest,
            )
        else:
            self.log.info(
                "%s: %s (%s); digest %s",
                what,
                "approved" if verdict.decision is Decision.APPLY_APPROVED else "applied without approval",
                verdict.reason,
                digest,
            )
        return verdict, info

    def _refuse_plan(
        self,
        context: Context,
        runner: SyncRunner,
        log_hook: Any,
        store: SyncStateStore,
        verdict: Verdict,
        approval: dict[str, Any],
    ) -> NoReturn:
        """A plan the guard refused: nothing is sent, the state is kept as it was; the result is pushed and every
        planned write goes to the sync log as ``not_approved``; then the task fails, saying how to apply it."""
        digest = approval["digest"]
        how = (
            f"review the plan{' (' + runner.plan_path + ')' if runner.plan_path else ''}; to apply exactly this plan, "
            f'run the DAG again with {{"approve_plan": "{digest}"}} in its conf (or approve_plan in the trigger '
            "form); or fix the desired state, or change the limits"
        )
        message = f"Hilos sync refused, nothing was sent: the plan is {verdict.reason}. Its digest is {digest}: {how}"
        result = self._result(runner, None, dry=False, store=store, saved=False)
        result["refused"] = message
        result["approval"] = approval
        if log_hook is not None:
            self._log_refused(
                context, runner, runner.log_records(), log_hook, store, result, not_approved=verdict.reason
            )
        push_result(context["ti"], result)
        self.log.error("%s", message)
        raise HilosSyncNotApprovedError(message)

    def _ask_for_approval(
        self, context: Context, runner: SyncRunner, store: SyncStateStore, verdict: Verdict, approval: dict[str, Any]
    ) -> NoReturn:
        """Keep the plan's writes beside the state, push the result, and ask for approval in the Airflow UI: the
        task waits (no worker slot held) and resumes in :meth:`execute_approval`."""
        digest = approval["digest"]
        keep_approved(store.folder, digest, runner.write_hashes())
        result = self._result(runner, None, dry=False, store=store, saved=False)
        result["approval"] = approval
        result["awaiting_approval"] = True
        ti = context["ti"]
        push_result(ti, result)
        timeout = self.approval_timeout
        self.log.warning(
            "Hilos sync: the plan waits for approval in the Airflow UI (this task's Required Actions, or the REST "
            "API): nothing is sent until a person approves it; the task holds no worker slot while it waits%s",
            f" (up to {duration(timeout)}; then it fails, sending nothing)" if timeout else "",
        )
        sync = sync_name(ti.dag_id, ti.task_id, getattr(ti, "map_index", None))
        request_approval(
            self,
            context,
            subject=approval_subject(sync, runner.obj.name, approval["changes"]),
            body=approval_body(
                sync=sync,
                noun=runner.obj.name,
                key_field=runner.obj.key_column,
                counts=result,
                summary=runner.summary,
                costs=result["costs"],
                verdict=verdict,
                digest=digest,
                limits=approval["limits"],
                plan_path=runner.plan_path,
                timeout=timeout,
                plan_link=plan_link(ti) if runner.plan_path else None,
            ),
            timeout=timeout,
            method_name="execute_approval",
            kwargs={"digest": digest},
        )

    def execute_approval(self, context: Context, event: Mapping[str, Any] | None = None, digest: str = "") -> Any:
        """Back from the wait with a person's answer. Approved: plan again and send only the approved writes (a
        write whose object changed since is held back). Rejected or unanswered: nothing is sent, the state of the
        last run stays as it was, and the task fails with the reason."""
        answer = read_answer(event or {}, self.approval_timeout)
        obj = self._object()
        path = approval_path(self._store(context, obj).folder, digest)
        if not answer.approved:
            forget_approved(path)
            message = (
                f"Hilos sync: the plan {digest} was not approved: {answer.why}. Nothing was sent; the state and the "
                "failed keys of the last run are kept as they were"
            )
            result = {
                "object": obj.name,
                "dry_run": False,
                "refused": message,
                "approval": {
                    "decision": "timed_out" if answer.timed_out else "rejected",
                    "digest": digest,
                    "reason": answer.why,
                    "answered_by": answer.by,
                    "answered_at": answer.at,
                },
            }
            push_result(context["ti"], result)
            self.log.error("%s", message)
            raise HilosSyncNotApprovedError(message)
        if not path.exists():
            raise HilosSyncNotApprovedError(
                f"Hilos sync: the plan {digest} was {answer.why}, but what was approved ({path}) is gone (state_store "
                "changed or was cleaned while the task waited). Nothing was sent: run the sync again"
            )
        self.log.info(
            "Hilos sync: the plan %s was %s%s; this run reads again and sends only the approved writes",
            digest,
            answer.why,
            f" at {answer.at}" if answer.at else "",
        )
        self._approved = {"digest": digest, "by": answer.by, "at": answer.at, "path": path}
        try:
            return self._run_waiting(lambda: self._execute_once(context))
        finally:
            self._approved = None
            forget_approved(path)

    # -- one run at a time --

    def _take_lease(self, lease: SyncLease, context: Context) -> None:
        """Hold the sync's lease before anything is read: wait for another run that holds it (deferred in the
        triggerer when deferrable), up to ``wait_for_other_run`` in all, then fail naming that run."""
        waited = float(getattr(self, "_lease_waited", 0.0))
        began = time.monotonic() - waited
        announced = False
        while True:
            holder = lease.try_acquire()
            if holder is None:
                if lease.taken_over is not None:
                    self.log.warning(
                        "Hilos sync: took over the lease of run %s, which had expired (that run died or was stalled "
                        "for longer than %g s); this one goes on",
                        lease.taken_over.run_id,
                        self.LEASE_SECONDS,
                    )
                elif announced or waited:
                    self.log.info("Hilos sync: the other run let go; this one goes on (waited %.0f s)", waited)
                return
            waited = time.monotonic() - began
            left = self.wait_for_other_run - waited
            if left <= 0:
                raise HilosSyncBusyError(
                    f"Hilos sync: another run of this sync holds its state ({holder.describe()}; its lease is "
                    f"{lease.path}). This run waited {waited:.0f} s (wait_for_other_run={self.wait_for_other_run:g}) "
                    "and fails without sending anything; it would have planned against a state that run is changing. "
                    "Let that run finish (or mark it failed: its lease then expires within "
                    f"{self.LEASE_SECONDS:g} s), and run this one again"
                )
            if not announced:
                self.log.warning(
                    "Hilos sync: another run of this sync is under way (%s); this run waits for it (up to %.0f s "
                    "more) before reading anything",
                    holder.describe(),
                    left,
                )
                announced = True
            if self.deferrable and left > self.defer_after_seconds and self._approved is None:
                from airflow_provider_hilos.triggers.hilos import HilosSyncLeaseTrigger

                self.defer(
                    trigger=HilosSyncLeaseTrigger(
                        state_folder=str(lease.folder), deadline=time.time() + left, holder=holder.describe()
                    ),
                    method_name="execute_after_lease",
                    kwargs={"waited": waited, "deferred_at": time.time()},
                )
            time.sleep(min(self.LEASE_POLL_SECONDS, max(left, 0.0)))

    def execute_after_lease(
        self, context: Context, event: Mapping[str, Any], waited: float = 0.0, deferred_at: float | None = None
    ) -> Any:
        """Back from the triggerer: the other run let go (or the wait ran out; then taking the lease fails, naming
        the holder)."""
        self._lease_waited = waited + max(0.0, time.time() - (deferred_at or time.time()))
        return self._run_waiting(lambda: self._execute_once(context))

    def _lease_lost(self, reason: str) -> None:
        """The lease was taken over while this run applies: stop sending at once."""
        self.log.error("Hilos sync: %s; it stops sending", reason)
        if self._engine is not None:
            self._engine.stop(StopReason.LEASE_LOST, f"the sync lost its lease ({reason})")

    # -- what a person reads --

    def _say_what_runs(self, settings: SyncSettings, store: SyncStateStore, dry: bool) -> None:
        if dry:
            self.log.info(
                "Hilos sync DRY RUN (compare_with=%s): it reads and plans only; nothing will be sent, no state, "
                "report or sync log row written",
                settings.compare_with.value,
            )
        else:
            self.log.info(
                "Hilos sync (compare_with=%s): the state between runs is kept in %s",
                settings.compare_with.value,
                store.folder,
            )

    def _say_done(self, result: Mapping[str, Any]) -> None:
        requests = (
            f"{result['read_requests']} read and {result['write_requests']} write request(s) sent "
            f"({result['retried_requests']} of them retries) in {result['duration_seconds']:.1f} s"
        )
        creates = (
            f"{result['to_create']} would be created, {result['to_delete']} deleted, " if "to_create" in result else ""
        )
        if result["dry_run"]:
            self.log.info(
                "Hilos sync DRY RUN done, nothing was sent: %s%d would be updated (%d putting back hand edits), %d "
                "unchanged, %d not found, %d invalid, %d unreadable; %s",
                creates,
                result["to_update"],
                result["drift_found"],
                result["unchanged"],
                result["not_found"],
                result["invalid"],
                result["unreadable"],
                requests,
            )
            return
        done = f"{result['created']} created, {result['deleted']} deleted, " if "created" in result else ""
        approval = result.get("approval") or {}
        approved = (
            f"; the plan was approved by {approval['approved_by']}"
            + (
                f" ({result['not_approved']} write(s) held back: not the approved ones)"
                if result.get("not_approved")
                else ""
            )
            if approval.get("approved_by")
            else ""
        )
        self.log.info(
            "Hilos sync done: %s%d updated, %d failed, %d unchanged, %d not found, %d invalid; %d hand edit(s) put "
            "back; %s%s%s",
            done,
            result["updated"],
            result["failed"],
            result["unchanged"],
            result["not_found"],
            result["invalid"],
            result["drift_corrected"],
            requests,
            f"; {result['log_rows_pending']} sync log row(s) pending" if result.get("log_rows_pending") else "",
            approved,
        )

    def _result(
        self,
        runner: SyncRunner,
        batch: Mapping[str, Any] | None,
        *,
        dry: bool,
        store: SyncStateStore,
        saved: bool,
        report: AtomicText | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = {
            "dry_run": dry,
            "object": runner.obj.name,
            "compare_with": runner.settings.compare_with.value,
        }
        result.update(runner.counts(batch, dry_run=dry))
        result[f"not_found_{runner.obj.plural}"] = runner.not_found_names()
        result["summary"] = runner.summary.to_dict()
        result["costs"] = runner.costs()
        # the paths of the files this run wrote, and only those
        result["plan_path"] = runner.plan_path
        result["report_path"] = self.report_path if report is not None and report.committed else None
        result["state_path"] = str(store.path) if saved else None
        if self.log_table:
            result["log_table"] = self.log_table
        if batch is not None:
            result["batch"] = {
                k: batch[k]
                for k in ("updated", "already_applied", "failed", "not_sent", "retried", "throttled", "stopped")
                if k in batch
            }
            result["failed_rows"] = list(batch.get("failed_rows") or [])
        return result

    def _log_plan(self, runner: SyncRunner, settings: SyncSettings, dry: bool) -> None:
        counts, summary = runner.counts(None, dry_run=True), runner.summary
        what = "Hilos sync DRY RUN plan" if dry else "Hilos sync plan"
        creates = f"{counts['to_create']} to create, {counts['to_delete']} to delete, " if "to_create" in counts else ""
        self.log.info(
            "%s (%ss, compare_with=%s): %d desired: %d unchanged, %s%d to update (%d putting back hand edits, %d "
            "retried from the last run), %d not found, %d invalid, %d unreadable",
            what,
            runner.obj.name,
            settings.compare_with.value,
            counts["desired"],
            counts["unchanged"],
            creates,
            counts["to_update"],
            summary.drift_found,
            summary.retried,
            counts["not_found"],
            counts["invalid"],
            counts["unreadable"],
        )
        for line in summary.field_lines():
            self.log.info("%s: %s", what, line)
        for line in summary.left_alone_lines():
            self.log.info("%s: %s", what, line)
        for shown in summary.shown:
            self.log.info("%s: %s", what, json.dumps(shown, ensure_ascii=False, sort_keys=True))
        if summary.drift_ids:
            self.log.info("%s: hand edits put back in %s", what, ", ".join(summary.drift_ids[:20]))
        if names := runner.not_found_names():
            more = counts["not_found"] - len(names)
            self.log.warning(
                "%s: %d desired %s(s) not found in Hilos (not sent): %s%s",
                what,
                counts["not_found"],
                runner.obj.name,
                ", ".join(names),
                f" and {more} more (all are in the plan{' and the sync log' if self.log_table else ''})"
                if more > 0
                else "",
            )
        for row in summary.unreadable_rows[:LOGGED_NOT_FOUND]:
            self.log.warning(
                "%s: %s %s is unreadable: %s", what, runner.obj.name, row[runner.obj.key_column], row["error"]
            )
        if runner.plan_path:
            self.log.info("%s: written to %s", what, runner.plan_path)
        costs = runner.costs()
        self.log.info(
            "Hilos sync cost: compare_with=hilos %s reads + %s writes; last_sync 0 reads + %d writes; nothing 0 "
            "reads + %d writes",
            costs["hilos"]["reads"] if costs["hilos"]["reads"] is not None else f"≥{costs['hilos']['reads_at_least']}",
            costs["hilos"]["writes"] if costs["hilos"]["writes"] is not None else "?",
            costs["last_sync"]["writes"],
            costs["nothing"]["writes"],
        )

    def _lineage(self, facts: dict[str, Any]) -> Any:
        from airflow_provider_hilos.lineage import file_dataset, hilos_dataset, operator_lineage, sql_input_datasets

        result = facts["result"]
        inputs: list[Any] = []
        if self.sql is not None and self.sql_conn_id:
            inputs = sql_input_datasets(self.sql_conn_id, self.sql)
        elif self.state_path:
            inputs = [file_dataset(self.state_path)]
        counts = {k: v for k, v in result.items() if not isinstance(v, dict | list)}
        written = sum(int(result.get(name, 0)) for name in ("updated", "created", "deleted"))
        outputs = [hilos_dataset(facts["base_url"], written=written, name=self.DATASET)]
        return operator_lineage(inputs=inputs, outputs=outputs, run_counts=counts)


class ConversationSyncOperator(HilosSyncBase):
    """Make Hilos hold the desired state the warehouse declares: read it, compare it with what Hilos holds (or with
    what the last run applied), send only the conversations that differ, and keep the outcome of every one.

        Give the desired state as one of ``sql`` (with ``sql_conn_id``), ``state_path`` or ``state``. Its columns are
        ``conversation_id`` and any of ``status``, ``tags``, ``assigned``, ``assigned_team``, ``channel`` (other names
        through ``column_map``). A column not selected is not managed; a NULL cell leaves that field of that
        conversation as it is; ``-``, an empty string or an empty array means "must be empty". Tags and assignees may
        be SQL arrays (``text[]``, ``int[]``) or strings separated by ``list_separator``.

        Every desired row is validated before the first request. With ``compare_with="hilos"`` every list page is
        read before the first write. The plan (per conversation: ``unchanged``, ``update`` with each field's from and
        to, ``not_found``, ``invalid``) is logged, counted per field and per transition, and written to ``plan_path``;
        ``dry_run=True`` stops there. The updates go through the batch engine (pacing, circuit breaker, failure
        policy, checkpoint, report), under the same options as :class:`ConversationBatchUpdateOperator`. After each
        run, the snapshot of what was applied and the conversations that failed are written to ``state_store``;
        failed ones are sent again on the next run whatever their diff says. One run of a sync at a time, enforced:
        a run takes a lease in ``state_store`` before it reads anything; another run of the same sync (a manual run
        beside the scheduled one, a retry beside a zombie) waits for it (``wait_for_other_run``; deferred in the
        triggerer when deferrable), and a lease left by a killed worker expires within a minute.

        :param sql: a query returning the desired state, one row per conversation, or a ``.sql`` file (as in
            ``SQLExecuteQueryOperator``) (templated).
        :param sql_conn_id: the Airflow connection ``sql`` runs on: any connection whose hook is a common.sql
            ``DbApiHook`` (Postgres, Snowflake, BigQuery, SQLite, ...); the result is fetched in chunks
            (``chunk_size``; a server-side cursor on PostgreSQL), never whole (templated).
        :param parameters: the query's bind parameters (templated).
        :param chunk_size: rows fetched from the database at a time (default 5,000).
        :param log_table: a table on ``sql_conn_id`` to insert one row per conversation changed, failed, not found or
            invalid (run id, conversation id, the fields' from and to as JSON, outcome, error); its DDL is
            ``airflow_provider_hilos.sync.warehouse_log.LOG_TABLE_DDL``. A table name (``schema.table``), checked
            with its columns before the first request; rows the warehouse could not take are kept with the state
            and written first by the next run or retry (templated).
        :param state_path: instead of ``sql``: a change-set file (JSON Lines or CSV, the batch operator's format) on
            ``ObjectStoragePath`` (templated).
        :param state: instead of ``sql``: the rows as a list, an ``XComArg``, or a template rendering JSON (templated).
        :param column_map: source column -> field, e.g. ``{"team_id": "assigned_team", "id": "conversation_id"}``
            (names compared lower-cased).
        :param list_separator: what separates names or ids inside one text cell (default ``|``).
        :param compare_with: ``"hilos"`` (default: read the current state through the list, every page, before any
            write: catches hand edits, costs one read per page), ``"last_sync"`` (diff against the snapshot the last
            run left: no reads, misses hand edits) or ``"nothing"`` (send every desired row: a first load or a forced
            resync) (templated).
        :param tags_mode: ``"replace"`` (default: the desired list is the whole list) or ``"add"`` (the desired tags
            must be present, the others are kept: the update sends the union; needs ``compare_with="hilos"``)
            (templated).
        :param assigned_mode: the same for the assignees (templated).
        :param send_not_found: send a desired conversation the listing did not show, instead of reporting it
            ``not_found`` (default ``False``). A conversation missing from the first pass is looked for again at the
            front of the list first (new activity moves it there while the listing runs).
        :param page_size: rows per list page (default: the connection's extra ``page_size``, else 100).
        :param list_concurrency: list pages read at once, under the connection's quota like every request, handed to
            the comparison in order (default: ``max_concurrency``); no page past the last one the API's count
            announces is asked for, and once the list shows it moves (a row shown twice) it is read a page at a time.
        :param state_store: the folder sync states go under (an ``ObjectStoragePath``), one sub-folder per sync task
            (DAG, task and map index). Default: ``_hilos_sync_state`` next to the report if there is one, else
            ``$AIRFLOW_HOME/hilos_sync_state``. On distributed executors, use storage every worker reaches
            (templated).
        :param plan_path: where to write the plan, one JSON line per desired conversation that is not unchanged
            (default: beside the report, ``<report>.plan.jsonl``; none without a report) (templated).
        :param plan_unchanged: list the unchanged conversations in the plan file too (default ``False``).
        :param report_path: the batch's per-row report (see :class:`ConversationBatchUpdateOperator`) (templated).
        :param resume: checkpoint the applied updates, so a retried try skips them (default ``True``).
        :param checkpoint_path: where checkpoints go (see :class:`ConversationBatchUpdateOperator`) (templated).
        :param dry_run: read and plan, log the plan and return its summary; send nothing, keep no state, write no
            report and no sync log row (templated: ``"True"`` works). Its log says so first and last, and its result
            has ``dry_run: true`` and what the plan found, never what a real run did (no ``updated``).
        :param show_diffs: how many diffs are logged in full (and returned in the summary).
        :param wait_for_other_run: how long a run waits for another run of the same sync to let go of its state
            (seconds; default 1800): in the worker, or deferred when deferrable; then it fails, naming that run,
            without sending anything.
        {guard_options}
        {wait_options}
        :param hilos_conn_id: the Airflow connection of type ``hilos`` (templated).
    {batch_options}
        :return: what the plan found: ``desired`` (rows read), ``unchanged``, ``to_update``, ``not_found`` (and the
            first ``not_found_conversations``), ``invalid``, ``unreadable``, ``drift_found`` (updates putting back a
            hand edit), ``retried_from_last_run``; what a real run did: ``updated``, ``failed``, ``drift_corrected``
            (hand edits put back); every request sent (``read_requests``, ``write_requests``, retries included,
            ``retried_requests`` of them), ``duration_seconds``, the run's size (``listed_rows``, ``plan_seconds``,
            ``plan_rows_per_second``, ``peak_memory_mb``, ``work_db_mb``), the plan's ``summary`` (per field and per
            transition), ``costs`` (requests per compare mode), the sync log's ``log_rows_written`` and
            ``log_rows_pending``, and the paths of the files written. Pushed under the XCom key ``hilos_sync_result``
            too, also when the task fails or is refused (then with ``refused``, and its invalid rows in the sync log)
            and in a dry run. ``approval`` says what the guard decided (``decision``: ``apply``, ``apply_approved``,
            ``wait``, ``refuse``; the plan's ``digest``, its ``changes``, the ``limits`` and each one passed,
            ``approved_by``, ``approved_at``, ``held_back``), and ``not_approved`` counts the writes held back after an
            approval. When it succeeds, every ``Asset`` in ``outlets`` gets an event whose extra holds the counts.
    """

    template_fields: Sequence[str] = (*HilosSyncBase.COMMON_TEMPLATE_FIELDS, "tags_mode", "assigned_mode")
    COLUMNS = CONVERSATION_COLUMNS
    DATASET = "conversations"

    @with_batch_options
    def __init__(
        self,
        *,
        tags_mode: str = "replace",
        assigned_mode: str = "replace",
        send_not_found: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tags_mode = tags_mode
        self.assigned_mode = assigned_mode
        self.send_not_found = send_not_found
        self._check_when_parsed("compare_with", "tags_mode", "assigned_mode")

    def _settings(self) -> SyncSettings:
        return self._common_settings(
            **self._modes(tags_mode=ListMode, assigned_mode=ListMode),
            send_not_found=parse_flag(self.send_not_found, field="send_not_found"),
        )

    def _object(self) -> SyncObject:
        settings = self._settings()
        return ConversationObject(
            tags_mode=settings.tags_mode, assigned_mode=settings.assigned_mode, send_not_found=settings.send_not_found
        )


ConversationSyncOperator.__doc__ = with_guard_option_docs(
    with_wait_option_docs(with_batch_option_docs(ConversationSyncOperator.__doc__))
)
