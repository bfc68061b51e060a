"""Resuming after a crash or a retry: what the checkpoint records, where, and what a later try skips."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import pytest

from airflow_provider_hilos.checkpoint import Checkpoint, fingerprint, folder_name, task_owner
from airflow_provider_hilos.exceptions import (
    HilosAPIUnavailableError,
    HilosCheckpointError,
    HilosConfigurationError,
    HilosPermanentBatchError,
    HilosValidationError,
)
from airflow_provider_hilos.hooks.hilos import HilosHook
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
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 2 and folders[0].startswith("hilos_tests__batch-") and "__batch__3-" in folders[1]
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
    checkpoint.open()
    checkpoint.record(cid, fingerprint(cid, {"status": "CLOSED"}))
    checkpoint.release()
    (segment,) = (tmp_path / "ti").glob("applied-*.txt")
    assert segment.read_text() == f"{cid} {fingerprint(cid, {'status': 'CLOSED'})}\n"
    segment.write_text(segment.read_text() + cid[:20])  # a line cut short by a crash
    assert Checkpoint(storage_path(str(tmp_path / "ti"))).applied() == {cid: fingerprint(cid, {"status": "CLOSED"})}
    assert fingerprint(cid, {"status": "CLOSED"}) != fingerprint(cid, {"status": "NEW"})


# -- audit 2, points 1, 2, 3, 7 and 8 (a damaged checkpoint line) --


def failed_once(sb, tmp_path, ti: FakeTI, rows: list[dict]) -> None:
    """A try that applies every row but fails on a missing conversation: its checkpoint stays."""
    with pytest.raises(HilosPermanentBatchError):
        ConversationBatchUpdateOperator(
            task_id="b",
            updates=[*rows, {"conversation_id": MISSING.format(0), "status": "NEW"}],
            checkpoint_path=str(tmp_path),
        ).execute({"ti": ti})


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"dag_id": "売上同期"}, {"dag_id": "在庫同期"}),  # non-Latin DAG ids that used to become one "_"
        ({"run_id": "sync:1"}, {"run_id": "sync+1"}),
        ({"run_id": "sync+1"}, {"run_id": "sync~1"}),
        ({"task_id": "a.b", "dag_id": "c"}, {"task_id": "b", "dag_id": "c.a"}),
    ],
)
def test_task_instances_whose_ids_look_alike_never_share_a_checkpoint(sb, tmp_path, first, second):
    ids = sb.conversation_ids()[:10]
    failed_once(sb, tmp_path, FakeTI(**{"run_id": "r", **first}), rows_for(ids))
    other = ConversationBatchUpdateOperator(task_id="b", updates=rows_for(ids), checkpoint_path=str(tmp_path)).execute(
        {"ti": FakeTI(**{"run_id": "r", **second})}
    )
    assert (other["updated"], other["already_applied"]) == (10, 0)  # nothing wrongly skipped
    assert len(list(tmp_path.iterdir())) == 1  # the failed one's checkpoint stays; the succeeded one's is gone


def test_a_checkpoint_folder_recorded_as_another_task_instances_is_refused_before_anything_is_sent(sb, tmp_path):
    failed_once(sb, tmp_path, FakeTI(run_id="mine"), rows_for(sb.conversation_ids()[:3]))
    (folder,) = tmp_path.iterdir()
    (folder / "owner.json").write_text(json.dumps({"dag_id": "x", "run_id": "y", "task_id": "z", "map_index": -1}))
    sb.clear_requests()
    with pytest.raises(HilosConfigurationError, match=r'belongs to another task instance .*dag_id "x"'):
        ConversationBatchUpdateOperator(
            task_id="b", updates=rows_for(sb.conversation_ids()[:3]), checkpoint_path=str(tmp_path)
        ).execute({"ti": FakeTI(run_id="mine")})
    assert patches(sb) == []


def test_dot_dot_ids_keep_the_checkpoint_under_its_root_and_clear_removes_only_its_own_files(sb, tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    unrelated = reports / "yesterday-report.jsonl"
    unrelated.write_text("keep me\n")
    ti = FakeTI(dag_id="..", task_id="..", run_id="..")
    result = ConversationBatchUpdateOperator(
        task_id="b",
        updates=rows_for(sb.conversation_ids()[:5]),
        report_path=str(reports / "today.jsonl"),
        checkpoint_path=str(reports),
    ).execute({"ti": ti})
    assert result["updated"] == 5
    assert unrelated.read_text() == "keep me\n"
    assert sorted(p.name for p in reports.iterdir()) == ["today.jsonl", "yesterday-report.jsonl"]
    assert "." not in folder_name(task_owner("..", "..", "..", None))  # no dots: never a parent folder


def test_clear_leaves_files_it_did_not_write(tmp_path):
    checkpoint = Checkpoint(storage_path(str(tmp_path / "ti")))
    checkpoint.open()
    checkpoint.record("6513270e-269e-4d37-b2a7-4de452e6b438", "0" * 16)
    (tmp_path / "ti" / "notes.txt").write_text("someone else's")
    checkpoint.clear()
    assert [p.name for p in (tmp_path / "ti").iterdir()] == ["notes.txt"]
    Checkpoint(storage_path(str(tmp_path / "gone"))).clear()  # nothing there: no error


def test_an_unwritable_checkpoint_is_a_configuration_error_before_the_first_request(sb, tmp_path):
    if os.geteuid() == 0:  # root writes read-only folders: use a file system nobody may create folders on
        root = "/proc/hilos-checkpoints"
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        root = str(tmp_path / "ro")
    with pytest.raises(HilosConfigurationError, match=r"checkpoint folder .* can't be written \(.+\); set checkpoint"):
        ConversationBatchUpdateOperator(
            task_id="b", updates=rows_for(sb.conversation_ids()[:5]), checkpoint_path=root
        ).execute({"ti": FakeTI()})
    assert patches(sb) == []


def test_a_checkpoint_path_that_is_a_file_is_a_configuration_error_before_the_first_request(sb, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(HilosConfigurationError, match="can't be written"):
        ConversationBatchUpdateOperator(
            task_id="b", updates=rows_for(sb.conversation_ids()[:5]), checkpoint_path=str(blocker)
        ).execute({"ti": FakeTI()})
    assert patches(sb) == []


def test_a_checkpoint_path_with_a_tilde_is_under_the_home_folder(sb, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    failed_once(sb, "~/cp", FakeTI(), rows_for(sb.conversation_ids()[:2]))
    assert (tmp_path / "cp").is_dir() and not (tmp_path / "~").exists()


def test_a_write_that_fails_mid_batch_is_a_checkpoint_error_not_an_outage(sb, tmp_path, monkeypatch):
    ids = sb.conversation_ids()[:40]
    real_write = Checkpoint.record
    calls = {"n": 0}

    def full_disk(self, conversation_id, digest):
        calls["n"] += 1
        if calls["n"] > 10:
            self._file = None
            raise HilosCheckpointError("Hilos batch: could not record progress (No space left on device)", result={})
        real_write(self, conversation_id, digest)

    monkeypatch.setattr(Checkpoint, "record", full_disk)
    ti = FakeTI()
    with pytest.raises(HilosCheckpointError, match="No space left"):
        ConversationBatchUpdateOperator(
            task_id="b", updates=rows_for(ids), max_concurrency=1, checkpoint_path=str(tmp_path)
        ).execute({"ti": ti})
    result = ti.pushed[BATCH_RESULT_XCOM_KEY]
    assert result["stop_reason"] == "checkpoint" and result["failed"] == 0
    assert result["updated"] == len({r["path"] for r in patches(sb) if r["status"] == 200})


def test_an_os_error_while_recording_becomes_a_checkpoint_error(tmp_path, monkeypatch):
    checkpoint = Checkpoint(storage_path(str(tmp_path / "ti")))
    checkpoint.open()

    class Full:
        def write(self, text):
            raise OSError(28, "No space left on device")

        def close(self):
            pass

    checkpoint._file = Full()  # type: ignore[assignment]
    with pytest.raises(HilosCheckpointError, match=r"\(No space left on device\)"):
        checkpoint.record("6513270e-269e-4d37-b2a7-4de452e6b438", "0" * 16)


def test_a_damaged_checkpoint_line_is_a_validation_error_naming_the_file_and_line(tmp_path):
    folder = tmp_path / "ti"
    folder.mkdir()
    cid = "6513270e-269e-4d37-b2a7-4de452e6b438"
    (folder / "applied-1-1-abcd1234-1.txt").write_text(f"{cid} {'0' * 16}\n{cid[:-1]}\u00b2 {'0' * 16}\n")
    with pytest.raises(HilosValidationError, match=r"applied-1-1-abcd1234-1.txt line 2"):
        Checkpoint(storage_path(str(folder))).applied()
    (folder / "applied-1-1-abcd1234-1.txt").write_bytes(b"\xff\xfe\n")
    with pytest.raises(HilosValidationError, match="not UTF-8"):
        Checkpoint(storage_path(str(folder))).applied()


def test_a_second_try_at_once_waits_and_skips_what_the_first_applied(sb, tmp_path):
    """A zombie and its retry: the retry waits for the lock, then skips every row the zombie applied."""
    ids = sb.conversation_ids()[:200]
    sb.set_faults(latency_ms=20)
    ti_first, ti_second = FakeTI(run_id="r"), FakeTI(run_id="r")
    results: dict[str, dict] = {}

    def run(name: str, ti: FakeTI) -> None:
        # the hook, as the operator calls it (Airflow 2's operators refuse execute() outside the main thread)
        checkpoint = Checkpoint.for_task(
            storage_path(str(tmp_path)), task_owner(ti.dag_id, ti.run_id, ti.task_id, ti.map_index)
        )
        try:
            with HilosHook() as hook:
                results[name] = hook.update_conversations(
                    rows_for(ids), max_concurrency=4, checkpoint=checkpoint
                ).to_dict()
        except Exception as exc:
            results[name] = {"error": repr(exc)}

    first = threading.Thread(target=run, args=("first", ti_first))
    first.start()
    deadline = time.monotonic() + 30
    while len(patches(sb)) < 20 and first.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    second = threading.Thread(target=run, args=("second", ti_second))
    second.start()
    first.join(60)
    second.join(60)
    sb.set_faults()
    assert results["first"].get("updated") == 200, results
    assert (results["second"]["already_applied"], results["second"]["updated"]) == (200, 0)
    assert len(patches(sb)) == 200  # every conversation once
    assert not list(tmp_path.iterdir())  # and the checkpoint is gone once both succeeded


def test_a_try_that_waits_too_long_for_another_stops_with_a_clear_message(tmp_path):
    holder = Checkpoint(storage_path(str(tmp_path / "ti")))
    holder.open()
    waiter = Checkpoint(storage_path(str(tmp_path / "ti")), lock_timeout=0.5)
    with pytest.raises(
        HilosConfigurationError, match=rf"another try .* held .* more than 0.5 s .*process {os.getpid()}"
    ):
        waiter.open()
    holder.release()
    waiter.open()  # free now
    waiter.release()


def test_concurrent_clears_never_raise(tmp_path):
    errors: list[BaseException] = []

    def one() -> None:
        try:
            checkpoint = Checkpoint(storage_path(str(tmp_path / "ti")), lock_timeout=30)
            checkpoint.open()
            checkpoint.record("6513270e-269e-4d37-b2a7-4de452e6b438", "0" * 16)
            checkpoint.clear()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []


@pytest.fixture
def memory_store():
    """An fsspec in-memory object store attached as ``memory://`` (as ``s3://`` is by its provider)."""
    import fsspec

    try:
        from airflow.sdk.io import attach
    except ImportError:  # Airflow 2
        from airflow.io.store import attach  # type: ignore[no-redef]
    fs = fsspec.filesystem("memory")
    attach("memory", fs=fs)
    root = f"memory://checkpoints-{uuid.uuid4().hex}"
    yield root
    fs.rm(root.removeprefix("memory://"), recursive=True) if fs.exists(root.removeprefix("memory://")) else None


def test_on_an_object_store_a_second_try_waits_for_the_lease(memory_store):
    holder = Checkpoint.for_task(storage_path(memory_store), task_owner("d", "r", "t", None), lease_seconds=30)
    holder.open()
    holder.record("6513270e-269e-4d37-b2a7-4de452e6b438", "0" * 16)
    waiter = Checkpoint.for_task(
        storage_path(memory_store), task_owner("d", "r", "t", None), lock_timeout=0.6, lease_seconds=30
    )
    with pytest.raises(HilosConfigurationError, match="another try"):
        waiter.open()
    holder.release()
    waiter.open()
    assert waiter.applied() == {"6513270e-269e-4d37-b2a7-4de452e6b438": "0" * 16}
    waiter.clear()
    assert (
        not storage_path(memory_store).exists()
        or not list(storage_path(memory_store).iterdir())
        or all(not list(p.iterdir()) for p in storage_path(memory_store).iterdir())
    )


def test_on_an_object_store_an_expired_lease_is_taken_over(memory_store):
    crashed = Checkpoint.for_task(storage_path(memory_store), task_owner("d", "r", "t", None), lease_seconds=0.3)
    crashed.open()  # and never released: the process died
    time.sleep(0.4)
    later = Checkpoint.for_task(storage_path(memory_store), task_owner("d", "r", "t", None), lock_timeout=2)
    later.open()
    later.release()
