"""ConversationExportOperator: the account to a change-set file, read back by the batch operator as is."""

from __future__ import annotations

import json

import pytest

from airflow_provider_hilos.exceptions import HilosAPIError, HilosValidationError
from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator
from airflow_provider_hilos.operators.export import EXPORT_RESULT_XCOM_KEY, ConversationExportOperator
from tests.conftest import FakeTI
from tests.helpers import patches


def unordered(conversation: dict) -> dict:
    """A conversation with its tag names and user ids as sorted lists (their order carries no meaning)."""
    return {
        **conversation,
        "tags": sorted(t["name"] for t in conversation["tags"]),
        "assigned": sorted(u["id"] for u in conversation["assigned"]),
    }


@pytest.mark.parametrize("name", ["all.jsonl", "all.csv"])
def test_an_export_holds_every_conversation_and_feeds_back_to_the_batch_as_is(sb, tmp_path, name):
    target = tmp_path / "out" / name
    ti = FakeTI()
    result = ConversationExportOperator(task_id="export", output_path=str(target), page_size=150).execute({"ti": ti})
    assert result["count"] == 400 and result["pages"] == 3 and result["format"] == name.split(".")[1]
    assert ti.pushed[EXPORT_RESULT_XCOM_KEY] == result
    before = {cid: sb.conversation(cid) for cid in sb.conversation_ids()}
    back = ConversationBatchUpdateOperator(task_id="b", updates_path=str(target), resume=False).execute(
        {"ti": FakeTI()}
    )
    assert back["updated"] == 400  # every row valid as written
    after = {cid: sb.conversation(cid) for cid in sb.conversation_ids()}
    assert {k: unordered(v) for k, v in after.items()} == {k: unordered(v) for k, v in before.items()}  # unchanged


def test_an_export_filtered_by_contact(sb, tmp_path):
    contact = sb.conversation(sb.conversation_ids()[5])["contact"]
    target = tmp_path / "one.jsonl"
    result = ConversationExportOperator(task_id="e", output_path=str(target), contact=contact).execute({"ti": FakeTI()})
    assert result["count"] >= 1
    assert all(json.loads(line)["conversation_id"] for line in target.read_text().splitlines())
    assert all("contact=" + contact in r["query"] for r in sb.requests() if r["method"] == "GET")


def test_a_failed_export_leaves_no_file_and_an_older_one_stays(sb, tmp_path):
    target = tmp_path / "all.jsonl"
    target.write_text("yesterday\n")
    sb.set_faults(max_page_size=100)
    sb.fail_next("ok")
    sb.fail_next("503", 50)  # page 2 fails for good
    with pytest.raises(HilosAPIError):
        ConversationExportOperator(task_id="e", output_path=str(target), page_size=100).execute({"ti": FakeTI()})
    assert target.read_text() == "yesterday\n" and [p.name for p in tmp_path.iterdir()] == ["all.jsonl"]


def test_bad_arguments_are_refused_before_any_request(sb, tmp_path):
    with pytest.raises(HilosValidationError, match="page_size"):
        ConversationExportOperator(task_id="e", output_path=str(tmp_path / "x.csv"), page_size="lots").execute(
            {"ti": FakeTI()}
        )
    with pytest.raises(HilosValidationError, match="output_format"):
        ConversationExportOperator(task_id="e", output_path=str(tmp_path / "x"), output_format="xlsx").execute(
            {"ti": FakeTI()}
        )
    assert sb.requests() == [] and patches(sb) == []


def test_the_export_is_templated():
    op = ConversationExportOperator(task_id="e", output_path="{{ ds }}.csv")
    assert {"output_path", "page_size", "contact", "search", "hilos_conn_id"} <= set(op.template_fields)


def test_a_listed_row_without_an_id_is_skipped_and_counted_not_a_crash(hilos_conn, requests_mock, tmp_path):
    listed = [
        {"id": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "status": "NEW", "tags": [], "assigned": []},
        {"status": "NEW", "tags": []},  # no id
        {"id": "", "status": "CLOSED"},
    ]
    hilos_conn()
    requests_mock.get(
        "https://api.hilos.io/api/inbox/conversation",
        json={"count": 3, "next": None, "previous": None, "results": listed},
    )
    target = tmp_path / "all.jsonl"
    result = ConversationExportOperator(task_id="e", output_path=str(target)).execute({"ti": FakeTI()})
    assert (result["count"], result["rows_without_id"]) == (1, 2)
    assert [json.loads(line)["conversation_id"] for line in target.read_text().splitlines()] == [listed[0]["id"]]
