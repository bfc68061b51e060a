"""The account's members: one plain list, read into the directory that resolves agents by email and teams by
name."""

from __future__ import annotations

import pytest

from airflow_provider_hilos.exceptions import HilosAPIError, HilosConfigurationError
from airflow_provider_hilos.hooks.hilos import HilosHook


def test_the_members_and_their_teams_make_the_directory_in_one_request(sandbox, output):
    with HilosHook() as hook:
        members = hook.account_members.list()
        directory = hook.account_members.directory()
    assert {m["email"] for m in members} >= {"ana@example.com", "luis@example.com"}
    assert directory.user("ANA@example.com") == 1 and directory.team("support") == 2
    assert [r["path"] for r in sandbox.requests()] == ["/api/account-member", "/api/account-member"]
    assert "account member(s) and 4 team(s) read" in output()


def test_the_documented_filters_are_passed(sandbox):
    with HilosHook() as hook:
        (only,) = hook.account_members.list(email__iexact="LUIS@example.com")
    assert only["id"] == 2 and sandbox.requests()[-1]["query"] == "email__iexact=LUIS%40example.com"


def test_an_answer_that_is_not_a_list_is_an_error(hilos_conn, requests_mock):
    hilos_conn()
    requests_mock.get("https://api.hilos.io/api/account-member", json={"results": []})
    with HilosHook() as hook, pytest.raises(HilosAPIError, match="instead of a list of members"):
        hook.account_members.list()


def test_members_need_hilos_own_api(hilos_conn):
    hilos_conn(host="https://acme.api-us1.com/api/3")
    with HilosHook() as hook, pytest.raises(HilosConfigurationError, match="give agents by user id"):
        hook.account_members.directory()
