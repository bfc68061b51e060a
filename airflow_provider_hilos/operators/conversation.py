"""The update operators: ``ConversationUpdateOperator`` ("Partially update a Conversation" as a step of a DAG) and
``ConversationBatchUpdateOperator`` (thousands of updates in one task)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_hilos.batch.dry_run import dry_run
from airflow_provider_hilos.batch.options import BatchOptions, with_batch_option_docs, with_batch_options
from airflow_provider_hilos.batch.pipeline import RowPipeline, UpdatePipeline
from airflow_provider_hilos.exceptions import HilosBatchError, HilosValidationError
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.inputs import INPUT_FORMATS, list_separator_problem, rows_from_path
from airflow_provider_hilos.links import (
    CONVERSATION_URL_ATTRIBUTE,
    CONVERSATION_URL_XCOM_KEY,
    HilosConversationLink,
)
from airflow_provider_hilos.operators._common import (
    DEFAULT_DEFER_AFTER_SECONDS,
    DEFAULT_MAX_WAIT,
    BatchArguments,
    EmitsLineage,
    EngineStopper,
    WaitsOutOutages,
    announce,
    parse_flag,
    task_checkpoint,
    with_wait_option_docs,
)
from airflow_provider_hilos.pacing import check_rate
from airflow_provider_hilos.people import PeopleResolver
from airflow_provider_hilos.rows import RowSource, rows_from_updates, shard_problem
from airflow_provider_hilos.schemas import WRITABLE_FIELDS, parse_rendered, show, validate_update
from airflow_provider_hilos.storage import AtomicText, same_place_key, storage_path

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

#: XCom key of a batch's result (also its return value when it succeeds).
BATCH_RESULT_XCOM_KEY = "hilos_batch_result"


def parse_payload(payload: Any, *, field: str = "payload") -> dict[str, Any]:
    """Return the payload as a dict: a mapping as is, a rendered template string parsed.

    A string may be JSON (``{"status": "CLOSED"}``) or, as ``{{ ti.xcom_pull(...) }}`` renders a dict
    without ``render_template_as_native_obj``, a Python literal (``{'status': 'CLOSED'}``).

    :param payload: a dict, a JSON object string, or ``None`` (an empty payload).
    :param field: the argument name used in error messages.
    :raises HilosValidationError: when it is neither a dict nor a JSON object string.
    """
    if payload is None:
        return {}
    if isinstance(payload, Mapping):
        return dict(payload)
    if isinstance(payload, (str, bytes)):
        return dict(
            parse_rendered(
                payload,
                field=field,
                expected=dict,
                example='a JSON object of fields to update, e.g. {"status": "CLOSED"}',
            )
        )
    raise HilosValidationError(
        [
            (
                field,
                f"must be a dict of fields to update (or a JSON object string), got {type(payload).__name__} "
                f"{show(payload)}",
            )
        ],
        "Invalid Hilos payload",
    )


class ConversationUpdateOperator(WaitsOutOutages, BaseOperator):
    """Partially update one Hilos conversation (``PATCH .../conversation/{id}/update``).

    Only the fields given are changed; a field given as ``None`` is not given (it stays as it is). The
    payload is validated completely before anything is sent; a bad payload fails the task at once (no
    Airflow retry), naming every bad field. Mapped instances show their conversation id in the grid.

    :param conversation_id: the conversation's UUID (templated).
    :param payload: the fields to change, e.g. ``{"status": "CLOSED", "tags": ["vip"]}``: a dict, an
        ``XComArg`` (``upstream.output``), or a template; a template rendered to a string
        (``render_template_as_native_obj=False``) must be a JSON object (or a dict's repr) and is parsed
        (templated).
    :param status: the new status (``CREATED``, ``FLOW``, ``FLOW_PAUSED``, ``NEW``, ``IN_PROGRESS``,
        ``RESOLVED``, ``CLOSED``); overrides ``payload["status"]`` (templated).
    :param tags: the tags to set, by name: ``["vip", "renewal"]`` (``[{"name": "vip"}]`` works too);
        overrides ``payload["tags"]``; ``[]`` or ``CLEAR`` removes them all (templated).
    :param assigned: the users to assign, by id or by email: ``[12, "ana@example.com"]`` (``[{"id": 12}]`` works
        too; emails are looked up once in the account's members, ignoring case, and an unknown one fails the task
        before the update is sent); overrides ``payload["assigned"]``; ``[]`` or ``CLEAR`` unassigns everyone
        (templated).
    :param assigned_team: the team to assign: its id (a number, or a string of digits as a template renders it) or
        its name as the members' teams show it (``"Support"``); overrides ``payload["assigned_team"]`` (templated).
    :param channel: the channel id; overrides ``payload["channel"]``; ``CLEAR`` (``"-"``, from
        :mod:`airflow_provider_hilos.schemas`) clears it (templated).
    :param dry_run: validate, resolve the connection and log exactly what would be sent (method, URL,
        body; never the token), but send nothing; returns what would be sent (templated: ``"True"`` works).
    {wait_options}
    :param hilos_conn_id: the Airflow connection of type ``hilos`` (templated).
    :return: the API's ``ConversationEdit`` (the whole conversation after the update), pushed to XCom;
        with ``dry_run``, ``{"dry_run": True, "method", "url", "body"}``.
    """

    # dry_run is kept as hilos_dry_run: BaseOperator.dry_run() is Airflow's own method
    template_fields: Sequence[str] = ("conversation_id", "payload", *WRITABLE_FIELDS, "hilos_dry_run", "hilos_conn_id")
    template_fields_renderers: ClassVar[dict[str, str]] = {"payload": "json", "tags": "json", "assigned": "json"}
    operator_extra_links = (HilosConversationLink(),)
    ui_color = "#25d366"
    #: what a mapped instance shows in the grid instead of its index
    DEFAULT_MAP_INDEX_TEMPLATE = "{{ task.conversation_id }}"

    def __init__(
        self,
        *,
        conversation_id: str,
        payload: dict[str, Any] | str | None = None,
        status: str | None = None,
        tags: list[str | dict[str, Any]] | str | None = None,
        assigned: list[int | str | dict[str, Any]] | str | None = None,
        assigned_team: int | str | None = None,
        channel: int | str | None = None,
        dry_run: bool | str = False,
        hilos_conn_id: str = HilosHook.default_conn_name,
        deferrable: bool | None = None,
        defer_after_seconds: float = DEFAULT_DEFER_AFTER_SECONDS,
        max_wait: float = DEFAULT_MAX_WAIT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._take_wait_arguments(
            deferrable, defer_after_seconds, max_wait, f"{type(self).__name__} {kwargs.get('task_id', '')!r}"
        )
        self.conversation_id = conversation_id
        self.payload = payload
        self.status = status
        self.tags = tags
        self.assigned = assigned
        self.assigned_team = assigned_team
        self.channel = channel
        self.hilos_dry_run = dry_run
        self.hilos_conn_id = hilos_conn_id

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """``BaseOperator.partial``, naming mapped instances by their conversation id unless told otherwise
        (``map_index_template=""`` shows the index)."""
        if kwargs.get("map_index_template") is None:
            kwargs["map_index_template"] = cls.DEFAULT_MAP_INDEX_TEMPLATE
        return super().partial(**kwargs)

    def build_payload(self) -> dict[str, Any]:
        """The payload after rendering: parsed if it is a JSON string, with explicit fields on top (each field is
        then read by :func:`~airflow_provider_hilos.schemas.validate_update`, as every path reads it: a list rendered
        as text, ``'["vip"]'``, is read back as a list)."""
        merged = parse_payload(self.payload)
        for field in WRITABLE_FIELDS:
            if (value := getattr(self, field)) is not None:
                merged[field] = value
        return merged

    def execute(self, context: Context) -> dict[str, Any]:
        return self._run_waiting(lambda: self._execute_once(context))

    def _execute_once(self, context: Context) -> dict[str, Any]:
        payload = self.build_payload()
        dry = parse_flag(self.hilos_dry_run, field="dry_run")
        hook = self._hook = self._hilos_hook = HilosHook(self.hilos_conn_id, longest_hold=self._longest_hold())
        people = PeopleResolver(hook.account_members.directory)
        if not people.needs(payload):
            update = validate_update(self.conversation_id, payload)  # before the hook does anything
        with hook:
            if people.needs(payload):  # agents by email, a team by name: one listing of the account's members
                payload, problems = people.resolve(payload)
                if problems:
                    raise HilosValidationError(
                        problems, f"Invalid Hilos update for conversation {show(self.conversation_id)}"
                    )
                update = validate_update(self.conversation_id, payload)
            url = hook.conversation_web_url(update.conversation_id)
            setattr(self, CONVERSATION_URL_ATTRIBUTE, url)  # the link, on Airflow 3 (read as the task ends)
            context["ti"].xcom_push(key=CONVERSATION_URL_XCOM_KEY, value=url)  # the link, on Airflow 2
            if dry:
                (planned,) = dry_run(hook, UpdatePipeline([update]), log=self.log, single=True)["requests"]
                return {"dry_run": True, **{key: planned[key] for key in ("method", "url", "body")}}
            self.log.info(
                "Updating Hilos conversation %s: %s", update.conversation_id, json.dumps(update.body, sort_keys=True)
            )
            result = hook.send_update(update)
        self.log.info(
            "Hilos conversation %s updated: status=%s, %d tag(s), %d assignee(s)",
            update.conversation_id,
            result.get("status"),
            len(result.get("tags") or []),
            len(result.get("assigned") or []),
        )
        return result

    def on_kill(self) -> None:
        """Stop: no retry of the update starts after this (a request in flight finishes, or times out)."""
        hook = getattr(self, "_hook", None)
        if hook is not None:
            hook.cancel()


class ConversationBatchUpdateOperator(EmitsLineage, WaitsOutOutages, EngineStopper, BatchArguments, BaseOperator):
    """Update many Hilos conversations in one task: validated first, then sent concurrently.

        Use it past a few hundred conversations, where one mapped task per conversation costs seconds of
        scheduler and worker time each and runs into ``max_map_length``. Every row is validated before any
        request is sent; rows go out over one pooled session, ``max_concurrency`` at a time, at the pace the
        API allows (found by the batch, capped by the connection's quota and ``max_requests_per_second``). A retried
        task (or a re-run after a crash) skips the conversations an earlier try updated. When the task is killed
        (marked failed, timed out), no new request starts, and what was applied is in the checkpoint.

        :param updates: rows ``{"conversation_id": ..., <fields>}`` (fields as in
            :class:`ConversationUpdateOperator`'s payload, ``None`` = not given, plain tag names and user ids;
            a nested ``"payload"`` dict works too): a list, an ``XComArg``, or a template rendering a JSON list
            (or a list's repr) (templated).
        :param updates_path: instead of ``updates``: a JSON Lines or CSV file, read as a stream through
            Airflow's ``ObjectStoragePath`` (local path, ``file://``, ``s3://``, ``gs://`` ... with the
            matching provider installed) (templated).
        :param input_format: ``jsonl`` (one JSON object per line) or ``csv`` (a header row with the columns
            ``conversation_id``, ``status``, ``tags``, ``assigned``, ``assigned_team``, ``channel``, any subset
            but ``conversation_id``; an empty cell is not given, ``-`` clears). Default: ``csv`` for a
            ``.csv`` file, else ``jsonl`` (templated). Assignees may be given by email and a team by name, in any
            format: they are looked up once in the account's members (ignoring case), and a row naming an email or a
            team the account does not have is invalid, naming both, before anything is sent.
        :param list_separator: what separates the tag names and user ids in one CSV cell (default ``|``:
            ``vip|renewal``).
        :param report_path: where to write the per-row report, one JSON line per row with its outcome
            (``updated``, ``already_applied``, ``failed``, ``skipped``, ``not_sent``); its folder is created, and it
            appears only once complete (written to a temporary name, then moved into place) (templated).
        :param resume: record each applied update in a checkpoint as it is applied, and skip the conversations an
            earlier try of the same task instance recorded with the same update (default ``True``). The checkpoint is
            removed when the task succeeds, so a later run sends every row again.
        :param checkpoint_path: the folder checkpoints go under (an ``ObjectStoragePath``: local, ``s3://``...),
            one sub-folder per task instance (DAG, run, task and map index: see
            :mod:`~airflow_provider_hilos.checkpoint`). Default: ``_hilos_checkpoints`` next to the report if there
            is one, else ``$AIRFLOW_HOME/hilos_checkpoints``. On distributed executors, use storage every worker
            reaches (templated).
        :param dry_run: validate every row, resolve the connection and log what would be sent (the first
            20 requests in full: method, URL, body; never the token), but send nothing; returns the counts and
            those requests (templated: ``"True"`` works).
        :param shard_index: with ``shard_count``: this task handles only the rows of shard ``shard_index``
            (``0`` to ``shard_count - 1``), chosen by a stable hash of the conversation id, so K tasks mapped over
            ``shard_index=range(K)`` split one change set between them, every row in exactly one shard and every
            row of one conversation in the same shard (so a repeated conversation is still refused). The rules on
            invalid rows apply to the whole change set, so every shard reaches the verdict the whole batch would.
            :meth:`sharded` builds those K tasks.
        :param shard_count: how many shards the change set is split into (``None``: not sharded).
        {wait_options}
        :param hilos_conn_id: the Airflow connection of type ``hilos`` (templated).
    {batch_options}
        :return: counts (``total``, ``updated``, ``already_applied``, ``failed``, ``skipped``, ``not_sent``,
            ``retried``, ``throttled``), ``duration_seconds``, ``rate_per_second``, the first ``failed_rows``
            and ``skipped_rows``, and why it ``stopped`` early if it did. The same result is always pushed
            under the XCom key ``hilos_batch_result`` too, so a downstream task can read it whether this
            task succeeded or failed. When it succeeds, every ``Asset`` in the task's ``outlets`` gets an
            event whose extra holds the counts (``ASSET_EXTRA_FIELDS``).
    """

    template_fields: Sequence[str] = (
        "updates",
        "updates_path",
        "input_format",
        "report_path",
        "checkpoint_path",
        *BatchOptions.names(),
        "hilos_dry_run",
        "hilos_conn_id",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"updates": "json"}
    ui_color = "#128c7e"
    #: the counts of a successful batch go into the event of every Asset in ``outlets``
    ASSET_EXTRA_FIELDS = (
        "total",
        "updated",
        "already_applied",
        "failed",
        "skipped",
        "not_sent",
        "duration_seconds",
        "rate_per_second",
        "report_path",
    )

    @with_batch_options
    def __init__(
        self,
        *,
        updates: list[dict[str, Any]] | str | None = None,
        updates_path: str | None = None,
        input_format: str | None = None,
        list_separator: str = "|",
        report_path: str | None = None,
        resume: bool = True,
        checkpoint_path: str | None = None,
        dry_run: bool | str = False,
        shard_index: int | None = None,
        shard_count: int | None = None,
        hilos_conn_id: str = HilosHook.default_conn_name,
        deferrable: bool | None = None,
        defer_after_seconds: float = DEFAULT_DEFER_AFTER_SECONDS,
        max_wait: float = DEFAULT_MAX_WAIT,
        **kwargs: Any,
    ) -> None:
        self._take_batch_options(kwargs)
        super().__init__(**kwargs)
        self._take_wait_arguments(
            deferrable, defer_after_seconds, max_wait, f"{type(self).__name__} {kwargs.get('task_id', '')!r}"
        )
        if problem := shard_problem(shard_index, shard_count):
            raise ValueError(f"{type(self).__name__} {kwargs.get('task_id', '')!r}: {problem}")
        if (updates is None) == (updates_path is None):
            raise ValueError(
                f"{type(self).__name__} {kwargs.get('task_id', '')!r}: give exactly one of updates "
                "(a list of rows, e.g. an XComArg) or updates_path (a JSON Lines or CSV file)"
            )
        if input_format not in (None, *INPUT_FORMATS) and "{{" not in str(input_format):
            raise ValueError(
                f"input_format={input_format!r} is not one of {', '.join(INPUT_FORMATS)} (or None: by "
                "the file's extension)"
            )
        if problem := list_separator_problem(list_separator):
            raise ValueError(f"list_separator={problem}")
        self.updates = updates
        self.updates_path = updates_path
        self.input_format = input_format
        self.list_separator = list_separator
        self.report_path = report_path
        self.hilos_dry_run = dry_run
        self.resume = resume
        self.checkpoint_path = checkpoint_path
        self.shard_index = shard_index
        self.shard_count = shard_count
        self.hilos_conn_id = hilos_conn_id

    @classmethod
    def sharded(
        cls,
        *,
        task_id: str,
        shards: int,
        total_requests_per_second: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """``shards`` mapped tasks that split one change set between them and share one API quota.

        Every task reads the same ``updates`` / ``updates_path`` and sends only its shard's rows (see
        ``shard_index``); each paces at ``total_requests_per_second / shards``, so the shards together never
        send more than ``total_requests_per_second`` while at most ``shards`` of them run at once. Give them
        an Airflow pool of ``shards`` slots (``pool="hilos_api"``) to make that hold across runs and DAGs.

        :param task_id: the mapped task's id.
        :param shards: how many tasks (at least 1).
        :param total_requests_per_second: the quota the shards share (``None``: each finds the API's pace).
        :param kwargs: any other argument of this operator (``updates_path``, ``pool``, ``retries`` ...),
            except ``shard_index``, ``shard_count`` and ``max_requests_per_second``, which this sets.
        :return: the mapped operator; its ``.output`` is the list of the shards' results (one dict each).
        """
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise ValueError(f"shards={show(shards)}: must be an integer, at least 1")
        taken = sorted({"shard_index", "shard_count", "max_requests_per_second"} & kwargs.keys())
        if taken:
            raise ValueError(
                f"{cls.__name__}.sharded sets {', '.join(taken)} itself; give the shared quota as "
                "total_requests_per_second"
            )
        rate = check_rate(total_requests_per_second, "total_requests_per_second")
        kwargs.setdefault("map_index_template", f"shard {{{{ task.shard_index }}}} of {shards}")
        return cls.partial(
            task_id=task_id,
            shard_count=shards,
            max_requests_per_second=None if rate is None else rate / shards,
            **kwargs,
        ).expand(shard_index=list(range(shards)))

    def _source(self) -> RowSource:
        if self.updates_path is None:
            return rows_from_updates(self.updates)
        return rows_from_path(self.updates_path, input_format=self.input_format, list_separator=self.list_separator)

    def _check_paths(self) -> None:
        """Refuse a report or checkpoint path that is the input, before anything is opened for writing."""
        if self.updates_path is None:
            return
        source = same_place_key(self.updates_path)
        for field in ("report_path", "checkpoint_path"):
            value = getattr(self, field)
            if value and same_place_key(value) == source:
                raise HilosValidationError(
                    [(field, "is the input (updates_path): writing it would destroy the rows; choose another path")],
                    "Invalid Hilos batch arguments",
                )

    def execute(self, context: Context) -> dict[str, Any]:
        return self._run_waiting(lambda: self._execute_once(context))

    def _execute_once(self, context: Context) -> dict[str, Any]:
        options = self.batch_options()
        self._check_paths()
        hook = self._hilos_hook = HilosHook(
            self.hilos_conn_id, pool_maxsize=options.max_concurrency, longest_hold=self._longest_hold()
        )
        pipeline = RowPipeline(
            self._source(),
            shard_index=self.shard_index,
            shard_count=self.shard_count,
            people=PeopleResolver(hook.account_members.directory),  # one listing, only if a row names an email
        )
        checkpoint = self._checkpoint = task_checkpoint(
            context, resume=self.resume, checkpoint_path=self.checkpoint_path, report_path=self.report_path
        )
        if parse_flag(self.hilos_dry_run, field="dry_run"):
            try:
                return hook.plan_updates(pipeline, options, checkpoint=checkpoint)
            finally:
                hook.close()
        report = AtomicText(storage_path(self.report_path)) if self.report_path else None
        try:
            result = hook.update_conversations(
                pipeline, options, report=report, checkpoint=checkpoint, engine=self._keep_engine
            ).to_dict()
        except HilosBatchError as exc:
            exc.result["report_path"] = self.report_path
            context["ti"].xcom_push(key=BATCH_RESULT_XCOM_KEY, value=exc.result)
            raise
        finally:
            hook.close()
        result["report_path"] = self.report_path
        context["ti"].xcom_push(key=BATCH_RESULT_XCOM_KEY, value=result)
        self._lineage_facts = {"base_url": hook.settings.base_url, "result": result}
        announce(context, self.outlets, {field: result[field] for field in self.ASSET_EXTRA_FIELDS})
        return result

    def _lineage(self, facts: dict[str, Any]) -> Any:
        from airflow_provider_hilos.lineage import file_dataset, hilos_dataset, operator_lineage

        result = facts["result"]
        inputs = [file_dataset(self.updates_path)] if self.updates_path else []
        outputs = [hilos_dataset(facts["base_url"], written=result["updated"])]
        return operator_lineage(inputs=inputs, outputs=outputs, run_counts=result)


ConversationUpdateOperator.__doc__ = with_wait_option_docs(ConversationUpdateOperator.__doc__)
ConversationBatchUpdateOperator.__doc__ = with_wait_option_docs(
    with_batch_option_docs(ConversationBatchUpdateOperator.__doc__)
)
