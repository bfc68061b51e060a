"""What DAG authors reach for, in real DAG runs: plain tags and ids, None as "not given", dry runs, mapped
tasks named by their conversation, Asset events after a sync, CSV change sets, and the metrics sent."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator
from tests.conftest import AIRFLOW_V3, ROOT, TEST_DAGS, TEST_TOKEN, FakeTI, dag_bag, run_dag, xcom_value
from tests.test_dag_runs import patches, states

pytestmark = pytest.mark.usefixtures("airflow_db")


def bodies(sandbox) -> dict[str, dict]:
    """The body of every PATCH the sandbox received, by conversation id."""
    return {entry["path"].split("/")[-2]: entry["body"] for entry in patches(sandbox)}


def test_plain_tags_and_ids_and_none_mean_the_same_in_every_path(sandbox, output):
    cid, *ids = sandbox.conversation_ids()[:5]
    before = {c: sandbox.conversation(c) for c in ids}
    dag_run = run_dag("hilos_test_plain_values", {"conversation_id": cid, "ids": ids})
    assert dag_run.state == "success", states(dag_run)

    sent = bodies(sandbox)
    # names trimmed, the repeated "vip" sent once, ids as the API's objects, "{{ params.team }}" -> "2" -> 2
    assert sent[cid] == {
        "status": "IN_PROGRESS",
        "tags": [{"name": "vip"}, {"name": "renewal"}],
        "assigned": [{"id": 3}, {"id": 1}],
        "assigned_team": 2,
    }
    # the same warehouse rows (None = SQL NULL = not given) mapped, then in a batch: the same requests
    first_row = {"status": "RESOLVED", "tags": [{"name": "churn"}]}
    second_row = {"assigned": [{"id": 2}], "assigned_team": 1}
    assert [sent[ids[0]], sent[ids[1]]] == [first_row, second_row]  # mapped
    assert [sent[ids[2]], sent[ids[3]]] == [first_row, second_row]  # batch
    for conversation in (ids[0], ids[2]):
        after = sandbox.conversation(conversation)
        assert after["status"] == "RESOLVED" and [t["name"] for t in after["tags"]] == ["churn"]
        assert after["assigned"] == before[conversation]["assigned"]  # None left it as it was
        assert after["channel"] == before[conversation]["channel"]
    assert sandbox.conversation(cid)["assigned_team"] == 2
    assert TEST_TOKEN not in output()


def test_mapped_tasks_show_their_conversation_id(sandbox):
    cid, *ids = sandbox.conversation_ids()[:5]
    dag_run = run_dag("hilos_test_plain_values", {"conversation_id": cid, "ids": ids})
    assert dag_run.state == "success", states(dag_run)
    mapped = sorted(
        (ti.map_index, ti.rendered_map_index) for ti in dag_run.get_task_instances() if ti.task_id == "mapped"
    )
    assert mapped == [(0, ids[0]), (1, ids[1])]


def test_a_dry_run_sends_nothing_and_says_what_it_would_send(sandbox, output):
    cid, *ids = sandbox.conversation_ids()[:3]
    before = {c: sandbox.conversation(c) for c in sandbox.conversation_ids()}
    rows = [{"conversation_id": c, "status": "CLOSED", "tags": "vip"} for c in ids]
    rows[1]["tags"] = ["vip", "renewal"]
    rows[0]["tags"] = ["vip"]
    dag_run = run_dag("hilos_test_dry_run", {"conversation_id": cid, "rows": rows})
    assert dag_run.state == "success", states(dag_run)

    assert patches(sandbox) == []  # nothing was sent
    assert {c: sandbox.conversation(c) for c in before} == before
    url = f"{sandbox.url}/api/inbox/conversation/{cid}/update"
    single = xcom_value(dag_run, "single")
    assert single == {
        "dry_run": True,
        "method": "PATCH",
        "url": url,
        "body": {"status": "CLOSED", "tags": [{"name": "vip"}]},
    }
    batch = xcom_value(dag_run, "batch")
    assert (batch["dry_run"], batch["total"], batch["to_send"], batch["skipped"]) == (True, 2, 2, 0)
    assert [request["url"] for request in batch["requests"]] == [
        f"{sandbox.url}/api/inbox/conversation/{c}/update" for c in ids
    ]
    assert batch["requests"][1]["body"] == {"status": "CLOSED", "tags": [{"name": "vip"}, {"name": "renewal"}]}
    text = output()
    assert (
        f'Dry run, nothing sent: would send PATCH {url} with body {{"status": "CLOSED", "tags": [{{"name": "vip"}}]}}'
        in text
    )
    assert "Hilos batch dry run, nothing sent: 2 row(s), 2 would be sent as PATCH" in text
    assert f"Dry run: row 2: PATCH {sandbox.url}/api/inbox/conversation/{ids[1]}/update" in text
    assert TEST_TOKEN not in text and TEST_TOKEN not in json.dumps([single, batch])


def test_a_dry_run_still_refuses_bad_input_and_a_bad_connection(sandbox, monkeypatch):
    with pytest.raises(HilosValidationError, match="status: 'DONE' is not a valid status"):
        ConversationBatchUpdateOperator(
            task_id="t", updates=[{"conversation_id": sandbox.conversation_ids()[0], "status": "DONE"}], dry_run=True
        ).execute({"ti": FakeTI()})
    monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", json.dumps({"conn_type": "hilos", "host": sandbox.url}))
    from airflow_provider_hilos.exceptions import HilosConfigurationError

    with pytest.raises(HilosConfigurationError, match="has no API token"):
        ConversationBatchUpdateOperator(
            task_id="t", updates=[{"conversation_id": sandbox.conversation_ids()[0], "status": "NEW"}], dry_run=True
        ).execute({"ti": FakeTI()})
    assert patches(sandbox) == []


def asset_event_extras(dag_run) -> list[dict]:
    from airflow.utils.session import create_session

    if AIRFLOW_V3:
        from airflow.models.asset import AssetEvent as Event
    else:
        from airflow.models.dataset import DatasetEvent as Event
    with create_session() as session:
        events = session.query(Event).filter(Event.source_run_id == dag_run.run_id).all()
        return [dict(event.extra) for event in events]


def test_a_successful_batch_announces_its_counts_on_its_asset(sandbox):
    ids = sandbox.conversation_ids()[:3]
    rows = [{"conversation_id": c, "status": "RESOLVED"} for c in ids]
    if not AIRFLOW_V3:  # Airflow 2 records an event only for a dataset it knows (the DAG processor would write it)
        dag_bag(TEST_DAGS).get_dag("hilos_test_asset_outlet").sync_to_db()
    dag_run = run_dag("hilos_test_asset_outlet", {"rows": rows})
    assert dag_run.state == "success", states(dag_run)
    (extra,) = asset_event_extras(dag_run)
    assert {k: extra[k] for k in ("total", "updated", "failed", "skipped", "not_sent")} == {
        "total": 3,
        "updated": 3,
        "failed": 0,
        "skipped": 0,
        "not_sent": 0,
    }
    assert set(extra) == set(ConversationBatchUpdateOperator.ASSET_EXTRA_FIELDS)


# -- CSV change sets --


def run_csv(tmp_path: Path, text: str, name: str = "changes.csv", **kwargs) -> dict:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    report = tmp_path / "report.jsonl"
    result = ConversationBatchUpdateOperator(
        task_id="t", updates_path=str(path), report_path=str(report), **kwargs
    ).execute({"ti": FakeTI()})
    result["report"] = [json.loads(line) for line in report.read_text().splitlines()]
    return result


def test_a_csv_change_set_is_applied(sandbox, tmp_path):
    a, b, c, d = sandbox.conversation_ids()[:4]
    before = {x: sandbox.conversation(x) for x in (a, b, c, d)}
    text = (
        "\ufeffconversation_id,status,tags,assigned,assigned_team,channel\r\n"  # as a spreadsheet exports it
        f"{a},CLOSED,vip| renewal,3|1,2,\r\n"
        f"{b},,-,-,,-\r\n"  # clear tags, assignees and channel; leave status and team
        "\r\n"
        f'{c},RESOLVED,"churn",,,\r\n'
        f"{d},,,,,\r\n"  # nothing to change: invalid, skipped below
    )
    result = run_csv(tmp_path, text, skip_invalid_rows=True, max_invalid_ratio=0.5)
    assert (result["total"], result["updated"], result["skipped"]) == (4, 3, 1)
    sent = bodies(sandbox)
    assert sent == {
        a: {
            "status": "CLOSED",
            "tags": [{"name": "vip"}, {"name": "renewal"}],
            "assigned": [{"id": 3}, {"id": 1}],
            "assigned_team": 2,
        },
        b: {"tags": [], "assigned": [], "channel": None},
        c: {"status": "RESOLVED", "tags": [{"name": "churn"}]},
    }
    after_b = sandbox.conversation(b)
    assert (after_b["tags"], after_b["assigned"], after_b["channel"]) == ([], [], None)
    assert (after_b["status"], after_b["assigned_team"]) == (before[b]["status"], before[b]["assigned_team"])
    assert sandbox.conversation(d) == before[d]
    # rows are numbered by their line in the file (the header is line 1), in the report too, in order
    assert [(r["row"], r["outcome"]) for r in result["report"]] == [
        (2, "updated"),
        (3, "updated"),
        (5, "updated"),
        (6, "skipped"),
    ]
    assert "nothing to update" in result["report"][3]["error"]


def test_csv_with_semicolons_and_another_list_separator(sandbox, tmp_path):
    a, b = sandbox.conversation_ids()[:2]
    text = f"conversation_id;tags;assigned\n{a};vip,renewal;2,3\n{b};-;\n"
    result = run_csv(tmp_path, text, name="export.txt", input_format="csv", list_separator=",")
    assert result["updated"] == 2
    assert bodies(sandbox) == {
        a: {"tags": [{"name": "vip"}, {"name": "renewal"}], "assigned": [{"id": 2}, {"id": 3}]},
        b: {"tags": []},
    }


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("conversation_id,stauts", "column 'stauts': is not a column of a change set; did you mean 'status'?"),
        ("id,status", "header: has no conversation_id column (its columns: id, status)"),
    ],
)
def test_a_bad_csv_header_is_refused_before_anything_is_sent(sandbox, tmp_path, header, expected):
    cid = sandbox.conversation_ids()[0]
    with pytest.raises(HilosValidationError) as caught:
        run_csv(tmp_path, f"{header}\n{cid},CLOSED\n")
    assert expected in str(caught.value)
    assert patches(sandbox) == []


def test_bad_csv_cells_are_named_by_line(sandbox, tmp_path):
    a, b = sandbox.conversation_ids()[:2]
    text = f"conversation_id,status,assigned\n{a},CLOSED\n{b},DONE,x\n"
    with pytest.raises(HilosValidationError) as caught:
        run_csv(tmp_path, text)
    message = str(caught.value)
    assert "row 2" in message and "has 2 cells, the header has 3 columns" in message
    assert "row 3" in message and "status: 'DONE' is not a valid status" in message
    assert patches(sandbox) == []


def test_a_csv_given_as_json_lines_gets_one_clear_hint(sandbox, tmp_path):
    cid = sandbox.conversation_ids()[0]
    rows = "".join(f"{cid},CLOSED\n" for _ in range(10))
    with pytest.raises(HilosValidationError) as caught:
        run_csv(tmp_path, f"conversation_id,status\n{rows}", name="changes.jsonl")
    message = str(caught.value)
    assert "looks like CSV, not JSON Lines: its first line is a header ('conversation_id,status')" in message
    assert "set input_format='csv'" in message
    assert message.count("is not JSON") == 0
    assert patches(sandbox) == []


def test_bad_batch_format_arguments_fail_when_the_dag_is_parsed(tmp_path):
    with pytest.raises(ValueError, match="input_format='xlsx' is not one of jsonl, csv"):
        ConversationBatchUpdateOperator(task_id="t", updates_path="x.xlsx", input_format="xlsx")
    with pytest.raises(ValueError, match="list_separator=';;' must be one character"):
        ConversationBatchUpdateOperator(task_id="t", updates_path="x.csv", list_separator=";;")
    with pytest.raises(HilosValidationError, match="list_separator: ',' also separates the columns"):
        run_csv(tmp_path, "conversation_id,tags\n", list_separator=",")


# -- metrics --

METRICS_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[1])
    from airflow_provider_hilos.operators.conversation import ConversationUpdateOperator
    from airflow_provider_hilos.hooks.hilos import HilosHook
    from airflow_provider_hilos.sandbox import HilosSandbox
    from tests.conftest import FakeTI

    with HilosSandbox(conversations=10, token=os.environ["TOKEN"]) as sb:
        os.environ["AIRFLOW_CONN_HILOS_DEFAULT"] = sb.connection_json()
        ids = sb.conversation_ids()
        sb.fail_next("429")  # the single update is throttled once, then applied
        ConversationUpdateOperator(task_id="one", conversation_id=ids[0], status="CLOSED").execute({"ti": FakeTI()})
        sb.fail_next("503", 2)  # two batch rows are retried once each
        missing = "00000000-0000-4000-8000-000000000000"
        rows = [{"conversation_id": c, "status": "RESOLVED"} for c in ids[1:6]] + [
            {"conversation_id": missing, "status": "NEW"}
        ]
        result = HilosHook(backoff_base=0.01).update_conversations(rows, max_concurrency=1, failure_policy="never")
        print("RESULT", result.updated, result.failed, result.retried)
    """
)


def test_metrics_reach_statsd(tmp_path):
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.5)
    env = {
        **os.environ,
        "TOKEN": TEST_TOKEN,
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(listener.getsockname()[1]),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", METRICS_SCRIPT, str(ROOT)], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "RESULT 5 1 2" in done.stdout
        packets = []
        while True:
            try:
                packets.append(listener.recv(65536).decode())
            except TimeoutError:
                break
    finally:
        listener.close()
    lines = [line for packet in packets for line in packet.splitlines() if line.startswith("airflow.hilos.")]
    counters: dict[str, int] = {}
    timings = 0
    for line in lines:
        name, rest = line.split(":", 1)
        value, kind = rest.split("|")[:2]
        if kind == "c":
            counters[name] = counters.get(name, 0) + int(float(value))
        elif kind == "ms" and name == "airflow.hilos.request.duration":
            timings += 1
            assert float(value) >= 0
    assert counters == {
        "airflow.hilos.updates.applied": 6,  # the single update and five batch rows
        "airflow.hilos.updates.failed": 1,  # the unknown conversation
        "airflow.hilos.requests.retried": 3,  # one retry after the 429, two batch retries after 503s
        "airflow.hilos.requests.throttled": 1,
    }
    assert timings == 2 + 6 + 2  # every request answered: 429 + 200, six batch rows, two 503s
    assert TEST_TOKEN not in "".join(packets)
