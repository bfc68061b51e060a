"""The state a sync task leaves for its next run: one file per task, written whole, refused when not its own."""

from __future__ import annotations

import pytest

from airflow_provider_hilos.checkpoint import folder_name, task_owner
from airflow_provider_hilos.exceptions import HilosConfigurationError
from airflow_provider_hilos.storage import storage_path
from airflow_provider_hilos.sync.state import Snapshot, SyncStateStore, sync_owner

A = "6513270e-269e-4d37-b2a7-4de452e6b438"
B = "7513270e-269e-4d37-b2a7-4de452e6b438"


def snapshot() -> Snapshot:
    shot = Snapshot()
    shot.entries[A] = (A, {"status": "CLOSED", "tags": ("b2b", "vip"), "channel": None})
    shot.entries[B] = (B, {})
    shot.failed.add(B)
    shot.ids = {A: A, B: B}
    return shot


def test_a_snapshot_reads_back_as_it_was_written(tmp_path):
    store = SyncStateStore(storage_path(str(tmp_path)), sync_owner("crm", "sync"))
    assert not store.load().found  # never ran
    store.save(snapshot(), run_id="scheduled__1")
    loaded = store.load()
    assert loaded.found and loaded.run_id == "scheduled__1"
    assert loaded.entries == snapshot().entries and loaded.failed == snapshot().failed
    assert [p.name for p in store.path.parent.iterdir()] == ["state.jsonl"]  # no temporary left


def test_each_sync_task_has_its_own_state_and_a_run_never_shares_a_checkpoint_folder(tmp_path):
    root = storage_path(str(tmp_path))
    names = {
        SyncStateStore(root, sync_owner("crm", "sync")).folder.name,
        SyncStateStore(root, sync_owner("crm", "sync", 0)).folder.name,
        SyncStateStore(root, sync_owner("crm", "sync_b")).folder.name,
        SyncStateStore(root, sync_owner("crm/..", "sync")).folder.name,
    }
    assert len(names) == 4 and not any(".." in name or "/" in name for name in names)
    assert folder_name(task_owner("crm", "None", "sync", None)) not in names


def test_another_tasks_state_is_refused(tmp_path):
    root = storage_path(str(tmp_path))
    mine = SyncStateStore(root, sync_owner("crm", "sync"))
    mine.save(snapshot(), run_id="r")
    theirs = SyncStateStore(root, sync_owner("other", "sync"))
    theirs.path = mine.path  # as if two tasks were given one file
    with pytest.raises(HilosConfigurationError, match=r"belongs to another task .*dag_id=crm"):
        theirs.load()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json\n", "damaged at line 1"),
        ('{"format": "other", "version": 1}\n', "is not a sync state file"),
    ],
)
def test_a_damaged_state_stops_with_what_to_do(tmp_path, text, message):
    store = SyncStateStore(storage_path(str(tmp_path)), sync_owner("crm", "sync"))
    store.path.parent.mkdir(parents=True)
    (tmp_path / store.folder.name / "state.jsonl").write_text(text)
    with pytest.raises(HilosConfigurationError, match=message):
        store.load()


def test_a_state_that_cannot_be_written_names_state_store(tmp_path):
    (tmp_path / "file").write_text("")
    store = SyncStateStore(storage_path(str(tmp_path / "file")), sync_owner("crm", "sync"))
    with pytest.raises(HilosConfigurationError, match=r"can't be written .*state_store"):
        store.save(snapshot(), run_id="r")


def test_a_state_the_last_version_wrote_is_read_and_the_next_run_writes_the_new_format(tmp_path):
    """A state file written by the released provider (version 1, one JSON object per conversation) is read as it
    was meant: the snapshot and the failed conversation survive the upgrade, and the next save writes version 2."""
    import json
    import shutil
    from pathlib import Path

    from airflow_provider_hilos.storage import storage_path
    from airflow_provider_hilos.sync.state import SyncStateStore, sync_owner

    store = SyncStateStore(storage_path(str(tmp_path)), sync_owner("crm", "sync"))
    store.folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).parent / "data" / "state-v1.jsonl", str(store.path))
    header, entries = store.read()
    rows = list(entries)
    assert header is not None and header.run_id == "scheduled__2026-12-01T00:00:00+00:00"
    by_key = {key: (fields, failed) for key, _, fields, failed in rows}
    assert by_key["6513270e-269e-4d37-b2a7-4de452e6b438"] == (
        {"status": "CLOSED", "tags": ("b2b", "vip"), "assigned": (3, 12), "assigned_team": 2, "channel": None},
        False,
    )
    assert by_key["7513270e-269e-4d37-b2a7-4de452e6b438"] == ({"status": "RESOLVED"}, True)
    store.write(rows, run_id="next")
    assert json.loads(Path(str(store.path)).read_text().splitlines()[0])["version"] == 2
    _, again = store.read()
    assert {key: (fields, failed) for key, _, fields, failed in again} == by_key


def test_a_sync_task_is_named_as_a_person_reads_it():
    from airflow_provider_hilos.sync.state import sync_name

    assert sync_name("crm", "sync") == sync_name("crm", "sync", -1) == "crm.sync"
    assert sync_name("crm", "sync", 0) == "crm.sync[0]" and sync_name("crm", "sync", 3) == "crm.sync[3]"
