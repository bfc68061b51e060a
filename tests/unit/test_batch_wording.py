"""How messages name a batch and its rows: a change set's rows by their line, a sync's by their conversation."""

from __future__ import annotations

from airflow_provider_hilos.batch.options import BatchOptions
from airflow_provider_hilos.batch.pipeline import Survey
from airflow_provider_hilos.batch.result import BatchResult
from airflow_provider_hilos.batch.verdict import batch_verdict, validation_verdict
from airflow_provider_hilos.batch.wording import BATCH, SYNC_ROWS, SYNC_UPDATES

A = "6513270e-269e-4d37-b2a7-4de452e6b438"


def test_a_batch_names_rows_by_line_and_a_sync_by_conversation():
    assert BATCH.row(12, A) == f"row 12 (conversation {A})" and BATCH.row(3, None) == "row 3"
    assert SYNC_UPDATES.row(597, A) == f"conversation {A}"  # a query's row order moves between runs
    assert SYNC_UPDATES.row(597, None) == "row 597"  # the position only when there is no id


def test_a_syncs_refusals_and_failures_speak_of_the_sync():
    survey = Survey(total=4, invalid=1, listed=[(f"conversation {A}", "status: 'DONE' is not a valid status")])
    refusal = validation_verdict(survey, BatchOptions(), SYNC_ROWS)
    assert refusal is not None and str(refusal).startswith("Hilos sync refused: 1 of 4 desired row(s) are invalid")
    assert "skip_invalid_rows=True to sync the valid rows only" in str(refusal) and "batch" not in str(refusal)
    result = BatchResult(total=3, updated=2, failed=1)
    result.failed_rows = [{"row": 597, "conversation_id": A, "status_code": 400, "error": "Invalid pk"}]
    failure = batch_verdict(result, BatchOptions(), SYNC_UPDATES)
    assert failure is not None and str(failure).startswith("Hilos sync failed: 1 of 3 update(s) failed")
    assert f"First failures: conversation {A}: Invalid pk" in str(failure) and "row 597" not in str(failure)
    batch = batch_verdict(result, BatchOptions())
    assert batch is not None and str(batch).startswith("Hilos batch failed: 1 of 3 row(s)")
