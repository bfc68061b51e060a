"""Contract tests: the provider and the sandbox against both published OpenAPI descriptions of the API.

``tests/contract/openapi-hilos-native-conversation.json`` is Hilos's own document (api.hilos.io,
``/api/inbox/...``); ``tests/contract/openapi-conversation-update.json`` is the copy in ActiveCampaign's
developer reference (account hosts, ``/channel/whatsapp/inbox/...``). Both are kept in the repository;
nothing here reads anything outside it. Request bodies the client builds are validated against
``PatchedConversationEdit``, sandbox answers against ``ConversationEdit`` and the paginated list, and
schemathesis (a tool nobody here wrote) fuzzes the sandbox with each document in each family."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.sandbox import HilosSandbox
from airflow_provider_hilos.schemas import (
    CLEAR,
    REFUSED_FIELDS,
    TAG_NAME_MAX_LENGTH,
    WRITABLE_FIELDS,
    ConversationSource,
    ConversationStatus,
)
from tests.conftest import TEST_TOKEN

CONTRACT = Path(__file__).resolve().parent  # the two published documents, kept beside this file


DOCUMENTS = {
    "hilos": json.loads((CONTRACT / "openapi-hilos-native-conversation.json").read_text()),
    "activecampaign": json.loads((CONTRACT / "openapi-conversation-update.json").read_text()),
}


#: Where each document puts the conversation endpoints (spelled out: a wrong path in the package cannot pass).
ROOTS = {"hilos": "/api/inbox/conversation", "activecampaign": "/channel/whatsapp/inbox/conversation"}


#: Answers Django REST Framework gives any endpoint, documented or not: bad input, no token, no such
#: object (or page), a media type the view does not parse.
DRF_STANDARD_STATUSES = {400, 401, 404, 415}


def to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: ``nullable`` becomes a null type; refs stay local."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def validator(document: str, name: str, *, request: bool = False) -> jsonschema.Draft202012Validator:
    components = to_json_schema(copy.deepcopy(DOCUMENTS[document]["components"]["schemas"]))
    if request:  # readOnly properties must not be sent
        for schema in components.values():
            for prop in [p for p, d in schema.get("properties", {}).items() if d.get("readOnly")]:
                schema["properties"][prop] = False
            if "required" in schema:
                schema["required"] = [r for r in schema["required"] if schema["properties"].get(r) is not False]
    root = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": components}}
    return jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())


def schemas(document: str) -> dict[str, Any]:
    return DOCUMENTS[document]["components"]["schemas"]


PAYLOADS = [
    {"status": "CLOSED"},
    {"tags": [{"name": "vip"}, {"name": "x" * 100}]},
    {"assigned": [{"id": 1}, {"id": 2}]},
    {"assigned_team": 3, "channel": CLEAR},
    {"channel": 2, "tags": [], "assigned": []},
    {"status": "IN_PROGRESS", "tags": [{"name": "renewal"}], "assigned": [{"id": 4}], "assigned_team": 1, "channel": 1},
]


FUZZ_EXAMPLES = 50


def in_family(document: str, family: str) -> dict[str, Any]:
    """The document with its paths moved to ``family``'s root (the same API, served under the other path)."""
    spec = copy.deepcopy(DOCUMENTS[document])
    spec["paths"] = {path.replace(ROOTS[document], ROOTS[family], 1): item for path, item in spec["paths"].items()}
    for server in spec["servers"]:  # ActiveCampaign's copy uses {youraccountname} without declaring it
        if "{youraccountname}" in server["url"]:
            server.setdefault("variables", {"youraccountname": {"default": "acme"}})
    return spec


@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_documented_update_is_the_one_the_hook_calls_in_that_family(document, hilos_conn, requests_mock):
    operation = DOCUMENTS[document]["paths"][f"{ROOTS[document]}/{{id}}/update"]["patch"]
    assert operation["operationId"] == "Partially update a Conversation"
    assert operation["parameters"][0]["schema"] == {"type": "string", "format": "uuid"}
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ConversationEdit")
    cid = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    server = DOCUMENTS[document]["servers"][0]["url"].replace("{youraccountname}", "acme")
    hilos_conn(host=server)  # the document's own server, no family chosen: the host decides
    requests_mock.patch(f"{server}{ROOTS[document]}/{cid}/update", json={})
    HilosHook().update_conversation(cid, {"status": "CLOSED"})
    assert requests_mock.last_request.url == f"{server}{ROOTS[document]}/{cid}/update"


def test_hilos_documents_the_list_the_test_button_calls():
    operation = DOCUMENTS["hilos"]["paths"][ROOTS["hilos"]]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"contact", "page", "page_size", "search"}
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/PaginatedConversationReadSimpleList"
    )


def test_models_mirror_both_documents():
    native, hosted = schemas("hilos"), schemas("activecampaign")
    union = set(native["ConversationStatusEnum"]["enum"]) | set(hosted["ConversationStatusEnum"]["enum"])
    assert {s.value for s in ConversationStatus} == union
    assert set(native["ConversationStatusEnum"]["enum"]) - set(hosted["ConversationStatusEnum"]["enum"]) == {
        "FLOW_PAUSED"
    }
    for document in DOCUMENTS:
        assert [s.value for s in ConversationSource] == schemas(document)["ConversationSourceEnum"]["enum"]
        assert schemas(document)["ConversationTag"]["properties"]["name"]["maxLength"] == TAG_NAME_MAX_LENGTH
        props = schemas(document)["PatchedConversationEdit"]["properties"]
        assert {p for p, d in props.items() if d.get("readOnly")} == {"created_on", "source"}
        assert set(WRITABLE_FIELDS) | set(REFUSED_FIELDS) == set(props)
        assert set(schemas(document)["ConversationEdit"]["properties"]) == set(props)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_seeded_conversation_is_a_valid_conversation_edit(document, sandbox):
    edit = validator(document, "ConversationEdit")
    for cid in sandbox.conversation_ids():
        edit.validate(sandbox.conversation(cid))


@pytest.mark.parametrize("document", DOCUMENTS)
@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: ",".join(p))
def test_requests_and_responses_match_each_document(document, payload, monkeypatch):
    with HilosSandbox(conversations=3, seed=11, token=TEST_TOKEN, api_family=document) as sb:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sb.connection_json())
        cid = sb.conversation_ids()[0]
        answer = HilosHook().update_conversation(cid, payload)
        (sent,) = [r for r in sb.requests() if r["method"] == "PATCH"]
    validator(document, "PatchedConversationEdit", request=True).validate(sent["body"])  # no read-only field
    assert sent["body"] == {k: (None if v == CLEAR else v) for k, v in payload.items()}  # CLEAR is sent as null
    assert sent["path"] == f"{ROOTS[document]}/{cid}/update"
    validator(document, "ConversationEdit").validate(answer)


def test_flow_paused_is_sent_as_hilos_documents_it(sandbox):
    cid = sandbox.conversation_ids()[0]
    answer = HilosHook().update_conversation(cid, {"status": "FLOW_PAUSED"})
    (sent,) = [r for r in sandbox.requests() if r["method"] == "PATCH"]
    validator("hilos", "PatchedConversationEdit", request=True).validate(sent["body"])
    with pytest.raises(jsonschema.ValidationError):  # ActiveCampaign's copy predates it
        validator("activecampaign", "PatchedConversationEdit", request=True).validate(sent["body"])
    assert answer["status"] == "FLOW_PAUSED"
    validator("hilos", "ConversationEdit").validate(answer)


def test_request_validator_rejects_read_only_fields():
    with pytest.raises(jsonschema.ValidationError):
        validator("hilos", "PatchedConversationEdit", request=True).validate({"created_on": "2025-01-01T00:00:00Z"})
    with pytest.raises(jsonschema.ValidationError):
        validator("hilos", "ConversationEdit").validate({"id": "x"})  # required fields missing


def test_list_answer_is_the_documented_page_of_conversations(sandbox):
    page = HilosHook().list_conversations(page_size=5)
    validator("hilos", "PaginatedConversationReadSimpleList").validate(page)
    assert set(page) == {"count", "next", "previous", "results"} and len(page["results"]) == 5


def test_answers_with_values_the_provider_does_not_know_yet_pass_through(hilos_conn, requests_mock):
    """Forward compatible: a new status or source in an answer is returned as the API sent it."""
    cid = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    answer = {
        "id": cid,
        "contact": cid,
        "status": "ARCHIVED",
        "assigned": [],
        "tags": [],
        "created_on": "2025-01-01T00:00:00Z",
        "source": "INSTAGRAM",
        "assigned_team": 1,
        "channel": None,
        "new_field": {"x": 1},
    }
    hilos_conn()
    requests_mock.patch(f"https://api.hilos.io/api/inbox/conversation/{cid}/update", json=answer)
    requests_mock.get(
        "https://api.hilos.io/api/inbox/conversation",
        json={"count": 1, "next": None, "previous": None, "results": [answer]},
    )
    hook = HilosHook()
    assert hook.update_conversation(cid, {"status": "CLOSED"}) == answer
    assert hook.list_conversations()["results"] == [answer]


@pytest.mark.parametrize("family", ROOTS)
@pytest.mark.parametrize("document", DOCUMENTS)
def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(document, family):
    schema = schemathesis.openapi.from_dict(in_family(document, family))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == {"hilos": 3, "activecampaign": 1}[document]  # list, PATCH, PUT / PATCH
    with HilosSandbox(conversations=3, seed=5, token=TEST_TOKEN, api_family=family) as sb:
        conversation_id = sb.conversation_ids()[0]  # a fixed, existing conversation
        auth = {"Authorization": f"Token {TEST_TOKEN}", "Token": f"Token {TEST_TOKEN}"}
        seen: dict[str, set[int]] = {}
        session = requests.Session()
        for operation in operations:
            documented = {int(code) for code in operation.definition.raw["responses"]}
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
                params = {"id": conversation_id} if "{id}" in operation.path else None
                strategy = operation.as_strategy(mode, path_parameters=params, headers=auth)

                @settings(
                    max_examples=FUZZ_EXAMPLES,
                    derandomize=True,
                    database=None,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=strategy)
                def fuzz(case):
                    response = case.call(base_url=sb.url, session=session)
                    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
                    assert response.status_code in documented | DRF_STANDARD_STATUSES, (  # noqa: B023 - called below
                        f"{case.method} {case.formatted_path}: undocumented HTTP {response.status_code}: "
                        f"{response.text[:300]}"
                    )
                    seen.setdefault(operation.label, set()).add(response.status_code)  # noqa: B023 - called below

                fuzz()
        server_errors = [r for r in sb.requests() if (r.get("status") or 0) >= 500]

    assert server_errors == []
    assert set(seen) == {op.label for op in operations}
    assert all(200 in codes for codes in seen.values()), seen  # real answers were checked, not only refusals


# -- contacts and account members: Hilos's own document, tests/contract/openapi-hilos-native-contacts.json --------

CONTACTS_DOCUMENT = json.loads((CONTRACT / "openapi-hilos-native-contacts.json").read_text())


def contacts_validator(name: str, *, request: bool = False) -> jsonschema.Draft202012Validator:
    components = to_json_schema(copy.deepcopy(CONTACTS_DOCUMENT["components"]["schemas"]))
    if request:
        for schema in components.values():
            for prop in [p for p, d in schema.get("properties", {}).items() if d.get("readOnly")]:
                schema["properties"][prop] = False
            if "required" in schema:
                schema["required"] = [r for r in schema["required"] if schema["properties"].get(r) is not False]
    root = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": components}}
    return jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())


def test_every_contact_write_the_sync_builds_is_a_documented_body():
    from airflow_provider_hilos.contacts import ABSENT, META_KEYS
    from airflow_provider_hilos.sync.diff import CompareWith, ListMode
    from airflow_provider_hilos.sync.objects.contact import ContactObject

    check = contacts_validator("PatchedContactEditPublic", request=True)
    current = {
        "first_name": "Ana",
        "tags": ("lead",),
        "meta.plan": "pro",
        "meta.note": "x",
        META_KEYS: ("note", "plan"),
    }
    desired_cases = [
        {"first_name": "Luis", "email": "luis@example.com", "external_url": "https://crm.example.org/1"},
        {"tags": ("vip",), "default_assignees": (1, 2)},
        {"meta.plan": "enterprise", "meta.ltv": "42"},
        {"meta.plan": ABSENT, "last_name": None},
    ]
    bodies = []
    for mode in (ListMode.REPLACE, ListMode.ADD):
        obj = ContactObject(tags_mode=mode, default_assignees_mode=mode)
        for desired in desired_cases:
            for held in (current, None):
                entry = obj.plan(
                    "+525512345678",
                    desired,
                    compare_with=CompareWith.HILOS,
                    current=held,
                    previous=None,
                    failed_before=False,
                    row=1,
                    object_id=None if held is None else "c1",
                )
                bodies.append(obj.write(entry, current=held, desired=desired).body)
    for body in bodies:
        check.validate(body)
    assert any("overwrite_meta" in b for b in bodies) and any("overwrite_tags" in b for b in bodies)


def test_the_sandbox_answers_are_the_documented_contact_and_member_objects(sandbox):
    with HilosHook() as hook:
        page = hook.contacts.list(page_size=5)
        detail = hook.contacts.get(page["results"][0]["id"])
        made = hook.contacts.create_or_update({"phone": "+525500009999", "meta": {"plan": "pro"}})
        members = hook.account_members.list()
        put = hook.transport.request("PUT", f"/api/contact/{made['id']}", json={"phone": "+525500009999"})
    contacts_validator("PaginatedContactListReadPublicList").validate(page)
    contacts_validator("ContactDetailRead").validate(detail)
    contacts_validator("ContactDetailReadPublic").validate(made)
    contacts_validator("ContactDetailReadPublic").validate(put)
    for member in members:
        contacts_validator("AccountMemberUser").validate(member)
    assert len(page["results"]) == 5 and members


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer_on_contacts():
    schema = schemathesis.openapi.from_dict(copy.deepcopy(CONTACTS_DOCUMENT))
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()),
        key=lambda op: op.method.upper() == "DELETE",  # the fixed contact is deleted last
    )
    assert len(operations) == 7
    with HilosSandbox(conversations=3, seed=5, token=TEST_TOKEN) as sb:
        contact_id = sb.contact_ids()[0]
        auth = {"Authorization": f"Token {TEST_TOKEN}"}
        seen: dict[str, set[int]] = {}
        session = requests.Session()
        for operation in operations:
            documented = {int(code) for code in operation.definition.raw["responses"]}
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
                params = {"id": contact_id} if "{id}" in operation.path else None
                strategy = operation.as_strategy(mode, path_parameters=params, headers=auth)

                @settings(
                    max_examples=FUZZ_EXAMPLES,
                    derandomize=True,
                    database=None,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=strategy)
                def fuzz(case):
                    response = case.call(base_url=sb.url, session=session)
                    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
                    assert response.status_code in documented | DRF_STANDARD_STATUSES, (  # noqa: B023 - called below
                        f"{case.method} {case.formatted_path}: undocumented HTTP {response.status_code}: "
                        f"{response.text[:300]}"
                    )
                    seen.setdefault(operation.label, set()).add(response.status_code)  # noqa: B023 - called below

                try:
                    fuzz()
                except Unsatisfiable:  # nothing to make invalid (a DELETE of the fixed id has no body)
                    if mode is not schemathesis.GenerationMode.NEGATIVE:
                        raise
        server_errors = [r for r in sb.requests() if (r.get("status") or 0) >= 500]
    assert server_errors == []
    assert set(seen) == {op.label for op in operations}
    ok = {label for label, codes in seen.items() if codes & {200, 201, 204}}
    # real answers were checked, not only refusals (random text is never a phone: the POST and PUT that succeed are
    # checked against the document in test_the_sandbox_answers_are_the_documented_contact_and_member_objects)
    assert ok >= set(seen) - {"POST /api/contact", "PUT /api/contact/{id}"}, seen
