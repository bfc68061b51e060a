"""A list page decoded for a sync keeps only the fields it reads, and otherwise says exactly what json.loads says."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_hilos.projection import page_decoder
from airflow_provider_hilos.resources.paging import Paginator

FIELDS = ("id", "status", "tags", "assigned_team")


def projected(page: dict, fields=FIELDS) -> dict:
    """What the decoder must give: json.loads, each row cut to ``fields``."""
    out = {k: v for k, v in page.items() if k in ("count", "next", "previous", "results")}
    out["results"] = [{k: v for k, v in row.items() if k in fields} for row in page["results"]]
    return out


def test_rows_keep_only_the_fields_asked_for_and_a_missing_field_stays_missing():
    page = {
        "count": 2,
        "next": "http://elsewhere/page=2",
        "previous": None,
        "extra": {"ignored": True},
        "results": [
            {"id": "a", "status": "CLOSED", "tags": [{"id": 1, "name": "vip"}], "contact": {"name": "x" * 500}},
            {"id": "b", "assigned_team": None, "last_message": {"body": "hola"}},
        ],
    }
    decoded = page_decoder(FIELDS)(json.dumps(page).encode())
    assert decoded == {
        "count": 2,
        "next": "http://elsewhere/page=2",
        "previous": None,
        "results": [
            {"id": "a", "status": "CLOSED", "tags": [{"id": 1, "name": "vip"}]},
            {"id": "b", "assigned_team": None},  # null is kept as None; status and tags stay missing
        ],
    }


@pytest.mark.parametrize(
    "body",
    [
        b'[{"id": "a"}]',  # a list, not a page
        b'{"count": 1, "results": [{"id": "a"}, "not an object", 3]}',
        b'{"count": 1, "results": {"id": "a"}}',
        b'{"count": 1}',
        '{"results": [{"id": "caf\u00e9"}]}'.encode("utf-16"),  # not UTF-8: json.loads detects it
        b'{"results": [{"id": "a", "score": Infinity}]}',  # not JSON, but json.loads reads it: so is it read
    ],
)
def test_anything_but_a_page_of_objects_is_decoded_as_json_loads_has_it(body):
    assert page_decoder(FIELDS)(body) == json.loads(body)


def test_invalid_json_raises_value_error_as_json_loads_does():
    with pytest.raises(ValueError):
        page_decoder(FIELDS)(b'{"results": [{"id": "a"')


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
rows = st.dictionaries(st.sampled_from(["id", "status", "tags", "contact", "assigned_team", "x"]), json_values)


@settings(max_examples=60, deadline=None)
@given(st.lists(rows, max_size=5), st.one_of(st.none(), st.integers()), st.one_of(st.none(), st.text(max_size=8)))
def test_any_page_is_json_loads_cut_to_the_fields(results, count, next_link):
    page = {"count": count, "next": next_link, "previous": None, "results": results}
    assert page_decoder(FIELDS)(json.dumps(page).encode()) == projected(page)


def test_a_listing_with_fields_decodes_its_pages_that_way(requests_mock):
    class Transport:
        def __init__(self):
            self.decoded = []

        def request(self, method, path, params=None, max_attempts=None, decode=None, **_):
            body = json.dumps(
                {"count": 1, "next": None, "results": [{"id": "a", "status": "OPEN", "contact": {"x": 1}}]}
            ).encode()
            self.decoded.append(decode is not None)
            return decode(body) if decode else json.loads(body)

    class Hook:
        transport = Transport()

    paginator = Paginator(Hook(), "/api/inbox/conversation", "conversation", lambda row: row["id"])
    [page] = list(paginator.pages({}, page_size=10, fields=("id", "status")))
    assert page.rows == [{"id": "a", "status": "OPEN"}] and Hook.transport.decoded == [True]
    [page] = list(paginator.pages({}, page_size=10))
    assert page.rows[0]["contact"] == {"x": 1} and Hook.transport.decoded == [True, False]
