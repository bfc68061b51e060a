"""Contract tests: the provider and the sandbox against the vendor's OpenAPI description.

The description is kept in the repo (tests/contract/openapi-conversation-update.json), a copy of
the vendor's seed; nothing here reads anything outside the repository.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from airflow_provider_hilos.hooks.hilos import CONVERSATION_LIST_PATH, CONVERSATION_UPDATE_PATH, HilosHook
from airflow_provider_hilos.models import (
    REFUSED_FIELDS,
    TAG_NAME_MAX_LENGTH,
    WRITABLE_FIELDS,
    ConversationEdit,
    ConversationSource,
    ConversationStatus,
)

SPEC = json.loads((Path(__file__).parent / "contract" / "openapi-conversation-update.json").read_text())
SCHEMAS = SPEC["components"]["schemas"]


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


def validator(name: str, *, request: bool = False) -> jsonschema.Draft202012Validator:
    components = to_json_schema(copy.deepcopy(SCHEMAS))
    if request:  # readOnly properties must not be sent
        for schema in components.values():
            for prop in [p for p, d in schema.get("properties", {}).items() if d.get("readOnly")]:
                schema["properties"][prop] = False
            if "required" in schema:
                schema["required"] = [r for r in schema["required"] if schema["properties"].get(r) is not False]
    root = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": components}}
    return jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())


PATCH_REQUEST = validator("PatchedConversationEdit", request=True)
EDIT_RESPONSE = validator("ConversationEdit")


def test_the_seed_operation_is_the_one_the_hook_calls():
    operation = SPEC["paths"][CONVERSATION_UPDATE_PATH]["patch"]
    assert operation["operationId"] == "Partially update a Conversation"
    assert operation["parameters"][0]["schema"] == {"type": "string", "format": "uuid"}
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ConversationEdit")
    assert CONVERSATION_LIST_PATH == CONVERSATION_UPDATE_PATH.removesuffix("/{id}/update")


def test_models_mirror_the_seed_schemas():
    assert [s.value for s in ConversationStatus] == SCHEMAS["ConversationStatusEnum"]["enum"]
    assert [s.value for s in ConversationSource] == SCHEMAS["ConversationSourceEnum"]["enum"]
    assert TAG_NAME_MAX_LENGTH == SCHEMAS["ConversationTag"]["properties"]["name"]["maxLength"]
    props = SCHEMAS["PatchedConversationEdit"]["properties"]
    read_only = {p for p, d in props.items() if d.get("readOnly")}
    assert read_only == {"created_on", "source"}
    assert set(WRITABLE_FIELDS) | set(REFUSED_FIELDS) == set(props)
    assert set(WRITABLE_FIELDS).isdisjoint(read_only)
    assert set(ConversationEdit.model_fields) == set(SCHEMAS["ConversationEdit"]["properties"])


def test_every_seeded_conversation_is_a_valid_conversation_edit(sandbox):
    for cid in sandbox.conversation_ids():
        EDIT_RESPONSE.validate(sandbox.conversation(cid))


@pytest.mark.parametrize(
    "payload",
    [{"status": "CLOSED"}, {"tags": [{"name": "vip"}, {"name": "x" * 100}]}, {"assigned": [{"id": 1}, {"id": 2}]},
     {"assigned_team": 3, "channel": None}, {"channel": 2, "tags": [], "assigned": []},
     {"status": "IN_PROGRESS", "tags": [{"name": "renewal"}], "assigned": [{"id": 4}], "assigned_team": 1, "channel": 1}],
)
def test_requests_and_responses_match_the_seed(sandbox, payload):
    cid = sandbox.conversation_ids()[0]
    answer = HilosHook().update_conversation(cid, payload)
    (sent,) = [r for r in sandbox.requests() if r["method"] == "PATCH"]
    PATCH_REQUEST.validate(sent["body"])  # no read-only field, right types
    assert sent["body"] == payload
    assert sent["path"] == CONVERSATION_UPDATE_PATH.format(id=cid)
    EDIT_RESPONSE.validate(answer)
    ConversationEdit.model_validate(answer)


def test_request_validator_rejects_read_only_fields():
    with pytest.raises(jsonschema.ValidationError):
        PATCH_REQUEST.validate({"created_on": "2025-01-01T00:00:00Z"})
    with pytest.raises(jsonschema.ValidationError):
        EDIT_RESPONSE.validate({"id": "x"})  # required fields missing


def test_list_answer_is_a_drf_page_of_conversations(sandbox):
    page = HilosHook().list_conversations(page_size=5)
    assert set(page) == {"count", "next", "previous", "results"}
    for row in page["results"]:
        EDIT_RESPONSE.validate(row)
