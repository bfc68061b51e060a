"""The conversation resource: the one place the PATCH is made, and the list, in either API family."""

from __future__ import annotations

import pytest

from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.resources.conversations import Conversations, conversation_key
from airflow_provider_hilos.schemas import validate_update
from tests.conftest import TEST_TOKEN
from tests.helpers import patches


def test_only_a_validated_update_reaches_the_wire(sandbox):
    with HilosHook() as hook:
        conversations = hook.conversations
        assert isinstance(conversations, Conversations) and hook.conversations is conversations  # one per hook
        with pytest.raises(TypeError, match="takes a ValidatedUpdate"):
            conversations.send({"conversation_id": sandbox.conversation_ids()[0], "status": "CLOSED"})  # type: ignore[arg-type]
        assert patches(sandbox) == []
        cid = sandbox.conversation_ids()[0]
        answer = conversations.send(validate_update(cid, {"status": "CLOSED"}))
    assert answer["status"] == "CLOSED" and sandbox.conversation(cid)["status"] == "CLOSED"
    (sent,) = patches(sandbox)
    assert sent["path"] == f"/api/inbox/conversation/{cid}/update"


def test_the_planned_request_names_the_url_and_body_never_the_token(sandbox):
    cid = sandbox.conversation_ids()[1]
    with HilosHook() as hook:
        planned = hook.conversations.planned(validate_update(cid, {"tags": ["vip"]}))
    assert planned["method"] == "PATCH" and planned["url"].endswith(f"/api/inbox/conversation/{cid}/update")
    assert planned["body"] == {"tags": [{"name": "vip"}]} and TEST_TOKEN not in repr(planned)
    assert patches(sandbox) == []


def test_the_list_reads_every_conversation_once(sandbox):
    with HilosHook() as hook:
        page = hook.conversations.list(page=1, page_size=7)
        every = list(hook.conversations.rows(page_size=7, concurrency=2))
    assert page["count"] == 20 and len(page["results"]) == 7
    assert sorted(r["id"] for r in every) == sorted(sandbox.conversation_ids())


def test_the_active_campaign_family_patches_its_own_path(hilos_conn, requests_mock):
    hilos_conn(host="https://acme.api-us1.com/api/3")
    cid = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    url = f"https://acme.api-us1.com/api/3/channel/whatsapp/inbox/conversation/{cid}/update"
    requests_mock.patch(url, json={"id": cid, "status": "CLOSED"})
    with HilosHook() as hook:
        assert hook.conversations.send(validate_update(cid, {"status": "CLOSED"}))["status"] == "CLOSED"
    assert requests_mock.call_count == 1


def test_a_row_is_keyed_by_its_uuid_whatever_its_case():
    upper = {"id": "3FA85F64-5717-4562-B3FC-2C963F66AFA6"}
    assert conversation_key(upper) == conversation_key({"id": upper["id"].lower()})
    with pytest.raises(ValueError):
        conversation_key({"id": 3})
