"""The sandbox's endpoints behave like the real API at the edges, and its inspection API tells what arrived."""

from __future__ import annotations

import json

import pytest
import requests

from airflow_provider_hilos.sandbox import HilosSandbox
from tests.conftest import TEST_TOKEN
from tests.helpers import ACTIVECAMPAIGN, AUTH, NATIVE, patch


def test_patch_changes_only_sent_fields_and_returns_whole_conversation(sandbox):
    cid = sandbox.conversation_ids()[0]
    before = sandbox.conversation(cid)
    response = patch(sandbox, cid, {"status": "CLOSED", "tags": [{"name": "vip"}, {"name": "brand-new"}]})
    assert response.status_code == 200
    body = response.json()
    assert body == sandbox.conversation(cid)
    assert body["status"] == "CLOSED"
    assert [t["name"] for t in body["tags"]] == ["vip", "brand-new"]
    assert all(isinstance(t["id"], int) for t in body["tags"])
    for field in ("id", "contact", "assigned", "created_on", "source", "assigned_team", "channel"):
        assert body[field] == before[field]


def test_read_only_and_unknown_fields_are_ignored(sandbox):
    cid = sandbox.conversation_ids()[1]
    before = sandbox.conversation(cid)
    response = patch(
        sandbox, cid, {"created_on": "2000-01-01T00:00:00Z", "source": "API", "id": "x", "bogus": 1, "channel": None}
    )
    assert response.status_code == 200
    after = sandbox.conversation(cid)
    assert after == {**before, "channel": None}


def test_missing_and_wrong_token_answer_401(sandbox):
    cid = sandbox.conversation_ids()[0]
    missing = patch(sandbox, cid, {"status": "NEW"}, headers={})
    assert missing.status_code == 401
    assert missing.json() == {"detail": "Authentication credentials were not provided."}
    assert missing.headers["WWW-Authenticate"] == "Token"
    wrong = patch(sandbox, cid, {"status": "NEW"}, headers={"Authorization": "Token nope"})
    assert (wrong.status_code, wrong.json()) == (401, {"detail": "Invalid token."})
    bearer = patch(sandbox, cid, {"status": "NEW"}, headers={"Authorization": f"Bearer {TEST_TOKEN}"})
    assert bearer.status_code == 401


@pytest.mark.parametrize("cid", ["00000000-0000-4000-8000-000000000000", "not-a-uuid"])
def test_unknown_conversation_is_404(sandbox, cid):
    response = patch(sandbox, cid, {"status": "NEW"})
    assert response.status_code == 404
    assert "detail" in response.json()


def test_invalid_fields_are_400_drf_style_and_nothing_changes(sandbox):
    cid = sandbox.conversation_ids()[2]
    before = sandbox.conversation(cid)
    response = patch(
        sandbox,
        cid,
        {
            "status": "DONE",
            "assigned": [{"id": 999}, {"id": "x"}],
            "tags": [{"name": "x" * 101}],
            "assigned_team": 77,
            "channel": 9,
        },
    )
    assert response.status_code == 400
    assert response.json() == {
        "status": ['"DONE" is not a valid choice.'],
        "assigned": [{"id": ['Invalid pk "999" - object does not exist.']}, {"id": ["A valid integer is required."]}],
        "tags": [{"name": ["Ensure this field has no more than 100 characters."]}],
        "assigned_team": ['Invalid pk "77" - object does not exist.'],
        "channel": ['Invalid pk "9" - object does not exist.'],
    }
    assert sandbox.conversation(cid) == before


def test_form_and_multipart_bodies_are_accepted_as_the_documents_list_them(sandbox):
    cid = sandbox.conversation_ids()[0]
    url = f"{sandbox.url}{NATIVE}/{cid}/update"
    form = requests.patch(
        url,
        data={
            "status": "NEW",
            "assigned_team": "2",
            "channel": "",
            "tags[0]name": " vip ",
            "tags[1].name": "lead",
            "assigned[0]id": "3",
        },
        headers=AUTH,
        timeout=10,
    )
    assert form.status_code == 200, form.text
    conv = sandbox.conversation(cid)
    assert (conv["status"], conv["assigned_team"], conv["channel"], conv["assigned"]) == ("NEW", 2, None, [{"id": 3}])
    assert [t["name"] for t in conv["tags"]] == ["vip", "lead"]
    multipart = requests.patch(
        url, files={"status": (None, "RESOLVED"), "tags[0][name]": (None, "renewal")}, headers=AUTH, timeout=10
    )
    assert multipart.status_code == 200, multipart.text
    assert multipart.json()["status"] == "RESOLVED" and [t["name"] for t in multipart.json()["tags"]] == ["renewal"]
    bad = requests.patch(url, data={"status": "DONE", "assigned_team": "x"}, headers=AUTH, timeout=10)
    assert bad.status_code == 400
    assert bad.json() == {
        "status": ['"DONE" is not a valid choice.'],
        "assigned_team": ["A valid integer is required."],
    }


def test_non_json_bodies(sandbox):
    cid = sandbox.conversation_ids()[0]
    url = f"{sandbox.url}{NATIVE}/{cid}/update"
    text = requests.patch(url, data="status=NEW", headers={**AUTH, "Content-Type": "text/plain"}, timeout=10)
    assert text.status_code == 415 and text.json() == {"detail": 'Unsupported media type "text/plain" in request.'}
    broken = requests.patch(url, data="{", headers={**AUTH, "Content-Type": "application/json"}, timeout=10)
    assert broken.status_code == 400 and broken.json()["detail"].startswith("JSON parse error")
    listed = patch(sandbox, cid, [{"status": "NEW"}])
    assert listed.json() == {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}


def test_list_endpoint_pages_and_filters(sandbox):
    url = f"{sandbox.url}{NATIVE}"
    page = requests.get(url, params={"page_size": 7}, headers=AUTH, timeout=10).json()
    assert page["count"] == 20 and len(page["results"]) == 7 and page["previous"] is None
    second = requests.get(page["next"], headers=AUTH, timeout=10).json()
    assert [r["id"] for r in second["results"]] == sandbox.conversation_ids()[7:14]
    contact = page["results"][0]["contact"]
    mine = requests.get(url, params={"contact": contact}, headers=AUTH, timeout=10).json()
    assert mine["count"] == 1
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, params={"page": 99}, headers=AUTH, timeout=10).status_code == 404
    for bad_page in ("0", "-1", "x", "²"):
        assert requests.get(url, params={"page": bad_page}, headers=AUTH, timeout=10).json() == {
            "detail": "Invalid page."
        }
    assert len(requests.get(url, params={"page_size": "x"}, headers=AUTH, timeout=10).json()["results"]) == 20
    assert requests.get(url, params={"contact": "nope"}, headers=AUTH, timeout=10).json() == {
        "contact": ["Enter a valid UUID."]
    }


def test_list_rows_are_conversation_read_simple(sandbox):
    """As the list endpoint documents them: assignees in full and the first message (data unchanged)."""
    page = requests.get(f"{sandbox.url}{NATIVE}", params={"page_size": 20}, headers=AUTH, timeout=10).json()
    for row in page["results"]:
        stored = sandbox.conversation(row["id"])
        assert [u["id"] for u in row["assigned"]] == [u["id"] for u in stored["assigned"]]
        assert all(
            {"first_name", "last_name", "email", "account", "profile_image", "date_joined"} <= set(u)
            for u in row["assigned"]
        )
        assert row["first_message"]["contact"] == stored["contact"]
        assert {k: row[k] for k in ("status", "tags", "created_on", "source", "assigned_team", "channel")} == {
            k: stored[k] for k in ("status", "tags", "created_on", "source", "assigned_team", "channel")
        }


def test_request_log_records_what_arrived_without_the_token(sandbox):
    cid = sandbox.conversation_ids()[0]
    patch(sandbox, cid, {"status": "NEW"})
    patch(sandbox, cid, {"status": "NEW"}, headers={"Authorization": "Token guess"})
    first, second = sandbox.requests()
    assert first["method"] == "PATCH" and first["body"] == {"status": "NEW"} and first["status"] == 200
    assert first["headers"]["authorization"] == "Token <sandbox-token>"
    assert second["headers"]["authorization"] == "<not the sandbox token>" and second["status"] == 401
    served = requests.get(f"{sandbox.root_url}/_sandbox/requests", timeout=10).json()
    assert served["total"] == 2 and TEST_TOKEN not in str(served)


def test_inspection_api(sandbox):
    root = f"{sandbox.root_url}/_sandbox"
    cid = sandbox.conversation_ids()[3]
    assert requests.get(f"{root}/health", timeout=10).json()["conversations"] == 20
    assert requests.get(f"{root}/conversations", timeout=10).json() == sandbox.conversation_ids()
    assert requests.get(f"{root}/conversations/{cid}", timeout=10).json() == sandbox.conversation(cid)
    assert requests.get(f"{root}/conversations/nope", timeout=10).status_code == 404
    reference = requests.get(f"{root}/reference", timeout=10).json()
    assert {u["id"] for u in reference["users"]} == set(range(1, 13))
    patch(sandbox, cid, {"status": "CLOSED"})
    assert requests.post(f"{root}/reset", headers=AUTH, timeout=10).status_code == 204
    assert sandbox.requests() == []
    faults = {"error_rate": 1, "error_statuses": [503]}
    assert requests.put(f"{root}/faults", json=faults, headers=AUTH, timeout=10).ok
    assert patch(sandbox, cid, {"status": "NEW"}).status_code == 503
    assert requests.put(f"{root}/faults", json={"bogus": 1}, headers=AUTH, timeout=10).status_code == 400
    assert requests.post(f"{root}/faults/next", json={"kind": "500"}, headers=AUTH, timeout=10).status_code == 204


def test_only_the_token_changes_the_sandbox_and_only_loopback_names_reach_it(sandbox):
    root = f"{sandbox.root_url}/_sandbox"
    changes = [
        ("PUT", "/faults", {"error_rate": 1}),
        ("POST", "/faults/next", {"kind": "503"}),
        ("DELETE", "/faults/next", None),
        ("POST", "/reset", None),
        ("DELETE", "/requests", None),
    ]
    for method, path, body in changes:  # a page on this machine could send these: without the token, refused
        answer = requests.request(method, root + path, json=body, timeout=10)
        assert answer.status_code == 401, (method, path)
    assert sandbox.faults.config.error_rate == 0 and not sandbox.faults.script
    cid = sandbox.conversation_ids()[0]
    assert patch(sandbox, cid, {"status": "NEW"}).status_code == 200  # nothing was changed
    for host in ("evil.example", "127.0.0.1.nip.io", "localhost.evil.example:80"):  # DNS rebinding
        assert requests.get(f"{root}/state", headers={"Host": host}, timeout=10).status_code == 400
        assert patch(sandbox, cid, {"status": "NEW"}, headers={**AUTH, "Host": host}).status_code == 400
    for host in ("localhost", f"127.0.0.1:{sandbox.port}", "[::1]:8080", "LOCALHOST:1"):
        assert requests.get(f"{root}/health", headers={"Host": host}, timeout=10).ok, host


def test_a_truncated_request_log_says_so(caplog):
    with HilosSandbox(conversations=2, token=TEST_TOKEN, request_log_limit=3) as sb:
        cid = sb.conversation_ids()[0]
        for _ in range(5):
            patch(sb, cid, {"status": "NEW"})
        served = requests.get(f"{sb.root_url}/_sandbox/requests", timeout=10).json()
        assert (served["total"], served["kept"], served["dropped"], served["truncated"]) == (5, 3, 2, True)
        assert served["limit"] == 3 and len(served["requests"]) == 3
        assert len(sb.requests()) == 3 and sb.requests_dropped == 2
    assert "holds the last 3 of 5 requests (request_log_limit=3): 2 dropped" in caplog.text


@pytest.mark.parametrize(
    ("family", "served", "other"), [("hilos", NATIVE, ACTIVECAMPAIGN), ("activecampaign", ACTIVECAMPAIGN, NATIVE)]
)
def test_each_sandbox_serves_one_family_and_answers_the_other_with_a_django_route_404(family, served, other):
    with HilosSandbox(conversations=2, token=TEST_TOKEN, api_family=family) as sb:
        cid = sb.conversation_ids()[0]
        assert requests.patch(f"{sb.url}{served}/{cid}/update", json={"status": "NEW"}, headers=AUTH, timeout=10).ok
        assert requests.get(f"{sb.url}{served}", headers=AUTH, timeout=10).ok
        for method, url in (
            ("PATCH", f"{sb.url}{other}/{cid}/update"),
            ("GET", f"{sb.url}{other}"),
            ("GET", f"{sb.url}/nowhere"),
        ):
            wrong = requests.request(method, url, json={"status": "NEW"}, headers=AUTH, timeout=10)
            assert wrong.status_code == 404
            assert wrong.headers["Content-Type"].startswith("text/html")
            assert "<h1>Not Found</h1>" in wrong.text  # Django's page, unlike a missing conversation's JSON
        missing = requests.patch(
            f"{sb.url}{served}/00000000-0000-4000-8000-000000000000/update",
            json={"status": "NEW"},
            headers=AUTH,
            timeout=10,
        )
        assert (missing.status_code, missing.json()) == (404, {"detail": "No Conversation matches the given query."})
        not_allowed = requests.delete(f"{sb.url}{served}/{cid}/update", headers=AUTH, timeout=10)
        assert (not_allowed.status_code, not_allowed.json()) == (405, {"detail": 'Method "DELETE" not allowed.'})


def test_put_is_a_full_update(sandbox):
    cid = sandbox.conversation_ids()[0]
    url = f"{sandbox.url}{NATIVE}/{cid}/update"
    before = sandbox.conversation(cid)
    missing = requests.put(url, json={"status": "CLOSED"}, headers=AUTH, timeout=10)
    assert missing.status_code == 400 and missing.json() == {
        f: ["This field is required."] for f in ("id", "contact", "assigned")
    }
    assert sandbox.conversation(cid) == before
    full = requests.put(
        url,
        json={"id": cid, "contact": before["contact"], "assigned": [{"id": 2}], "status": "FLOW_PAUSED"},
        headers=AUTH,
        timeout=10,
    )
    assert full.status_code == 200 and (full.json()["status"], full.json()["assigned"]) == ("FLOW_PAUSED", [{"id": 2}])


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(body)
        for body in (
            {"status": {"x": 1}},
            {"status": ["CLOSED"]},
            {"status": 5},
            {"assigned_team": "--5"},
            {"assigned_team": "²"},
            {"assigned": [{"id": "--5"}]},
            {"assigned": [{"id": "²"}]},
            {"channel": "٣"},
            {"assigned_team": 1e300},
            {"tags": [{"name": {"a": 1}}]},
            {"tags": "vip"},
            {"assigned": {"id": 1}},
            {"contact": ["x"]},
            {"contact": 10**60},
            {"status": "x" * 100_000},
            {"tags": [{"name": "\u0000"}]},
        )
    ]
    + ['{"assigned_team": ' + "9" * 5000 + "}"],  # more digits than Python reads into an int by default
    ids=lambda raw: raw[:40],
)
def test_no_client_input_makes_the_sandbox_answer_500(sandbox, raw):
    cid = sandbox.conversation_ids()[0]
    before = sandbox.conversation(cid)
    response = requests.patch(
        f"{sandbox.url}{NATIVE}/{cid}/update",
        data=raw,
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400, response.text
    assert sandbox.conversation(cid) == before


def test_deeply_nested_json_is_a_400_not_a_500(sandbox):
    cid = sandbox.conversation_ids()[0]
    nested = '{"status": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = requests.patch(
        f"{sandbox.url}{NATIVE}/{cid}/update",
        data=nested,
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400 and response.json()["detail"].startswith("JSON parse error")


def test_reset_restores_seed_clears_faults_and_log(sandbox):
    cid = sandbox.conversation_ids()[0]
    seeded = sandbox.conversation(cid)
    patch(sandbox, cid, {"status": "CLOSED" if seeded["status"] != "CLOSED" else "NEW"})
    sandbox.set_faults(error_rate=1)
    sandbox.fail_next("drop", 3)
    sandbox.reset()
    assert sandbox.conversation(cid) == seeded and sandbox.requests() == []
    assert sandbox.faults.injected == {}  # the counts of injected faults start again too
    assert patch(sandbox, cid, {"status": "NEW"}).status_code == 200  # no fault left, none scheduled


# -- the list as DRF's PageNumberPagination on a busy account ------------------------------------------------


def listing(sandbox, **params):
    return requests.get(f"{sandbox.url}{NATIVE}", params=params, headers=AUTH, timeout=10)


def test_page_size_above_max_page_size_is_capped_as_drf_does(sandbox):
    sandbox.set_faults(max_page_size=4)
    page = listing(sandbox, page_size=50).json()
    assert len(page["results"]) == 4 and page["count"] == 20
    assert page["next"].startswith(f"{sandbox.url}{NATIVE}?") and "page=2" in page["next"]


def test_next_and_previous_are_absolute_and_page_two_points_back_without_a_page(sandbox):
    second = listing(sandbox, page=2, page_size=5).json()
    assert second["previous"] == f"{sandbox.url}{NATIVE}?page_size=5"
    assert listing(sandbox, page=3, page_size=5).json()["previous"].endswith("page=2")
    assert listing(sandbox, page=5, page_size=5).json() == {"detail": "Invalid page."}


def test_an_update_moves_a_conversation_to_the_front(sandbox):
    last = listing(sandbox, page_size=100).json()["results"][-1]["id"]
    assert patch(sandbox, last, {"status": "CLOSED"}).status_code == 200
    assert listing(sandbox, page_size=100).json()["results"][0]["id"] == last


def test_arrivals_between_pages_shift_the_list(sandbox):
    sandbox.set_faults(arrivals_per_page=2)
    first = [row["id"] for row in listing(sandbox, page_size=5).json()["results"]]
    second = listing(sandbox, page=2, page_size=5).json()
    assert second["count"] == 22
    assert [row["id"] for row in second["results"]][:2] == first[3:5]  # two rows of page 1 came again
    sandbox.reset()
    assert len(sandbox.conversation_ids()) == 20


def test_moves_between_pages_take_the_oldest_to_the_front(sandbox):
    everything = [row["id"] for row in listing(sandbox, page_size=100).json()["results"]]
    sandbox.set_faults(moves_per_page=3)
    second = listing(sandbox, page=2, page_size=5).json()
    assert second["count"] == 20  # nothing new: three conversations had new activity
    after = [row["id"] for row in listing(sandbox, page_size=100).json()["results"]]
    assert after[:3] == everything[-3:] and sorted(after) == sorted(everything)
    assert [row["id"] for row in second["results"]][:3] == everything[2:5]  # page 1's last three, again


def test_list_requests_count_against_the_token_bucket(sandbox):
    sandbox.set_faults(rate_limit_per_second=1, rate_limit_burst=1)
    statuses = [listing(sandbox).status_code for _ in range(3)]
    assert statuses[0] == 200 and 429 in statuses[1:]
