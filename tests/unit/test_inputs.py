"""Change sets in files: JSON Lines and CSV, streamed line by line, errors naming the line."""

from __future__ import annotations

import io
import json
import re

import pytest

from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.inputs import (
    MAX_LINE_BYTES,
    MAX_LISTED_COLUMNS,
    rows_from_csv,
    rows_from_json_lines,
    rows_from_path,
)
from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator
from airflow_provider_hilos.rows import Unparsable
from tests.conftest import FakeTI
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


# -- audit 2: points 4, 5, 6 and 8 ---------------------------------------------------------------------------

A, B, C = (
    "3fa85f64-5717-4562-b3fc-2c963f66afa6",
    "6513270e-269e-4d37-b2a7-4de452e6b438",
    "0b1c2d3e-4f50-4617-8829-3a4b5c6d7e8f",
)


def csv_rows(text: str | bytes) -> list:
    data = text.encode() if isinstance(text, str) else text
    return list(rows_from_csv(lambda: io.BytesIO(data))())


def test_a_stray_quote_makes_its_line_invalid_instead_of_swallowing_the_lines_after_it():
    rows = csv_rows(f'conversation_id,status,tags\n{A},CLOSED,"vip\n{B},CLOSED,x\n{C},NEW,y\n')
    assert [number for number, _ in rows] == [2, 3, 4]
    assert isinstance(rows[0][1], Unparsable) and "quote that is not closed on this line" in rows[0][1].reason
    assert rows[1][1] == {"conversation_id": B, "status": "CLOSED", "tags": ["x"]}
    assert rows[2][1]["conversation_id"] == C


def test_a_quote_left_open_at_the_end_of_the_file_is_invalid_naming_its_line():
    rows = csv_rows(f'conversation_id,status,tags\n{A},CLOSED,x\n{B},CLOSED,"vip')
    assert rows[-1][0] == 3 and isinstance(rows[-1][1], Unparsable)


def test_quoted_cells_on_one_line_still_work():
    assert csv_rows(f'conversation_id,status,tags\n"{A}",CLOSED,"vip|a,b"\n') == [
        (2, {"conversation_id": A, "status": "CLOSED", "tags": ["vip", "a,b"]})
    ]


def test_a_stray_quote_refuses_the_batch_naming_the_line(sb, tmp_path):
    ids = sb.conversation_ids()[:3]
    text = f'conversation_id,status,tags\n{ids[0]},CLOSED,"vip\n{ids[1]},CLOSED,x\n{ids[2]},CLOSED,y\n'
    with pytest.raises(HilosValidationError, match=r"row 2.*quote that is not closed"):
        run_csv(tmp_path, text)
    assert patches(sb) == []


def test_a_line_longer_than_the_bound_fails_naming_the_file_and_line_without_reading_it_all():
    class Endless(io.RawIOBase):
        """A stream with no line break that never ends: reading it whole would exhaust memory."""

        served = 0

        def readable(self):
            return True

        def readinto(self, buffer):
            Endless.served += len(buffer)
            buffer[:] = b"x" * len(buffer)
            return len(buffer)

    opener = lambda: io.BufferedReader(Endless())  # noqa: E731
    with pytest.raises(HilosValidationError, match=r"updates_path line 1: is longer than 1,048,576 bytes"):
        list(rows_from_json_lines(opener)())
    assert Endless.served < 3 * MAX_LINE_BYTES
    with pytest.raises(HilosValidationError, match="line 1: is longer than"):
        list(rows_from_csv(opener)())


def test_a_long_line_after_good_ones_is_named(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_bytes(json.dumps({"conversation_id": A, "status": "NEW"}).encode() + b"\n" + b"{" * (MAX_LINE_BYTES + 5))
    with pytest.raises(HilosValidationError, match=r"big\.jsonl line 2: is longer than"):
        list(rows_from_path(str(path), name=str(path))())


def test_an_error_lists_at_most_ten_unknown_columns_and_counts_the_rest():
    header = "conversation_id," + ",".join(f"col{i}" for i in range(100_000))
    with pytest.raises(HilosValidationError) as caught:
        csv_rows(header + "\n")
    message = str(caught.value)
    assert message.count("is not a column of a change set") == MAX_LISTED_COLUMNS
    assert "99,990 more unknown columns" in message and len(message) < 5_000


def test_a_validation_error_writes_out_at_most_fifty_problems():
    error = HilosValidationError([(f"f{i}", "bad") for i in range(10_000)])
    assert str(error).count("\n  - ") == 50 and "and 9950 more" in str(error) and len(error.problems) == 10_000


def test_a_repeated_csv_column_is_refused():
    with pytest.raises(HilosValidationError, match=r"column 'conversation_id': appears 2 times"):
        csv_rows(f"conversation_id,status,conversation_id\n{A},CLOSED,{B}\n")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("conversation_id,status\n".encode("utf-16"), "line 1: is not UTF-8 text (it looks like UTF-16)"),
        (f"conversation_id,status\n{A},CLOSED\n{B},CL\xffOSED\n".encode("latin-1"), "line 3: is not UTF-8 text"),
    ],
)
def test_bytes_that_are_not_utf8_are_a_validation_error_naming_the_line(data, expected):
    with pytest.raises(HilosValidationError, match=re.escape(expected)):
        csv_rows(data)
    as_json_lines = data.replace(b"conversation_id,status", b'{"conversation_id": 1}')
    with pytest.raises(HilosValidationError, match=re.escape(expected)):
        list(rows_from_json_lines(lambda: io.BytesIO(as_json_lines))())


def test_a_folder_given_as_the_input_is_a_validation_error(tmp_path):
    with pytest.raises(HilosValidationError, match="is a folder, not a file"):
        rows_from_path(str(tmp_path))


def test_a_cell_over_the_csv_field_limit_is_an_invalid_row_not_a_crash():
    rows = csv_rows(f"conversation_id,status,tags\n{A},CLOSED,{'t' * 200_000}\n{B},CLOSED,x\n")
    assert isinstance(rows[0][1], Unparsable) and "is not valid CSV" in rows[0][1].reason
    assert rows[1][1]["conversation_id"] == B


def test_a_json_lines_file_may_start_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"conversation_id": A, "status": "NEW"}).encode() + b"\n")
    assert list(rows_from_path(str(path))()) == [(1, {"conversation_id": A, "status": "NEW"})]


@pytest.mark.parametrize("field", ["report_path", "checkpoint_path"])
def test_an_output_path_that_is_the_input_is_refused_before_anything_is_opened(sb, tmp_path, field, monkeypatch):
    path = tmp_path / "changes.jsonl"
    text = "".join(json.dumps({"conversation_id": cid, "status": "CLOSED"}) + "\n" for cid in sb.conversation_ids()[:5])
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HilosValidationError, match=rf"{field}: is the input"):
        ConversationBatchUpdateOperator(task_id="t", updates_path=str(path), **{field: "./changes.jsonl"}).execute(
            {"ti": FakeTI()}
        )
    assert path.read_text() == text and patches(sb) == []


def test_an_error_in_a_files_content_names_the_file_not_only_the_argument(tmp_path):
    path = tmp_path / "from-excel.csv"
    path.write_bytes("conversation_id,status\n".encode("utf-16"))
    with pytest.raises(HilosValidationError) as caught:
        ConversationBatchUpdateOperator(task_id="t", updates_path=str(path)).execute({"ti": FakeTI()})
    assert f"updates_path '{path}' line 1: is not UTF-8 text (it looks like UTF-16)" in str(caught.value)
