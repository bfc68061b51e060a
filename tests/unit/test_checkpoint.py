"""Resuming after a crash or a retry: what the checkpoint records, where, and what a later try skips."""

from __future__ import annotations

import threading
import time

import pytest

from airflow_provider_hilos.checkpoint import Checkpoint, fingerprint
from airflow_provider_hilos.exceptions import (
    HilosAPIUnavailableError,
    HilosPermanentBatchError,
)
from airflow_provider_hilos.operators.conversation import (
    BATCH_RESULT_XCOM_KEY,
    ConversationBatchUpdateOperator,
)
from airflow_provider_hilos.storage import storage_path
from tests.conftest import FakeTI
from tests.helpers import MISSING, landed, patches, rows_for


def test_a_retried_batch_skips_the_rows_an_earlier_try_applied(sb, tmp_path):
    rows = rows_for(sb.conversation_ids()[:300])
    ti = FakeTI()
    op = ConversationBatchUpdateOperator(task_id="b", updates=rows, max_concurrency=8, checkpoint_path=str(tmp_path))

    def outage_after(count: int) -> None:
        while len(patches(sb)) < count:
            time.sleep(0.005)
        sb.set_faults(error_rate=1, error_statuses=[503], retry_after_seconds=0)

    trigger = threading.Thread(target=outage_after, args=(120,), daemon=True)
    trigger.start()
    with pytest.raises(HilosAPIUnavailableError):
        op.execute({"ti": ti})
    trigger.join()
    first = ti.pushed[BATCH_RESULT_XCOM_KEY]
    assert 100 <= first["updated"] < 300
    applied_first = {r["path"].split("/")[-2] for r in patches(sb) if r["status"] == 200}
    sb.set_faults()  # the API is back
    sb.clear_requests()
    second = op.execute({"ti": ti})  # Airflow's retry: the same task instance
    assert second["already_applied"] == first["updated"] and second["updated"] == 300 - first["updated"]
    assert not applied_first & {r["path"].split("/")[-2] for r in patches(sb)}  # nothing applied was re-sent
    assert landed(sb, rows)
    assert not list(tmp_path.rglob("*.txt"))  # the checkpoint is gone once the batch succeeded
    third = op.execute({"ti": ti})  # a re-run of a succeeded task sends everything again
    assert third["updated"] == 300 and third["already_applied"] == 0


def test_a_changed_row_is_sent_again_even_if_its_number_was_applied(sb, tmp_path):
    ids = sb.conversation_ids()[:10]
    ti = FakeTI()
    rows = [*rows_for(ids), {"conversation_id": MISSING.format(0), "status": "NEW"}]
    with pytest.raises(HilosPermanentBatchError):
        ConversationBatchUpdateOperator(task_id="b", updates=rows, checkpoint_path=str(tmp_path)).execute({"ti": ti})
    changed = rows_for(ids, status="CLOSED")[:5] + rows_for(ids)[5:]
    result = ConversationBatchUpdateOperator(task_id="b", updates=changed, checkpoint_path=str(tmp_path)).execute(
        {"ti": ti}
    )
    assert (result["already_applied"], result["updated"]) == (5, 5)
    assert all(sb.conversation(cid)["status"] == "CLOSED" for cid in ids[:5])


def test_checkpoints_are_kept_apart_by_dag_run_task_and_map_index(sb, tmp_path):
    rows = [*rows_for(sb.conversation_ids()[:5]), {"conversation_id": MISSING.format(0), "status": "NEW"}]
    for ti in (FakeTI(run_id="run_a"), FakeTI(run_id="run_a", map_index=3)):
        with pytest.raises(HilosPermanentBatchError):
            ConversationBatchUpdateOperator(task_id="b", updates=rows, checkpoint_path=str(tmp_path)).execute(
                {"ti": ti}
            )
    folders = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("*/*/*"))
    assert folders == ["hilos_tests/run_a/batch", "hilos_tests/run_a/batch.3"]
    other = ConversationBatchUpdateOperator(task_id="b", updates=rows[:5], checkpoint_path=str(tmp_path)).execute(
        {"ti": FakeTI(run_id="run_b")}
    )
    assert other["already_applied"] == 0


def interrupted(sb, op, ti, after: int) -> dict:
    """Run ``op`` until the API goes down after ``after`` PATCHes; return the result of that try."""

    def outage() -> None:
        while len(patches(sb)) < after:
            time.sleep(0.005)
        sb.set_faults(error_rate=1, error_statuses=[503], retry_after_seconds=0)

    trigger = threading.Thread(target=outage, daemon=True)
    trigger.start()
    with pytest.raises(HilosAPIUnavailableError):
        op.execute({"ti": ti})
    trigger.join()
    sb.set_faults()  # the API is back
    return ti.pushed[BATCH_RESULT_XCOM_KEY]


def test_a_retry_whose_input_was_regenerated_in_another_order_skips_what_landed(sb, tmp_path):
    """Progress is keyed by conversation: the retried query (or plan) may list the rows in any order."""
    ids = sb.conversation_ids()[:300]
    ti = FakeTI()
    first = interrupted(
        sb,
        ConversationBatchUpdateOperator(
            task_id="b", updates=rows_for(ids), max_concurrency=8, checkpoint_path=str(tmp_path)
        ),
        ti,
        after=120,
    )
    assert 100 <= first["updated"] < 300
    landed_first = {r["path"].split("/")[-2] for r in patches(sb) if r["status"] == 200}
    sb.clear_requests()
    regenerated = list(reversed([dict(row) for row in rows_for(ids)]))  # the same updates, read again, reversed
    second = ConversationBatchUpdateOperator(
        task_id="b", updates=regenerated, max_concurrency=8, checkpoint_path=str(tmp_path)
    ).execute({"ti": ti})
    assert second["already_applied"] == first["updated"] and second["updated"] == 300 - first["updated"]
    assert not landed_first & {r["path"].split("/")[-2] for r in patches(sb)}  # nothing that landed went again
    assert landed(sb, rows_for(ids))


def test_a_checkpoint_line_is_a_conversation_and_the_fingerprint_of_what_it_was_sent(tmp_path):
    checkpoint = Checkpoint(storage_path(str(tmp_path / "ti")))
    cid = "6513270e-269e-4d37-b2a7-4de452e6b438"
    checkpoint.record(cid, fingerprint(cid, {"status": "CLOSED"}))
    checkpoint.close()
    (segment,) = (tmp_path / "ti").iterdir()
    assert segment.read_text() == f"{cid} {fingerprint(cid, {'status': 'CLOSED'})}\n"
    segment.write_text(segment.read_text() + cid[:20])  # a line cut short by a crash
    assert Checkpoint(storage_path(str(tmp_path / "ti"))).applied() == {cid: fingerprint(cid, {"status": "CLOSED"})}
    assert fingerprint(cid, {"status": "CLOSED"}) != fingerprint(cid, {"status": "NEW"})
