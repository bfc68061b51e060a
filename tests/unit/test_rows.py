"""What a batch row is: rows given as a list (or the text a template rendered), and the shard each belongs to."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.rows import rows_from_updates, shard_of, validate_row


@pytest.mark.parametrize(
    ("updates", "match"), [("{bad", "not JSON"), ({"a": 1}, "must be a list"), (5, "must be a list")]
)
def test_bad_updates_input(updates, match):
    with pytest.raises(HilosValidationError, match=match):
        rows_from_updates(updates)


def test_updates_accept_the_text_a_template_renders_like_payload_does():
    rows = [{"conversation_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "status": "NEW", "tags": None}]
    # without render_template_as_native_obj, "{{ ti.xcom_pull(...) }}" renders the list's Python repr
    for text in (repr(rows), json.dumps(rows), json.dumps(rows).encode()):
        assert [row for _, row in rows_from_updates(text)()] == rows
    with pytest.raises(HilosValidationError, match=r"updates: rendered to a dict, .*; it must be a list of rows"):
        rows_from_updates(repr({"conversation_id": "x"}))


@settings(max_examples=100, deadline=None)
@given(cid=st.uuids(), count=st.integers(1, 16))
def test_one_conversation_is_one_shard_however_its_id_is_written(cid, count):
    forms = [str(cid), str(cid).upper(), f"  {cid} ", cid.hex]
    assert len({shard_of({"conversation_id": form}, count) for form in forms}) == 1


def test_the_split_is_stable_across_processes_and_even():
    """A stable hash (not Python's salted hash()): these values are fixed, so every worker computes them."""
    assert [shard_of({"conversation_id": f"00000000-0000-4000-8000-{i:012d}"}, 4) for i in range(8)] == [
        shard_of({"conversation_id": f"00000000-0000-4000-8000-{i:012d}"}, 4) for i in range(8)
    ]
    assert shard_of({"conversation_id": "6513270e-269e-4d37-b2a7-4de452e6b438"}, 4) == 3
    sizes = Counter(shard_of({"conversation_id": str(uuid.UUID(int=i * 7919 + 1))}, 4) for i in range(4000))
    assert min(sizes.values()) > 900, sizes  # 1,000 each +- 10 %


@pytest.mark.parametrize("row", [None, "text", {"conversation_id": None}, {"conversation_id": True}, {}])
def test_rows_without_a_usable_id_go_to_shard_zero_so_they_are_reported_once(row):
    assert shard_of(row, 5) == 0


def test_a_field_value_seen_before_is_not_validated_again_but_each_id_is(monkeypatch):
    from airflow_provider_hilos import rows as rows_module
    from airflow_provider_hilos.rows import RowChecker

    calls = []
    real = rows_module.update_problems
    monkeypatch.setattr(rows_module, "update_problems", lambda payload: calls.append(payload) or real(payload))
    checker = RowChecker()
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(1, 5)]
    first = checker.check(1, {"conversation_id": ids[0], "status": "CLOSED", "tags": ["vip", "b2b"]})
    assert calls == [{"status": "CLOSED"}, {"tags": ["vip", "b2b"]}]  # each field on its own
    second = checker.check(2, {"conversation_id": ids[1].upper(), "tags": ["vip", "b2b"], "status": "CLOSED"})
    assert len(calls) == 2  # the second row's values were known
    assert second.conversation_id == ids[1] and second.body == first.body and second.body is not first.body
    assert list(second.body) == ["status", "tags"]  # the body in the API's field order, whatever the row's
    third = checker.check(7, {"conversation_id": ids[3], "status": "CLOSED", "assigned_team": 3})
    assert third.body == {"status": "CLOSED", "assigned_team": 3} and calls[-1] == {"assigned_team": 3}
    with pytest.raises(HilosValidationError, match="not a conversation UUID"):
        checker.check(3, {"conversation_id": "nope", "status": "CLOSED", "tags": ["vip", "b2b"]})
    with pytest.raises(HilosValidationError, match="already updated by row 1"):
        checker.check(4, {"conversation_id": ids[0], "status": "CLOSED", "tags": ["vip", "b2b"]})
    other = checker.check(5, {"conversation_id": ids[2], "status": "CLOSED", "tags": ["b2b", "vip"]})
    assert other.body["tags"] == [{"name": "b2b"}, {"name": "vip"}]  # another order is another payload
    with pytest.raises(HilosValidationError):  # an invalid payload is never remembered as valid
        checker.check(6, {"conversation_id": ids[3], "status": "DONE"})


VALUES = {
    "status": ["CLOSED", "NEW", "DONE", "closed", 3, "", "clear"],
    "tags": [["vip"], ["vip", "vip"], [], "clear", '["a", "b"]', "vip", [1], ["x" * 300], [{"name": "vip"}]],
    "assigned": [[1, 2], [2, 1, 2], [], [0], [-1], "clear", "[3]", ["4"], [True], [{"id": 5}]],
    "assigned_team": [1, 0, "2", "x", 2.0, True, -4],
    "channel": [1, "clear", None, "1", []],
    "contact": ["c"],
    "Status": ["CLOSED"],
}


@pytest.mark.parametrize("seed", range(4))
def test_the_remembered_fields_validate_every_row_as_validate_row_does(seed):
    """Whatever the row (valid, invalid, repeated values, fields not writable), the checker's answer is
    validate_row's: the same body, or the same error."""
    import random

    from airflow_provider_hilos.rows import RowChecker

    rng = random.Random(seed)
    checker = RowChecker(refuse_repeats=False)
    for i in range(400):
        row: dict[str, Any] = {"conversation_id": f"00000000-0000-4000-8000-{i:012d}"}
        for name in rng.sample(sorted(VALUES), rng.randint(0, 3)):
            row[name] = rng.choice(VALUES[name])
        try:
            expected: Any = validate_row(row).body
        except HilosValidationError as exc:
            expected = str(exc)
        try:
            got: Any = checker.validate(row).body
        except HilosValidationError as exc:
            got = str(exc)
        assert got == expected, row
        if isinstance(expected, dict):
            assert list(got) == list(expected)
