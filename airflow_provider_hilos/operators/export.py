"""``ConversationExportOperator``: the account's conversations, written to a change-set file."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_hilos import metrics
from airflow_provider_hilos.connection import MAX_PAGE_SIZE, page_size_is_valid
from airflow_provider_hilos.conversations import state_from_row
from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.export import output_format, write_change_set
from airflow_provider_hilos.hooks.hilos import HilosHook, ListingProgress
from airflow_provider_hilos.inputs import list_separator_problem
from airflow_provider_hilos.operators._common import (
    DEFAULT_DEFER_AFTER_SECONDS,
    DEFAULT_MAX_WAIT,
    EmitsLineage,
    WaitsOutOutages,
    announce,
    with_wait_option_docs,
)
from airflow_provider_hilos.storage import storage_path

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

#: XCom key of the export's summary (also its return value).
EXPORT_RESULT_XCOM_KEY = "hilos_export"


class ConversationExportOperator(EmitsLineage, WaitsOutOutages, BaseOperator):
    """Write every conversation of the account (or of one contact, or matching a search) to a file in the
    provider's change-set format, JSON Lines or CSV, so it can be edited and fed back to
    :class:`~airflow_provider_hilos.operators.conversation.ConversationBatchUpdateOperator` as is.

    Reads the paginated list endpoint through :meth:`HilosHook.iter_conversations
    <airflow_provider_hilos.hooks.hilos.HilosHook.iter_conversations>` (one page in memory at a time, each
    conversation once, under the connection's quota). The file is written to a temporary name and moved into place
    once complete: a failed export leaves no half file under ``output_path``.

    :param output_path: where to write (an ``ObjectStoragePath``: a local path, ``s3://...``) (templated).
    :param output_format: ``jsonl`` or ``csv``; default by the extension (``.csv``: CSV, else JSON Lines)
        (templated).
    :param page_size: rows per page asked for; default: the connection's extra ``page_size``, else 100 (Hilos
        publishes no maximum, 100 is a common cap of DRF APIs, and a server that caps lower is followed) (templated).
    :param contact: only this contact's conversations (a UUID) (templated).
    :param search: the API's free-text search (templated).
    :param list_separator: what joins the tag names and user ids of one CSV cell (default ``|``).
    {wait_options}
    :param hilos_conn_id: the Airflow connection of type ``hilos`` (templated).
    :return: ``{"count", "output_path", "format", "pages", "duplicates_skipped", "rows_without_id", "seconds"}``
        (``rows_without_id``: listed rows skipped because they name no conversation), pushed to XCom; an ``Asset``
        in ``outlets`` gets the same as its event's extra.
    """

    template_fields: Sequence[str] = (
        "output_path",
        "output_format",
        "page_size",
        "contact",
        "search",
        "hilos_conn_id",
    )
    ui_color = "#25d366"
    #: what a successful run puts in its Assets' event extra
    ASSET_EXTRA_FIELDS: ClassVar[tuple[str, ...]] = ("count", "output_path", "format")

    def __init__(
        self,
        *,
        output_path: str,
        output_format: str | None = None,
        page_size: int | str | None = None,
        contact: str | None = None,
        search: str | None = None,
        list_separator: str = "|",
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
        if problem := list_separator_problem(list_separator):
            raise HilosValidationError([("list_separator", problem)], "Invalid Hilos export arguments")
        self.output_path = output_path
        self.output_format = output_format
        self.page_size = page_size
        self.contact = contact
        self.search = search
        self.list_separator = list_separator
        self.hilos_conn_id = hilos_conn_id

    def _page_size(self) -> int | None:
        value = self.page_size
        if value is None or value == "":
            return None
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if not page_size_is_valid(value):
            raise HilosValidationError(
                [("page_size", f"must be a whole number from 1 to {MAX_PAGE_SIZE} (default: the connection's)")],
                "Invalid Hilos export arguments",
            )
        return value

    def execute(self, context: Context) -> dict[str, Any]:
        return self._run_waiting(lambda: self._execute_once(context))

    def _execute_once(self, context: Context) -> dict[str, Any]:
        if not self.output_path or not isinstance(self.output_path, str):
            raise HilosValidationError(
                [("output_path", "must be a path or URL (a local path, s3://...)")], "Invalid Hilos export arguments"
            )
        fmt = output_format(self.output_path, self.output_format)
        page_size = self._page_size()
        started = time.monotonic()
        last: list[ListingProgress] = []

        def on_page(progress: ListingProgress) -> None:
            if not last:
                last.append(progress)
            if progress.pages == 1 or progress.pages % 50 == 0:
                self.log.info(
                    "Hilos export: page %d, %d conversation(s) read of %s",
                    progress.pages,
                    progress.rows,
                    progress.count,
                )

        with HilosHook(self.hilos_conn_id, longest_hold=self._longest_hold()) as hook:
            self._hilos_hook = hook
            rows = hook.iter_conversations(
                page_size=page_size, contact=self.contact, search=self.search, on_page=on_page
            )
            unreadable = [0]

            def states() -> Any:
                for row in rows:
                    try:
                        yield state_from_row(row)
                    except ValueError:  # a row without an id: nothing a change set can name; counted, not written
                        unreadable[0] += 1
                        if unreadable[0] <= 5:
                            self.log.warning("Hilos export: a listed row has no conversation id; it is skipped")

            count = write_change_set(
                storage_path(self.output_path),
                states(),
                fmt=fmt,
                separator=self.list_separator,
                log=self.log,
            )
        metrics.incr(metrics.READ, count)
        progress = last[0] if last else ListingProgress()
        result = {
            "count": count,
            "output_path": self.output_path,
            "format": fmt,
            "pages": progress.pages,
            "duplicates_skipped": progress.duplicates,
            "rows_without_id": unreadable[0],
            "seconds": round(time.monotonic() - started, 3),
        }
        if unreadable[0]:
            self.log.warning(
                "Hilos export: %d listed row(s) had no conversation id and were skipped (they are not in the file)",
                unreadable[0],
            )
        self.log.info(
            "Hilos export: %d conversation(s) written to %s (%s) from %d page(s), %d seen twice as the list moved",
            count,
            self.output_path,
            fmt,
            progress.pages,
            progress.duplicates,
        )
        context["ti"].xcom_push(key=EXPORT_RESULT_XCOM_KEY, value=result)
        self._lineage_facts = {"base_url": hook.settings.base_url, "result": result}
        announce(context, self.outlets, {field: result[field] for field in self.ASSET_EXTRA_FIELDS})
        return result

    def _lineage(self, facts: dict[str, Any]) -> Any:
        from airflow_provider_hilos.lineage import file_dataset, hilos_dataset, operator_lineage

        result = facts["result"]
        return operator_lineage(
            inputs=[hilos_dataset(facts["base_url"])],
            outputs=[file_dataset(result["output_path"], written=result["count"])],
            run_counts=result,
        )


ConversationExportOperator.__doc__ = with_wait_option_docs(ConversationExportOperator.__doc__)
