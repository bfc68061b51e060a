"""ConversationUpdateOperator: "Partially update a Conversation" as a step of a DAG."""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.links import CONVERSATION_URL_XCOM_KEY, HilosConversationLink
from airflow_provider_hilos.models import show, validate_update

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The explicit fields that may be given as operator arguments, overriding the payload's keys.
OVERRIDE_FIELDS = ("status", "tags", "assigned", "assigned_team", "channel")


def parse_payload(payload: Any, *, field: str = "payload") -> dict[str, Any]:
    """Return the payload as a dict: a mapping as is, a rendered template string parsed.

    A string may be JSON (``{"status": "CLOSED"}``) or, as ``{{ ti.xcom_pull(...) }}`` renders a dict
    without ``render_template_as_native_obj``, a Python literal (``{'status': 'CLOSED'}``).

    :param payload: a dict, a JSON object string, or ``None`` (an empty payload).
    :param field: the argument name used in error messages.
    :raises HilosValidationError: when it is neither a dict nor a JSON object string.
    """
    if payload is None:
        return {}
    if isinstance(payload, Mapping):
        return dict(payload)
    if isinstance(payload, (str, bytes)):
        text = payload.decode() if isinstance(payload, bytes) else payload
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            # "{{ ti.xcom_pull(...) }}" without render_template_as_native_obj renders a dict as its
            # Python repr ({'status': 'CLOSED'}); read that too, as a literal only (nothing is executed).
            try:
                parsed = ast.literal_eval(text.strip())
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                raise HilosValidationError(
                    [(field, f"is a string but not a JSON object ({exc.msg} at character {exc.pos}): {show(text)}. "
                      "Pass a dict, an XComArg (upstream_task.output), or a template that renders a JSON "
                      "object, e.g. {{ ti.xcom_pull(task_ids='make_payload') | tojson }}")],
                    "Invalid Hilos payload",
                ) from None
        if not isinstance(parsed, dict):
            raise HilosValidationError(
                [(field, f"rendered to JSON {type(parsed).__name__} {show(parsed)}; it must be a JSON object "
                  'of fields to update, e.g. {"status": "CLOSED"}')],
                "Invalid Hilos payload",
            )
        return parsed
    raise HilosValidationError(
        [(field, f"must be a dict of fields to update (or a JSON object string), got {type(payload).__name__} "
          f"{show(payload)}")],
        "Invalid Hilos payload",
    )


class ConversationUpdateOperator(BaseOperator):
    """Partially update one Hilos conversation (``PATCH .../conversation/{id}/update``).

    Only the fields given are changed. The payload is validated completely before anything is sent;
    a bad payload fails the task at once (no Airflow retry), naming every bad field.

    :param conversation_id: the conversation's UUID (templated).
    :param payload: the fields to change, e.g. ``{"status": "CLOSED", "tags": [{"name": "vip"}]}``:
        a dict, an ``XComArg`` (``upstream.output``), or a template; a template rendered to a string
        (``render_template_as_native_obj=False``) must be a JSON object and is parsed (templated).
    :param status: the new status (``CREATED``, ``FLOW``, ``NEW``, ``IN_PROGRESS``, ``RESOLVED``,
        ``CLOSED``); overrides ``payload["status"]`` (templated).
    :param tags: tags to set, e.g. ``[{"name": "vip"}]``; overrides ``payload["tags"]`` (templated).
    :param assigned: users to assign, e.g. ``[{"id": 12}]``; overrides ``payload["assigned"]`` (templated).
    :param assigned_team: team id to assign; overrides ``payload["assigned_team"]`` (templated).
    :param channel: channel id; overrides ``payload["channel"]`` (templated). ``None`` means
        "not given": to clear the channel, put ``"channel": None`` in the payload.
    :param hilos_conn_id: the Airflow connection of type ``hilos`` (templated).
    :return: the API's ``ConversationEdit`` (the whole conversation after the update), pushed to XCom.
    """

    template_fields: Sequence[str] = ("conversation_id", "payload", *OVERRIDE_FIELDS, "hilos_conn_id")
    template_fields_renderers = {"payload": "json", "tags": "json", "assigned": "json"}
    operator_extra_links = (HilosConversationLink(),)
    ui_color = "#25d366"

    def __init__(
        self,
        *,
        conversation_id: str,
        payload: dict[str, Any] | str | None = None,
        status: str | None = None,
        tags: list[dict[str, Any]] | None = None,
        assigned: list[dict[str, Any]] | None = None,
        assigned_team: int | None = None,
        channel: int | None = None,
        hilos_conn_id: str = HilosHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.conversation_id = conversation_id
        self.payload = payload
        self.status = status
        self.tags = tags
        self.assigned = assigned
        self.assigned_team = assigned_team
        self.channel = channel
        self.hilos_conn_id = hilos_conn_id

    def build_payload(self) -> dict[str, Any]:
        """The payload after rendering: parsed if it is a JSON string, with explicit fields on top."""
        merged = parse_payload(self.payload)
        for field in OVERRIDE_FIELDS:
            value = getattr(self, field)
            if value is not None:
                merged[field] = value
        return merged

    def execute(self, context: Context) -> dict[str, Any]:
        update = validate_update(self.conversation_id, self.build_payload())
        hook = HilosHook(self.hilos_conn_id)
        with hook:
            context["ti"].xcom_push(key=CONVERSATION_URL_XCOM_KEY, value=hook.conversation_web_url(update.conversation_id))
            self.log.info(
                "Updating Hilos conversation %s: %s", update.conversation_id, json.dumps(update.body, sort_keys=True)
            )
            result = hook.send_update(update.conversation_id, update.body)
        self.log.info(
            "Hilos conversation %s updated: status=%s, %d tag(s), %d assignee(s)",
            update.conversation_id, result.get("status"), len(result.get("tags") or []),
            len(result.get("assigned") or []),
        )
        return result
