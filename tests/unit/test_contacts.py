"""A contact's key (its phone in E.164), its normal form on both sides, and what a write may send."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from airflow_provider_hilos.contacts import (
    ABSENT,
    META_KEYS,
    canonical_phone,
    clear_value,
    detail_assignees,
    listed_fields,
    listed_key,
    meta_text,
    meta_value,
    phone_problem,
    property_name_problem,
    region_problem,
    write_problems,
)
from airflow_provider_hilos.conversations import UNKNOWN


@pytest.mark.parametrize(
    ("spelling", "region"),
    [
        ("+52 55 1234 5678", None),
        ("+525512345678", None),
        ("525512345678", None),  # digits with the country code first
        (525512345678, None),  # a number column
        ("(55) 1234-5678", "MX"),
        ("55 1234 5678", "mx"),
        ("+52 1 55 1234 5678", None),  # Mexico's old mobile spelling (WhatsApp's wa_id)
        ("5215512345678", None),
    ],
)
def test_every_spelling_of_one_phone_is_one_key(spelling, region):
    assert canonical_phone(spelling, region.upper() if region else None) == "+525512345678"


def test_a_number_without_country_code_needs_the_default_region():
    with pytest.raises(ValueError, match=r"no country code.*default_region"):
        canonical_phone("55 1234 5678")
    assert canonical_phone("(212) 555-0134", "US") == "+12125550134"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("call me", "not a phone number"),
        ("+52 55", "too short|not a possible phone number"),
        ("+52 55 1234 5678 9999 9999", "too long|not a possible phone number"),
        ("1" * 41, "41 characters long"),
        (True, "expected a phone number"),
        (None, "expected a phone number"),
        (5.5, "expected a phone number"),
    ],
)
def test_a_phone_that_cannot_be_read_says_why(value, message):
    assert phone_problem(value, None) is not None
    with pytest.raises(ValueError, match=message):
        canonical_phone(value)


def test_default_region_must_be_a_country_the_library_knows():
    assert region_problem(None) is None and region_problem("MX") is None and region_problem("us") is None
    assert "ISO 3166" in region_problem("Mexico") and "ISO 3166" in region_problem(52)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (42, "42"),
        (42.0, "42"),
        (Decimal("42.00"), "42"),
        (Decimal("42.50"), "42.5"),
        (0.25, "0.25"),
        (True, "true"),
        (False, "false"),
        ("Pro", "Pro"),
        (dt.date(2026, 12, 3), "2026-12-03"),
        (dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC), "2026-12-03T10:00:00+00:00"),
    ],
)
def test_meta_values_are_compared_as_the_strings_hilos_keeps(value, text):
    assert meta_text(value) == text


def test_a_list_row_in_the_normal_form():
    row = {
        "id": "C1",
        "phone": "+52 55 1234 5678",
        "canonical_phone": "+525512345678",
        "first_name": "Ana",
        "last_name": "",
        "email": None,
        "external_url": "https://crm.example.org/1",
        "meta": {"plan": "pro", "ltv": 42},
        "tags": [{"id": 2, "name": "vip"}, {"id": 1, "name": "lead"}],
    }
    assert listed_key(row) == "+525512345678"
    fields = listed_fields(row)
    assert fields["first_name"] == "Ana" and fields["last_name"] is None and fields["email"] is None
    assert fields["tags"] == ("lead", "vip") and fields["meta.plan"] == "pro" and fields["meta.ltv"] == "42"
    assert fields[META_KEYS] == ("ltv", "plan")
    assert fields["default_assignees"] is UNKNOWN  # no list row shows them
    assert meta_value(fields, "meta.plan") == "pro" and meta_value(fields, "meta.churn") is ABSENT


def test_a_list_row_that_shows_a_field_unreadably_makes_it_unknown_never_empty():
    fields = listed_fields({"phone": "+525512345678", "first_name": 7, "tags": [{"id": 1}], "meta": "x"})
    assert fields["first_name"] is UNKNOWN and fields["tags"] is UNKNOWN and fields["last_name"] is UNKNOWN
    assert fields[META_KEYS] is UNKNOWN and meta_value(fields, "meta.plan") is UNKNOWN
    assert listed_key({"phone": "not a phone"}) is None and listed_key({"canonical_phone": "", "phone": None}) is None
    assert listed_key({"canonical_phone": "garbage", "phone": "+525512345678"}) == "+525512345678"


def test_default_assignees_come_from_the_detail_as_sorted_ids():
    assert detail_assignees({"default_assignees": [{"id": 3}, {"id": 1}, 3]}) == (1, 3)
    assert detail_assignees({"default_assignees": [{"id": "3"}]}) is UNKNOWN
    assert detail_assignees({}) is UNKNOWN


def test_a_write_is_checked_against_the_document_naming_each_field():
    assert write_problems({"phone": "+525512345678", "first_name": "Ana", "meta": {"plan": "pro"}}) == []
    problems = dict(
        write_problems(
            {
                "first_name": "x" * 101,
                "email": "not-an-email",
                "external_url": "crm.example.org",
                "tags": [{"name": ""}],
                "default_assignees": [0],
                "meta": {"bad name!": "1"},
                "unknown": 1,
            }
        )
    )
    assert "101 characters, the API allows at most 100" in problems["first_name"]
    assert "not an email address" in problems["email"] and "not an http(s) URL" in problems["external_url"]
    assert problems["tags.0.name"] == "is empty" and "not a user id" in problems["default_assignees.0"]
    assert "not a custom property name" in problems["meta.bad name!"] and "unknown" in problems
    assert dict(write_problems({"tags": [{"name": "t"}] * 101}))["tags"].startswith("101 items")


def test_property_names_and_clear_cells():
    assert property_name_problem("plan") is None and property_name_problem("ltv_2026.q1") is None
    assert property_name_problem("") and property_name_problem("-x") and property_name_problem("a b")
    assert property_name_problem(3) and property_name_problem("x" * 101)
    assert clear_value("-") and clear_value("") and clear_value("  ") and not clear_value("pro") and not clear_value(0)
