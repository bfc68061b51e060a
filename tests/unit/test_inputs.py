"""Change sets in files: JSON Lines and CSV, streamed line by line, errors naming the line."""

from __future__ import annotations

import io
import json

import pytest

from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.inputs import rows_from_json_lines
from tests.helpers import bodies, patches, run_csv


def test_rows_read_lazily_one_line_at_a_time():
    class Lines(io.StringIO):
        reads = 0

        def readline(self, *args):
            Lines.reads += 1
            return super().readline(*args)

    text = "".join(
        json.dumps({"conversation_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "status": "NEW"}) + "\n"
        for _ in range(1000)
    )
    iterator = rows_from_json_lines(lambda: Lines(text))()
    next(iterator)
    assert Lines.reads == 1


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
