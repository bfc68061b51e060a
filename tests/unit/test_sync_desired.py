"""The desired state's columns and cells, and SQL read in chunks through an Airflow connection's DbApiHook."""

from __future__ import annotations

import json
import sqlite3
import uuid
from decimal import Decimal

import pytest

from airflow_provider_hilos.exceptions import HilosConfigurationError, HilosValidationError
from airflow_provider_hilos.sync.desired import RowShaper, column_map_problem, rows_from_sql

CID = "6513270e-269e-4d37-b2a7-4de452e6b438"


def test_columns_are_renamed_and_cells_read_as_a_change_set_row():
    shaper = RowShaper({"Team_ID": "assigned_team", "id": "conversation_id"}, "|", "sql")
    row = shaper.shape(
        {
            "ID": uuid.UUID(CID),
            "team_id": Decimal("4"),
            "tags": "vip| renewal |",
            "assigned": [3, None, 5],
            "status": None,
        }
    )
    assert row == {"conversation_id": CID, "assigned_team": 4, "tags": ["vip", "renewal"], "assigned": [3, 5]}


@pytest.mark.parametrize("cell", ["", "-", [], ()])
def test_an_empty_list_cell_means_must_be_empty(cell):
    assert RowShaper(None, "|", "sql").shape({"conversation_id": CID, "tags": cell}) == {
        "conversation_id": CID,
        "tags": [],
    }


def test_a_json_list_cell_is_left_to_validation():
    assert RowShaper(None, "|", "sql").shape({"conversation_id": CID, "tags": '["a|b"]'})["tags"] == '["a|b"]'


def test_a_column_that_is_no_field_is_refused_with_the_closest_one():
    with pytest.raises(HilosValidationError) as caught:
        RowShaper(None, "|", "sql").shape({"conversation_id": CID, "stauts": "CLOSED"})
    assert "did you mean 'status'" in str(caught.value) and "column_map" in str(caught.value)


def test_two_columns_for_one_field_and_no_id_column_are_refused():
    with pytest.raises(HilosValidationError, match="comes from 2 columns"):
        RowShaper({"team": "assigned_team"}, "|", "sql").columns(["conversation_id", "team", "assigned_team"])
    with pytest.raises(HilosValidationError, match="no column of the sql is the conversation id"):
        RowShaper(None, "|", "sql").columns(["status"])


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"team_id": "asigned_team"}, "did you mean 'assigned_team'"),
        ({"a": "status", "b": "status"}, "several columns to 'status'"),
        ("team_id=assigned_team", "must be a dict"),
    ],
)
def test_a_wrong_column_map_names_the_fix(mapping, message):
    assert message in (column_map_problem(mapping) or "")


@pytest.fixture
def warehouse(tmp_path, monkeypatch):
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE desired (conversation_id TEXT, status TEXT, tags TEXT)")
        db.executemany(
            "INSERT INTO desired VALUES (?, ?, ?)",
            [(str(uuid.UUID(int=i)), "CLOSED" if i % 2 else None, "vip|b2b") for i in range(1, 26)],
        )
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return path


def test_sql_rows_are_fetched_in_chunks(warehouse, monkeypatch):
    import sqlite3 as driver

    sizes: list[int] = []
    original = driver.Cursor.fetchmany

    class Counting(driver.Cursor):
        def fetchmany(self, size=1):  # type: ignore[override]
            chunk = original(self, size)
            sizes.append(len(chunk))
            return chunk

    real_connect = driver.connect
    monkeypatch.setattr(driver, "connect", lambda *a, **k: _with_cursor(real_connect(*a, **k), Counting))
    rows = list(rows_from_sql("warehouse", "SELECT * FROM desired ORDER BY conversation_id", chunk_size=10))
    assert [number for number, _ in rows] == list(range(1, 26))
    assert rows[0][1] == {"conversation_id": str(uuid.UUID(int=1)), "status": "CLOSED", "tags": "vip|b2b"}
    assert sizes == [10, 10, 5, 0]  # never the whole result at once


def _with_cursor(connection, cursor_class):
    class Wrapped:
        def __getattr__(self, name):
            return getattr(connection, name)

        def cursor(self):
            return connection.cursor(cursor_class)

        def close(self):
            connection.close()

    return Wrapped()


def test_sql_parameters_are_bound(warehouse):
    rows = list(rows_from_sql("warehouse", "SELECT * FROM desired WHERE status = ?", parameters=["CLOSED"]))
    assert len(rows) == 13


def test_a_connection_without_a_sql_hook_or_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_NOT_SQL", '{"conn_type": "hilos", "host": "https://api.hilos.io"}')
    with pytest.raises(HilosConfigurationError, match="not a SQL hook"):
        list(rows_from_sql("not_sql", "SELECT 1"))
    with pytest.raises(HilosConfigurationError, match=r"'nowhere' .* is not defined"):
        list(rows_from_sql("nowhere", "SELECT 1"))


def test_a_statement_without_a_result_set_is_refused(warehouse):
    with pytest.raises(HilosValidationError, match="no result set"):
        list(rows_from_sql("warehouse", "CREATE TABLE t (a TEXT)"))


def test_one_id_in_a_number_column_is_a_list_of_one():
    from decimal import Decimal

    from airflow_provider_hilos.sync.objects.contact import CONTACT_COLUMNS

    shaper = RowShaper({"owner_id": "default_assignees"}, "|", "sql", CONTACT_COLUMNS)
    shaped = shaper.shape({"phone": "+525512345678", "owner_id": 7})
    assert shaped == {"phone": "+525512345678", "default_assignees": [7]}
    assert shaper.cell("default_assignees", Decimal("7")) == [7] and shaper.cell("default_assignees", 7.0) == [7]
    assert shaper.cell("default_assignees", True) is True  # not an id: validation names it


def test_a_list_cell_split_once_gives_each_row_its_own_list():
    shaper = RowShaper(None, "|", "sql")
    first = shaper.shape({"conversation_id": CID, "tags": "vip|lead"})
    first["tags"].append("changed by a caller")
    again = shaper.shape({"conversation_id": CID, "tags": "vip|lead"})
    assert again == {"conversation_id": CID, "tags": ["vip", "lead"]} and again["tags"] is not first["tags"]
    assert shaper.shape({"conversation_id": CID, "tags": "-"})["tags"] == []  # a clear is still a clear
    assert shaper.shape({"conversation_id": CID, "tags": '["a|b"]'})["tags"] == '["a|b"]'  # JSON: left to validation
