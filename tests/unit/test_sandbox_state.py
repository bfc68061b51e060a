"""The sandbox's data: seeded, deterministic, and DRF's field rules."""

from __future__ import annotations

import pytest

from airflow_provider_hilos.sandbox.state import SandboxData
from tests.helpers import patch


def test_seeded_data_is_deterministic():
    a, b, c = SandboxData.seeded(30, 7), SandboxData.seeded(30, 7), SandboxData.seeded(30, 8)
    assert a.conversations == b.conversations
    assert list(a.conversations) != list(c.conversations)
    assert list(SandboxData.seeded(10, 7).conversations) == list(a.conversations)[:10]  # a prefix, whatever the count
    statuses = {conv["status"] for conv in a.conversations.values()}
    assert len(statuses) >= 4


def test_drf_field_rules_trim_refuse_blank_and_nul_and_read_digit_strings(sandbox):
    cid = sandbox.conversation_ids()[0]
    ok = patch(
        sandbox,
        cid,
        {
            "tags": [{"name": "  vip  "}, {"name": " " + "x" * 100 + " "}],
            "assigned_team": "3",
            "assigned": [{"id": "2"}, {"id": 2.0}],
            "channel": " 1 ",
        },
    )
    assert ok.status_code == 200, ok.text
    assert [t["name"] for t in ok.json()["tags"]] == ["vip", "x" * 100]  # trimmed before the length check
    assert (ok.json()["assigned_team"], ok.json()["assigned"], ok.json()["channel"]) == (3, [{"id": 2}], 1)
    bad = patch(sandbox, cid, {"tags": [{"name": "   "}, {"name": "a\x00b"}, {"name": "x" * 101}]})
    assert bad.json() == {
        "tags": [
            {"name": ["This field may not be blank."]},
            {"name": ["Null characters are not allowed."]},
            {"name": ["Ensure this field has no more than 100 characters."]},
        ]
    }


def test_mismatches_names_the_fields_that_did_not_land(sandbox):
    cid = sandbox.conversation_ids()[0]
    patch(sandbox, cid, {"status": "CLOSED", "tags": [{"name": "vip"}], "assigned_team": 2})
    assert sandbox.mismatches(cid, {"status": "CLOSED", "tags": [{"name": "vip"}], "assigned_team": 2}) == []
    assert sandbox.mismatches(cid, {"status": "NEW", "tags": [{"name": "other"}], "assigned_team": 2}) == [
        "status",
        "tags",
    ]
    # the forms a DAG uses: plain names and ids, digit strings, None for "not given", CLEAR
    assert sandbox.mismatches(cid, {"status": "CLOSED", "tags": [" vip"], "assigned_team": "2", "channel": None}) == []
    patch(sandbox, cid, {"tags": [], "assigned": [{"id": 3}], "channel": None})
    assert sandbox.mismatches(cid, {"tags": "-", "assigned": [3], "channel": "-"}) == []
    assert sandbox.mismatches(cid, {"assigned": [3, 1]}) == ["assigned"]
    with pytest.raises(ValueError, match="not a valid update payload: status: 'DONE' is not a valid status"):
        sandbox.mismatches(cid, {"status": "DONE"})
