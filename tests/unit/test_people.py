"""Agents by email and teams by name: one listing of the account's members per run, compared ignoring case."""

from __future__ import annotations

from airflow_provider_hilos.people import Directory, PeopleResolver, looks_like_email, looks_like_name

MEMBERS = [
    {"id": 1, "email": "Ana@Example.com", "teams": [{"id": 10, "name": "Support"}, {"id": 11, "name": "Sales"}]},
    {"id": 2, "email": "luis@example.com", "teams": [{"id": 12, "name": "sales"}]},  # a second team named Sales
    {"id": 3, "email": "", "teams": []},  # no email: skipped
    {"email": "ghost@example.com"},  # no id: skipped
]


def resolver() -> tuple[PeopleResolver, list[int]]:
    calls: list[int] = []

    def load() -> Directory:
        calls.append(1)
        return Directory.from_members(MEMBERS)

    return PeopleResolver(load), calls


def test_the_directory_is_by_lower_cased_email_and_team_name_with_shared_names_ambiguous():
    directory = Directory.from_members(MEMBERS)
    assert directory.users == {"ana@example.com": 1, "luis@example.com": 2}
    assert directory.user(" ANA@example.COM ") == 1 and directory.user("ghost@example.com") is None
    assert directory.team("support") == 10 and directory.team("Sales") is None  # two teams: ambiguous


def test_rows_naming_nobody_by_email_are_left_alone_and_cost_no_request():
    people, calls = resolver()
    row = {"conversation_id": "x", "assigned": [1, "2"], "assigned_team": "3", "tags": ["a@b.c"]}
    assert people.resolve(row) == (row, [])
    assert calls == [] and not people.used


def test_emails_and_team_names_become_ids_with_one_listing_for_the_run():
    people, calls = resolver()
    first, problems = people.resolve({"assigned": ["ANA@example.com", 7], "assigned_team": "Support"})
    assert problems == [] and first == {"assigned": [1, 7], "assigned_team": 10}
    second, _ = people.resolve({"default_assignees": '["luis@example.com"]'})  # a list rendered as JSON text
    third, _ = people.resolve({"assigned": "luis@example.com"})  # one email alone
    assert second == {"default_assignees": [2]} and third == {"assigned": [2]}
    assert calls == [1] and people.used


def test_an_unknown_email_or_team_is_a_problem_naming_it_and_the_fix():
    people, _ = resolver()
    _, problems = people.resolve({"assigned": ["nobody@example.com", "ana@example.com"], "assigned_team": "Sales"})
    messages = dict(problems)
    assert "'nobody@example.com' is not the email of a member of this Hilos account" in messages["assigned"]
    assert "give the user's id" in messages["assigned"]
    assert "'Sales' is not one team of this Hilos account (two teams have that name" in messages["assigned_team"]
    _, unknown = people.resolve({"assigned_team": "Legal"})
    assert "no team has it" in unknown[0][1] and "sales, support" in unknown[0][1]


def test_what_counts_as_an_email_or_a_name():
    assert looks_like_email("a@b.co") and not looks_like_email("a b@c.d") and not looks_like_email(3)
    assert looks_like_name("Support") and not looks_like_name("3") and not looks_like_name("-")
    assert not looks_like_name("") and not looks_like_name(None)
