"""Writing conversations as a change set: both formats read back by the batch's readers, atomically."""

from __future__ import annotations

import io

import pytest

from airflow_provider_hilos.conversations import state_from_row
from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.export import ChangeSetWriter, output_format, write_change_set
from airflow_provider_hilos.inputs import rows_from_csv, rows_from_json_lines
from airflow_provider_hilos.storage import storage_path
from tests.helpers import CID

STATES = [
    state_from_row({"id": CID, "status": "NEW", "tags": [{"name": "vip"}, {"name": "a,b"}], "assigned": [{"id": 3}]}),
    state_from_row({"id": "6513270e-269e-4d37-b2a7-4de452e6b438", "status": "CLOSED", "tags": [], "assigned": []}),
]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_reads_back_as_the_same_change_rows(fmt):
    stream = io.StringIO()
    writer = ChangeSetWriter(stream, fmt)
    for state in STATES:
        writer.write(state)
    data = stream.getvalue().encode()
    reader = rows_from_csv if fmt == "csv" else rows_from_json_lines
    rows = [row for _, row in reader(lambda: io.BytesIO(data))()]
    if fmt == "csv":  # "-" clears: an empty list or a missing team/channel round-trips as "clear"
        assert rows[0] == {
            "conversation_id": CID,
            "status": "NEW",
            "assigned": ["3"],
            "tags": ["a,b", "vip"],
            "assigned_team": "-",
            "channel": "-",
        }
        assert rows[1]["tags"] == "-" and rows[1]["assigned"] == "-"
    else:
        assert rows == [state.change_row() for state in STATES]


def test_a_failed_export_leaves_no_file_under_the_target_name(tmp_path):
    target = tmp_path / "out.jsonl"

    def states():
        yield STATES[0]
        raise RuntimeError("the API went away")

    with pytest.raises(RuntimeError):
        write_change_set(storage_path(str(target)), states(), fmt="jsonl")
    assert list(tmp_path.iterdir()) == []
    assert write_change_set(storage_path(str(target)), STATES, fmt="jsonl") == 2
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_the_format_follows_the_extension_unless_chosen():
    assert output_format("s3://b/x.CSV", None) == "csv" and output_format("x.jsonl", None) == "jsonl"
    assert output_format("x.txt", "csv") == "csv"
    with pytest.raises(HilosValidationError, match="output_format"):
        output_format("x", "parquet")
