"""OpenLineage: a sync from a warehouse table shows as table -> Hilos conversations, a batch from a file as file ->
Hilos, an export as Hilos -> file; counts go with them; nothing fails a task, and no token goes anywhere."""

from __future__ import annotations

import json
import sqlite3
import sys

import pytest

from airflow_provider_hilos.lineage import hilos_namespace, storage_dataset_name
from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator
from airflow_provider_hilos.operators.export import ConversationExportOperator
from airflow_provider_hilos.operators.sync import ConversationSyncOperator
from tests.conftest import TEST_TOKEN, FakeTI


def test_the_hilos_namespace_names_the_api_instance():
    assert hilos_namespace("https://api.hilos.io") == "hilos://api.hilos.io"
    assert hilos_namespace("https://ACME.api-us1.com/api/3/") == "hilos://acme.api-us1.com/api/3"


def test_files_are_named_as_their_storage_names_them(tmp_path):
    assert storage_dataset_name(str(tmp_path / "a.csv")) == ("file", str(tmp_path / "a.csv"))
    assert storage_dataset_name("s3://bucket/hilos/a.csv") == ("s3://bucket", "hilos/a.csv")
    assert storage_dataset_name("file:///tmp/a.csv") == ("file", "/tmp/a.csv")


@pytest.fixture
def warehouse(tmp_path, monkeypatch, sb):
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE crm (conversation_id TEXT, status TEXT)")
        db.executemany("INSERT INTO crm VALUES (?, ?)", [(cid, "CLOSED") for cid in sb.conversation_ids()[:30]])
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return path


def names(datasets) -> list[tuple[str, str]]:
    return [(d.namespace, d.name) for d in datasets]


def test_a_sync_from_a_table_reads_the_table_and_writes_hilos_conversations(warehouse, sb):
    task = ConversationSyncOperator(
        task_id="sync", sql="SELECT conversation_id, status FROM crm", sql_conn_id="warehouse"
    )
    result = task.execute({"ti": FakeTI(task_id="sync")})
    lineage = task.get_openlineage_facets_on_complete(None)
    assert names(lineage.inputs) == [(f"sqlite://{warehouse}", "crm")]
    (output,) = lineage.outputs
    assert (output.namespace, output.name) == (hilos_namespace(sb.url), "conversations")
    assert output.facets["outputStatistics"].rowCount == result["updated"] > 0
    counts = lineage.run_facets["hilos"].counts
    assert counts["desired"] == 30 and counts["updated"] == result["updated"]
    assert TEST_TOKEN not in repr(lineage)


def test_a_batch_from_a_file_and_an_export_to_one(sb, tmp_path):
    changes = tmp_path / "changes.jsonl"
    changes.write_text(
        "".join(json.dumps({"conversation_id": c, "status": "NEW"}) + "\n" for c in sb.conversation_ids()[:5])
    )
    batch = ConversationBatchUpdateOperator(task_id="b", updates_path=str(changes))
    batch.execute({"ti": FakeTI()})
    lineage = batch.get_openlineage_facets_on_complete(None)
    assert names(lineage.inputs) == [("file", str(changes))]
    assert names(lineage.outputs) == [(hilos_namespace(sb.url), "conversations")]
    export = ConversationExportOperator(task_id="e", output_path=str(tmp_path / "all.csv"))
    export.execute({"ti": FakeTI(task_id="e")})
    lineage = export.get_openlineage_facets_on_complete(None)
    assert names(lineage.inputs) == [(hilos_namespace(sb.url), "conversations")]
    assert names(lineage.outputs) == [("file", str(tmp_path / "all.csv"))]
    assert lineage.outputs[0].facets["outputStatistics"].rowCount == 400


def test_lineage_never_fails_a_task_and_needs_the_openlineage_provider(sb, monkeypatch, tmp_path):
    task = ConversationExportOperator(task_id="e", output_path=str(tmp_path / "all.csv"))
    assert task.get_openlineage_facets_on_complete(None) is None  # nothing ran: nothing to say
    task.execute({"ti": FakeTI(task_id="e")})
    monkeypatch.setattr("airflow_provider_hilos.lineage.operator_lineage", lambda **kw: 1 / 0)
    assert task.get_openlineage_facets_on_complete(None) is None
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage", None)  # not installed
    assert task.get_openlineage_facets_on_complete(None) is None
