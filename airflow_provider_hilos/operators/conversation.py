"""ConversationUpdateOperator: "Partially update a Conversation" as a step of a DAG."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, ClassVar, cast

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_hilos import metrics
from airflow_provider_hilos.batch import BatchOptions, FailurePolicy
from airflow_provider_hilos.checkpoint import Checkpoint, StoragePath, task_key
from airflow_provider_hilos.exceptions import HilosBatchError, HilosError, HilosValidationError
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.links import CONVERSATION_URL_XCOM_KEY, HilosConversationLink
from airflow_provider_hilos.pacing import check_rate
from airflow_provider_hilos.rows import (
    RowSource,
    list_separator_problem,
    rows_from_csv,
    rows_from_json_lines,
    rows_from_updates,
    rows_in_shard,
    shard_problem,
)
from airflow_provider_hilos.schemas import CLEAR, parse_rendered, show, validate_update

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

#: The formats ``updates_path`` may be in (by default, chosen by its extension: ``.csv`` or anything else).
INPUT_FORMATS = ("jsonl", "csv")
#: XCom key of a batch's result (also its return value when it succeeds).
BATCH_RESULT_XCOM_KEY = "hilos_batch_result"
#: The explicit fields that may be given as operator arguments, overriding the payload's keys.
OVERRIDE_FIELDS = ("status", "tags", "assigned", "assigned_team", "channel")


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


def parse_flag(value: Any, *, field: str) -> bool:
    """A bool argument that may come from a template (``"True"``, ``"false"``, ``"1"``...).

    :raises HilosValidationError: anything else.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise HilosValidationError(
        [(field, f"must be True or False, got {type(value).__name__} {show(value)}")], f"Invalid Hilos {field}"
    )


class ConversationUpdateOperator(BaseOperator):
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
    :param assigned: the users to assign, by id: ``[12, 14]`` (``[{"id": 12}]`` works too); overrides
        ``payload["assigned"]``; ``[]`` or ``CLEAR`` unassigns everyone (templated).
    :param assigned_team: the team id to assign (a number, or a string of digits as a template renders it);
        overrides ``payload["assigned_team"]`` (templated).
    :param channel: the channel id; overrides ``payload["channel"]``; ``CLEAR`` (``"-"``, from
        :mod:`airflow_provider_hilos.schemas`) clears it (templated).
    :param dry_run: validate, resolve the connection and log exactly what would be sent (method, URL,
        body; never the token), but send nothing; returns what would be sent (templated: ``"True"`` works).
    :param hilos_conn_id: the Airflow connection of type ``hilos`` (templated).
    :return: the API's ``ConversationEdit`` (the whole conversation after the update), pushed to XCom;
        with ``dry_run``, ``{"dry_run": True, "method", "url", "body"}``.
    """

    # dry_run is kept as hilos_dry_run: BaseOperator.dry_run() is Airflow's own method
    template_fields: Sequence[str] = ("conversation_id", "payload", *OVERRIDE_FIELDS, "hilos_dry_run", "hilos_conn_id")
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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
        """The payload after rendering: parsed if it is a JSON string, with explicit fields on top (a list
        argument rendered as text, ``'["vip"]'``, is read back as a list)."""
        merged = parse_payload(self.payload)
        for field in OVERRIDE_FIELDS:
            value = getattr(self, field)
            if isinstance(value, str) and field in ("tags", "assigned") and value != CLEAR:
                value = parse_rendered(value, field=field, expected=list, example=_LIST_EXAMPLES[field])
            if value is not None:
                merged[field] = value
        return merged

    def execute(self, context: Context) -> dict[str, Any]:
        update = validate_update(self.conversation_id, self.build_payload())
        dry_run = parse_flag(self.hilos_dry_run, field="dry_run")
        hook = HilosHook(self.hilos_conn_id)
        with hook:
            context["ti"].xcom_push(
                key=CONVERSATION_URL_XCOM_KEY, value=hook.conversation_web_url(update.conversation_id)
            )
            if dry_run:
                planned = hook.planned_update(update)
                self.log.info(
                    "Dry run, nothing sent: would send %s %s with body %s",
                    planned["method"],
                    planned["url"],
                    json.dumps(update.body, sort_keys=True),
                )
                return {"dry_run": True, **planned}
            self.log.info(
                "Updating Hilos conversation %s: %s", update.conversation_id, json.dumps(update.body, sort_keys=True)
            )
            try:
                result = hook.send_update(update)
            except HilosError:
                metrics.incr(metrics.FAILED)
                raise
        metrics.incr(metrics.APPLIED)
        self.log.info(
            "Hilos conversation %s updated: status=%s, %d tag(s), %d assignee(s)",
            update.conversation_id,
            result.get("status"),
            len(result.get("tags") or []),
            len(result.get("assigned") or []),
        )
        return result


_LIST_EXAMPLES = {
    "tags": 'a list of tag names, e.g. ["vip", "renewal"]',
    "assigned": "a list of user ids, e.g. [12, 14]",
}


class ConversationBatchUpdateOperator(BaseOperator):
    """Update many Hilos conversations in one task: validated first, then sent concurrently.

    Use it past a few hundred conversations, where one mapped task per conversation costs seconds of
    scheduler and worker time each and runs into ``max_map_length``. Every row is validated before any
    request is sent; rows go out over one pooled session, ``max_concurrency`` at a time, at the pace the
    API allows (found by the batch, capped by ``max_requests_per_second``). A retried task (or a re-run
    after a crash) skips the rows an earlier try applied.

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
        ``.csv`` file, else ``jsonl`` (templated).
    :param list_separator: what separates the tag names and user ids in one CSV cell (default ``|``:
        ``vip|renewal``).
    :param report_path: where to write the per-row report, one JSON line per row with its outcome
        (``updated``, ``already_applied``, ``failed``, ``skipped``, ``not_sent``); its folder is created
        (templated).
    :param max_concurrency: a batch option (see :class:`~airflow_provider_hilos.batch.BatchOptions`, where
        each one is described): requests in flight at once.
    :param max_requests_per_second: a batch option: the most the batch may send, or ``None``.
    :param failure_policy: a batch option: ``fail_at_end``, ``fail_fast`` or ``never``.
    :param max_failed_ratio: a batch option: the share of rows that may fail without failing the task.
    :param skip_invalid_rows: a batch option: send the valid rows, skip (and report) the invalid ones.
    :param max_invalid_ratio: a batch option: with ``skip_invalid_rows``, the share that may be invalid.
    :param max_failed_rows: a batch option: how many failed and skipped rows the XCom result lists.
    :param progress_interval: a batch option: seconds between progress lines.
    :param resume: record each applied row in a checkpoint as it is applied, and skip the rows an earlier
        try of the same task instance recorded (default ``True``). The checkpoint is removed when the
        task succeeds, so a later run sends every row again.
    :param checkpoint_path: the folder checkpoints go under (an ``ObjectStoragePath``: local, ``s3://``...),
        one sub-folder per DAG, run, task and map index. Default: ``_hilos_checkpoints`` next to the
        report if there is one, else ``$AIRFLOW_HOME/hilos_checkpoints``. On distributed executors, use
        storage every worker reaches (templated).
    :param dry_run: validate every row, resolve the connection and log what would be sent (the first
        20 requests in full: method, URL, body; never the token), but send nothing; returns the counts and
        those requests (templated: ``"True"`` works).
    :param shard_index: with ``shard_count``: this task handles only the rows of shard ``shard_index``
        (``0`` to ``shard_count - 1``), chosen by a stable hash of the conversation id, so K tasks mapped over
        ``shard_index=range(K)`` split one change set between them, every row in exactly one shard and every
        row of one conversation in the same shard (so a repeated conversation is still refused).
        :meth:`sharded` builds those K tasks.
    :param shard_count: how many shards the change set is split into (``None``: not sharded).
    :param hilos_conn_id: the Airflow connection of type ``hilos`` (templated).
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

    def __init__(
        self,
        *,
        updates: list[dict[str, Any]] | str | None = None,
        updates_path: str | None = None,
        input_format: str | None = None,
        list_separator: str = "|",
        report_path: str | None = None,
        max_concurrency: int = 16,
        max_requests_per_second: float | None = None,
        failure_policy: FailurePolicy | str = FailurePolicy.FAIL_AT_END,
        max_failed_ratio: float = 0.0,
        skip_invalid_rows: bool = False,
        max_invalid_ratio: float | None = None,
        max_failed_rows: int = 100,
        progress_interval: float = 10.0,
        resume: bool = True,
        checkpoint_path: str | None = None,
        dry_run: bool | str = False,
        shard_index: int | None = None,
        shard_count: int | None = None,
        hilos_conn_id: str = HilosHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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
        arguments = locals()
        #: the batch options, checked here, when the DAG file is parsed
        self.options = BatchOptions(**{name: arguments[name] for name in BatchOptions.names()})
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
        source = self._unsharded_source()
        if self.shard_count is None or self.shard_index is None:
            return source
        return rows_in_shard(source, self.shard_index, self.shard_count)

    def _unsharded_source(self) -> RowSource:
        if self.updates_path is None:
            return rows_from_updates(self.updates)
        path = _storage_path(self.updates_path)
        if not path.exists():
            raise HilosValidationError(
                [
                    (
                        "updates_path",
                        f"{str(self.updates_path)!r} does not exist; check the path (and that the task "
                        "writing it ran first), or pass the rows as updates",
                    )
                ],
                "Invalid Hilos batch input",
            )
        fmt = self.input_format or ("csv" if str(self.updates_path).lower().endswith(".csv") else "jsonl")
        if fmt not in INPUT_FORMATS:
            raise HilosValidationError(
                [("input_format", f"{fmt!r} is not one of {', '.join(INPUT_FORMATS)}")], "Invalid Hilos batch input"
            )

        def open_text() -> IO[str]:
            return path.open("r", encoding="utf-8", newline="")

        if fmt == "csv":
            return rows_from_csv(open_text, separator=self.list_separator)
        return rows_from_json_lines(open_text)

    def _checkpoint(self, context: Context) -> Checkpoint | None:
        if not self.resume:
            return None
        if self.checkpoint_path:
            root = _storage_path(self.checkpoint_path)
        elif self.report_path:
            root = _storage_path(self.report_path).parent / "_hilos_checkpoints"
        else:
            home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
            root = _storage_path(os.path.join(home, "hilos_checkpoints"))
        ti = context["ti"]
        key = task_key(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", None))
        folder = root
        for part in key.split("/"):
            folder = folder / part
        return Checkpoint(folder)

    def _report(self) -> Callable[[], IO[str]] | None:
        if not self.report_path:
            return None
        path = _storage_path(self.report_path)

        def open_report() -> IO[str]:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError:  # object stores have no folders; the write below says what is wrong, if anything
                pass
            return path.open("w", encoding="utf-8")

        return open_report

    def execute(self, context: Context) -> dict[str, Any]:
        source = self._source()
        hook = HilosHook(self.hilos_conn_id, pool_maxsize=self.options.max_concurrency)
        if parse_flag(self.hilos_dry_run, field="dry_run"):
            try:
                return hook.plan_updates(source, self.options, checkpoint=self._checkpoint(context))
            finally:
                hook.close()
        try:
            result = hook.update_conversations(
                source, self.options, report=self._report(), checkpoint=self._checkpoint(context)
            ).to_dict()
        except HilosBatchError as exc:
            exc.result["report_path"] = self.report_path
            context["ti"].xcom_push(key=BATCH_RESULT_XCOM_KEY, value=exc.result)
            raise
        finally:
            hook.close()
        result["report_path"] = self.report_path
        context["ti"].xcom_push(key=BATCH_RESULT_XCOM_KEY, value=result)
        self._announce(context, {field: result[field] for field in self.ASSET_EXTRA_FIELDS})
        return result

    def _announce(self, context: Context, summary: dict[str, Any]) -> None:
        """Put the batch's counts in the event of every Asset in ``outlets`` (downstream DAGs scheduled on it
        run after a sync, and can read what it did from the event's extra)."""
        events = context.get("outlet_events")
        if events is None:
            return
        from airflow.providers.common.compat.assets import Asset

        for outlet in self.outlets or []:
            if isinstance(outlet, Asset):
                events[outlet].extra.update(summary)


def _storage_path(path: str | os.PathLike[str] | StoragePath) -> StoragePath:
    """An ``ObjectStoragePath`` for a path or URL (a plain path is a local file)."""
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    return cast(StoragePath, path if isinstance(path, ObjectStoragePath) else ObjectStoragePath(str(path)))
