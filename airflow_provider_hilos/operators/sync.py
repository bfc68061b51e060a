"""``ConversationSyncOperator``: make Hilos hold what the warehouse declares, sending only what differs."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_hilos.batch.options import BatchOptions, with_batch_option_docs, with_batch_options
from airflow_provider_hilos.connection import page_size_is_valid
from airflow_provider_hilos.exceptions import HilosBatchError, HilosValidationError
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.inputs import INPUT_FORMATS, list_separator_problem, rows_from_path
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
from airflow_provider_hilos.schemas import show
from airflow_provider_hilos.storage import AtomicText, StoragePath, same_place_key, storage_path
from airflow_provider_hilos.sync.desired import (
    DEFAULT_CHUNK_SIZE,
    RowShaper,
    column_map_problem,
    rows_from_sql,
    sql_hook,
)
from airflow_provider_hilos.sync.diff import CompareWith, ListMode
from airflow_provider_hilos.sync.runner import SyncRunner, SyncSettings
from airflow_provider_hilos.sync.state import SyncStateStore, sync_owner
from airflow_provider_hilos.sync.warehouse_log import log_rows, write_log

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

#: XCom key of a sync's result (also its return value when it succeeds, and pushed when it fails).
SYNC_RESULT_XCOM_KEY = "hilos_sync_result"


class ConversationSyncOperator(EmitsLineage, WaitsOutOutages, EngineStopper, BatchArguments, BaseOperator):
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
        failed ones are sent again on the next run whatever their diff says. Runs of one sync task should not
        overlap (``max_active_runs=1``): the last to finish writes the state.

        :param sql: a query returning the desired state, one row per conversation, or a ``.sql`` file (as in
            ``SQLExecuteQueryOperator``) (templated).
        :param sql_conn_id: the Airflow connection ``sql`` runs on: any connection whose hook is a common.sql
            ``DbApiHook`` (Postgres, Snowflake, BigQuery, SQLite, ...); the result is fetched in chunks
            (``chunk_size``; a server-side cursor on PostgreSQL), never whole (templated).
        :param parameters: the query's bind parameters (templated).
        :param chunk_size: rows fetched from the database at a time (default 5,000).
        :param log_table: a table on ``sql_conn_id`` to insert one row per conversation changed, failed, not found or
            invalid (run id, conversation id, the fields' from and to as JSON, outcome, error); its DDL is
            ``airflow_provider_hilos.sync.warehouse_log.LOG_TABLE_DDL`` (templated).
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
        :param state_store: the folder sync states go under (an ``ObjectStoragePath``), one sub-folder per sync task
            (DAG, task and map index). Default: ``_hilos_sync_state`` next to the report if there is one, else
            ``$AIRFLOW_HOME/hilos_sync_state``. On distributed executors, use storage every worker reaches
            (templated).
        :param plan_path: where to write the plan, one JSON line per desired conversation (default: beside the report,
            ``<report>.plan.jsonl``; none without a report) (templated).
        :param report_path: the batch's per-row report (see :class:`ConversationBatchUpdateOperator`) (templated).
        :param resume: checkpoint the applied updates, so a retried try skips them (default ``True``).
        :param checkpoint_path: where checkpoints go (see :class:`ConversationBatchUpdateOperator`) (templated).
        :param dry_run: read and plan, log the plan and return its summary; send nothing and keep no state
            (templated: ``"True"`` works).
        :param show_diffs: how many diffs are logged in full (and returned in the summary).
        {wait_options}
        :param hilos_conn_id: the Airflow connection of type ``hilos`` (templated).
    {batch_options}
        :return: ``desired``, ``unchanged``, ``to_update``, ``updated``, ``failed``, ``not_found``, ``invalid``,
            ``drift_corrected``, ``read_requests``, ``write_requests``, ``duration_seconds``, the plan's ``summary``
            (per field and per transition), ``costs`` (requests per compare mode), and the paths. Pushed under the XCom
            key ``hilos_sync_result`` too, also when the task fails. When it succeeds, every ``Asset`` in
            ``outlets`` gets an event whose extra holds the counts.
    """

    template_fields: Sequence[str] = (
        "sql",
        "sql_conn_id",
        "parameters",
        "log_table",
        "state_path",
        "state",
        "compare_with",
        "tags_mode",
        "assigned_mode",
        "state_store",
        "plan_path",
        "report_path",
        "checkpoint_path",
        *BatchOptions.names(),
        "hilos_dry_run",
        "hilos_conn_id",
    )
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"sql": "sql", "state": "json", "parameters": "json"}
    ui_color = "#075e54"
    #: the counts of a successful sync go into the event of every Asset in ``outlets``
    ASSET_EXTRA_FIELDS = (
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
        tags_mode: str = "replace",
        assigned_mode: str = "replace",
        send_not_found: bool = False,
        page_size: int | None = None,
        state_store: str | None = None,
        plan_path: str | None = None,
        report_path: str | None = None,
        resume: bool = True,
        checkpoint_path: str | None = None,
        dry_run: bool | str = False,
        show_diffs: int = 20,
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
        if problem := column_map_problem(column_map):
            raise ValueError(f"{where}: column_map {problem}")
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
        self.tags_mode = tags_mode
        self.assigned_mode = assigned_mode
        self.send_not_found = send_not_found
        self.page_size = page_size
        self.state_store = state_store
        self.plan_path = plan_path
        self.report_path = report_path
        self.resume = resume
        self.checkpoint_path = checkpoint_path
        self.hilos_dry_run = dry_run
        self.show_diffs = show_diffs
        self.hilos_conn_id = hilos_conn_id
        if not any("{{" in str(v) for v in (compare_with, tags_mode, assigned_mode)):
            self._settings()  # a wrong mode fails when the DAG file is parsed, not at run time

    # -- arguments --

    def _settings(self) -> SyncSettings:
        problems = []
        values: dict[str, Any] = {}
        for name, kind in (("compare_with", CompareWith), ("tags_mode", ListMode), ("assigned_mode", ListMode)):
            raw = getattr(self, name)
            try:
                values[name] = kind(str(raw).strip().lower())
            except ValueError:
                problems.append((name, f"{show(raw)} is not one of {', '.join(m.value for m in kind)}"))
        if problems:
            raise HilosValidationError(problems, "Invalid Hilos sync arguments")
        settings = SyncSettings(
            **values,
            send_not_found=parse_flag(self.send_not_found, field="send_not_found"),
            page_size=self.page_size,
            shown=self.show_diffs,
        )
        if problems := settings.problems():
            raise HilosValidationError(problems, "Invalid Hilos sync arguments")
        return settings

    def _desired_rows(self) -> Iterator[tuple[int, Any]]:
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
                self.state_path, input_format=self.input_format, list_separator=self.list_separator, name="state_path"
            )()
        else:
            from airflow_provider_hilos.rows import rows_from_updates

            origin, rows = "state", rows_from_updates(self.state)()
        shaper = RowShaper(self.column_map, self.list_separator, origin)
        return ((number, shaper.shape(row)) for number, row in rows)

    def _state_root(self) -> StoragePath:
        if self.state_store:
            return storage_path(self.state_store)
        if self.report_path:
            return storage_path(self.report_path).parent / "_hilos_sync_state"
        return default_checkpoint_root(None).parent / "hilos_sync_state"

    def _plan_target(self) -> AtomicText | None:
        path = self.plan_path or (f"{self.report_path}.plan.jsonl" if self.report_path else None)
        return AtomicText(storage_path(path)) if path else None

    def _check_paths(self) -> None:
        if self.state_path is None:
            return
        source = same_place_key(self.state_path)
        for name in ("report_path", "plan_path", "checkpoint_path", "state_store"):
            value = getattr(self, name)
            if value and same_place_key(value) == source:
                raise HilosValidationError(
                    [
                        (
                            name,
                            "is the input (state_path): writing it would destroy the desired state; choose another "
                            "path",
                        )
                    ],
                    "Invalid Hilos sync arguments",
                )

    # -- the run --

    def execute(self, context: Context) -> dict[str, Any]:
        return self._run_waiting(lambda: self._execute_once(context))

    def _execute_once(self, context: Context) -> dict[str, Any]:
        settings = self._settings()
        options = self.batch_options()
        self._check_paths()
        dry = parse_flag(self.hilos_dry_run, field="dry_run")
        ti = context["ti"]
        map_index = getattr(ti, "map_index", None)
        store = SyncStateStore(self._state_root(), sync_owner(ti.dag_id, ti.task_id, map_index))
        plan_target = self._plan_target()
        hook = self._hilos_hook = HilosHook(
            self.hilos_conn_id, pool_maxsize=options.max_concurrency, longest_hold=self._longest_hold()
        )
        runner = SyncRunner(hook, settings, options, store=store, log=self.log, keep_entries=bool(self.log_table))
        try:
            runner.read_desired(self._desired_rows())
            runner.plan(plan_target, keep_updates=not dry)
            self._log_plan(runner, settings)
            if dry:
                return self._result(runner, None, dry=True, store=store, plan=plan_target)
            checkpoint = self._checkpoint = task_checkpoint(
                context, resume=self.resume, checkpoint_path=self.checkpoint_path, report_path=self.report_path
            )
            report = AtomicText(storage_path(self.report_path)) if self.report_path else None
            batch: dict[str, Any] | None = None
            failure: HilosBatchError | None = None
            try:
                batch = runner.apply(report=report, checkpoint=checkpoint, engine=self._keep_engine)
            except HilosBatchError as exc:
                failure, batch = exc, exc.result
            finally:
                runner.save(ti.run_id)  # failed conversations are sent again next run
            if self.log_table:
                assert self.sql_conn_id is not None
                written = write_log(
                    sql_hook(self.sql_conn_id),
                    self.log_table,
                    log_rows(runner.entries, runner.outcomes, run_id=ti.run_id),
                )
                self.log.info("Hilos sync: %d row(s) written to the sync log %s", written, self.log_table)
            result = self._result(runner, batch, dry=False, store=store, plan=plan_target)
            ti.xcom_push(key=SYNC_RESULT_XCOM_KEY, value=result)
            if failure is not None:
                raise failure
            self.log.info(
                "Hilos sync done: %d updated, %d failed, %d unchanged, %d not found, %d drift corrected; %d read "
                "and %d write request(s) in %.1f s",
                result["updated"],
                result["failed"],
                result["unchanged"],
                result["not_found"],
                result["drift_corrected"],
                result["read_requests"],
                result["write_requests"],
                result["duration_seconds"],
            )
            self._lineage_facts = {"base_url": hook.settings.base_url, "result": result}
            announce(context, self.outlets, {name: result[name] for name in self.ASSET_EXTRA_FIELDS})
            return result
        finally:
            hook.close()

    def _result(
        self,
        runner: SyncRunner,
        batch: Mapping[str, Any] | None,
        *,
        dry: bool,
        store: SyncStateStore,
        plan: AtomicText | None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = {"dry_run": dry, "compare_with": runner.settings.compare_with.value}
        result.update(runner.counts(batch))
        result["summary"] = runner.summary.to_dict()
        result["costs"] = runner.costs()
        result["plan_path"] = None if plan is None else str(plan.target)
        result["report_path"] = self.report_path
        result["state_path"] = str(store.path)
        if batch is not None:
            result["batch"] = {
                k: batch[k]
                for k in ("updated", "already_applied", "failed", "not_sent", "retried", "throttled", "stopped")
                if k in batch
            }
            result["failed_rows"] = list(batch.get("failed_rows") or [])
        return result

    def _log_plan(self, runner: SyncRunner, settings: SyncSettings) -> None:
        counts, summary = runner.counts(None), runner.summary
        self.log.info(
            "Hilos sync plan (compare_with=%s): %d desired: %d unchanged, %d to update (%d putting back hand edits, %d "
            "retried from the last run), %d not found, %d invalid",
            settings.compare_with.value,
            counts["desired"],
            counts["unchanged"],
            counts["to_update"],
            summary.drift_corrected,
            summary.retried,
            counts["not_found"],
            counts["invalid"],
        )
        for line in summary.field_lines():
            self.log.info("Hilos sync plan: %s", line)
        for shown in summary.shown:
            self.log.info("Hilos sync plan: %s", json.dumps(shown, ensure_ascii=False, sort_keys=True))
        if summary.drift_ids:
            self.log.info("Hilos sync plan: hand edits put back in %s", ", ".join(summary.drift_ids[:20]))
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
        outputs = [hilos_dataset(facts["base_url"], written=result["updated"])]
        return operator_lineage(inputs=inputs, outputs=outputs, run_counts=counts)


ConversationSyncOperator.__doc__ = with_wait_option_docs(with_batch_option_docs(ConversationSyncOperator.__doc__))
