"""The approval request a person reads (Markdown, with every warehouse value shown as typed, never rendered), the
answer read back, what was approved kept beside the state, and the request made the way Airflow's own
Human-in-the-loop operator makes it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from markdown_it import MarkdownIt

from airflow_provider_hilos.sync import approval as approval_module
from airflow_provider_hilos.sync.approval import (
    APPROVE,
    REJECT,
    approval_body,
    approval_path,
    approved_writes,
    can_ask,
    forget_approved,
    keep_approved,
    md,
    read_answer,
    request_approval,
)
from airflow_provider_hilos.sync.diff import Action, FieldChange, PlanEntry
from airflow_provider_hilos.sync.guard import Decision, Verdict
from airflow_provider_hilos.sync.plan import PlanSummary
from tests.conftest import TEST_TOKEN

RENDER = MarkdownIt("commonmark", {"html": True}).enable("table")


def summary_with(tags: list[tuple[tuple[str, ...], tuple[str, ...]]]) -> PlanSummary:
    summary = PlanSummary(shown_limit=20)
    for i, (before, after) in enumerate(tags):
        key = f"00000000-0000-4000-8000-{i:012d}"
        change = FieldChange("tags", before, after)
        summary.add(PlanEntry(key, Action.UPDATE, changes=(change,), row=i + 1))
    summary.add(PlanEntry("00000000-0000-4000-8000-999999999999", Action.UNCHANGED, row=99))
    return summary


def body_for(summary: PlanSummary, **kwargs) -> str:
    counts = {"desired": 300, "unchanged": 60, "to_update": 240, "drift_found": 12, "not_found": 1, "invalid": 0}
    defaults = {
        "sync": "crm.sync_conversations",
        "noun": "conversation",
        "key_field": "conversation_id",
        "counts": counts,
        "summary": summary,
        "costs": {"hilos": {"reads": 3, "writes": 240}, "last_sync": {"reads": 0, "writes": 250}},
        "verdict": Verdict(Decision.WAIT, ("240 changes > max_changes=100",), "240 changes > max_changes=100"),
        "digest": "0123456789abcdef0123",
        "limits": "max_changes=100",
        "plan_path": "/data/plans/sync.plan.jsonl",
        "timeout": timedelta(hours=24),
    }
    return approval_body(**{**defaults, **kwargs})


def test_the_body_gives_what_a_person_decides_from():
    body = body_for(summary_with([((), ("vip",))] * 3 + [(("vip",), ("renewal",))]))
    assert "plans to write **240** change(s) to conversations" in body and "limits: max\\_changes\\=100" in body
    for row in ("| desired rows | 300 |", "| to update | 240 |", "| hand edits put back | 12 |", "| not found | 1 |"):
        assert row in body
    assert "| tags | 4 | \\+vip 3, \\+renewal 1, \\-vip 1 |" in body
    assert "| 00000000\\-0000\\-4000\\-8000\\-000000000000 | update | tags | *empty* | vip |" in body
    assert "`compare_with=hilos`: 3 read(s), 240 write(s)" in body and "`compare_with=last_sync`: 0 read(s)" in body
    assert "Plan file: `/data/plans/sync.plan.jsonl`" in body and "Plan digest: `0123456789abcdef0123`" in body
    assert "Without an answer within 1 day(s), nothing is sent" in body
    html = RENDER.render(body)
    assert "<table>" in html and "<strong>240</strong>" in html


@pytest.mark.parametrize("name", ["**x**", "<script>alert(1)</script>", "[click](http://evil)", "a|b", "`code`"])
def test_a_value_from_the_warehouse_is_shown_never_rendered(name):
    body = body_for(summary_with([((), (name,))]), sync=f"dag.{name}")
    html = RENDER.render(body)
    assert "<script>" not in html and "<strong>x</strong>" not in html and "<a href" not in html
    assert "<code>code</code>" not in html
    shown = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    assert shown in html  # the text as typed
    if name == "a|b":  # a cell break inside a value would shift the table's columns
        assert html.count("<td>a|b</td>") == 1


def test_md_escapes_every_ascii_punctuation_and_line_breaks():
    assert md("a*b_c\nd") == "a\\*b\\_c d" and md("plain text 42") == "plain text 42"
    assert RENDER.renderInline(md("\\*not emphasis\\*")) == "\\*not emphasis\\*"


def test_answers_read_back():
    at = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
    approved = read_answer(
        {
            "chosen_options": [APPROVE],
            "params_input": {},
            "responded_at": at,
            "responded_by_user": {"id": "7", "name": "ana"},
        }
    )
    assert (
        approved.approved
        and approved.by == "ana"
        and approved.at == at.isoformat()
        and "approved by ana" in approved.why
    )
    rejected = read_answer({"chosen_options": [REJECT], "responded_by_user": {"id": "8", "name": ""}})
    assert not rejected.approved and rejected.by == "8" and "rejected by 8" in rejected.why and not rejected.timed_out
    timeout = read_answer({"error": "no answer", "error_type": "timeout"}, timedelta(hours=2))
    assert not timeout.approved and timeout.timed_out and "within approval_timeout (2 hour(s))" in timeout.why
    broken = read_answer({"error": "boom", "error_type": "unknown"})
    assert not broken.approved and "failed (boom)" in broken.why


def test_what_was_approved_is_kept_atomically_and_read_back(tmp_path):
    rows = [(f"k{i}", f"{i:032x}") for i in range(2500)]
    path = keep_approved(tmp_path, "0123456789abcdef0123", iter(rows))
    assert path == approval_path(tmp_path, "0123456789abcdef0123") and path.exists()
    assert list(approved_writes(path)) == rows
    assert [p.name for p in (tmp_path / "approvals").iterdir()] == ["0123456789abcdef0123.tsv"]  # no temporary left
    forget_approved(path)
    assert not path.exists()
    forget_approved(path)  # twice is fine


class _TI:
    def __init__(self) -> None:
        self.id = uuid.uuid4()


@pytest.mark.skipif(not can_ask(), reason="Airflow's Human-in-the-loop needs Airflow 3.1+")
def test_the_request_is_written_and_the_task_waits_as_airflows_own_hitl_tasks_do(monkeypatch):
    written = []
    monkeypatch.setattr("airflow.sdk.execution_time.hitl.upsert_hitl_detail", lambda **kw: written.append(kw))
    ti = _TI()
    body = body_for(summary_with([((), ("vip",))]))
    if approval_module.parks():
        from airflow.sdk.exceptions import TaskAwaitingInput

        with pytest.raises(TaskAwaitingInput) as waits:
            request_approval(
                object(),
                {"task_instance": ti},
                subject="Approve it",
                body=body,
                timeout=timedelta(hours=1),
                method_name="execute_approval",
                kwargs={"digest": "0123456789abcdef0123"},
            )
        assert waits.value.method_name == "execute_approval" and waits.value.timeout == timedelta(hours=1)
        assert waits.value.kwargs == {"digest": "0123456789abcdef0123"}
    (request,) = written
    assert request["ti_id"] == ti.id and request["options"] == [APPROVE, REJECT] and request["defaults"] is None
    assert request["subject"] == "Approve it" and request["body"] == body and not request["multiple"]
    assert TEST_TOKEN not in repr(request)


@pytest.mark.skipif(not can_ask(), reason="Airflow's Human-in-the-loop needs Airflow 3.1+")
def test_before_airflow_3_3_the_task_defers_to_airflows_hitl_trigger(monkeypatch):
    written = []
    monkeypatch.setattr("airflow.sdk.execution_time.hitl.upsert_hitl_detail", lambda **kw: written.append(kw))
    monkeypatch.setattr(approval_module, "parks", lambda: False)

    class Deferred(Exception):
        pass

    class Task:
        def defer(self, **kwargs):
            self.deferred = kwargs
            raise Deferred

    task, ti = Task(), _TI()
    with pytest.raises(Deferred):
        request_approval(
            task,
            {"task_instance": ti},
            subject="Approve it",
            body="body",
            timeout=timedelta(hours=2),
            method_name="execute_approval",
            kwargs={"digest": "0123456789abcdef0123"},
        )
    trigger = task.deferred["trigger"]
    assert type(trigger).__name__ == "HITLTrigger" and task.deferred["method_name"] == "execute_approval"
    assert task.deferred["kwargs"] == {"digest": "0123456789abcdef0123"} and len(written) == 1
    classpath, trigger_kwargs = trigger.serialize()
    assert classpath.endswith("HITLTrigger") and trigger_kwargs["options"] == [APPROVE, REJECT]
    assert trigger_kwargs["timeout_datetime"] is not None and TEST_TOKEN not in repr(trigger_kwargs)


def test_the_body_links_the_plan_where_the_ui_serves_it():
    body = body_for(
        summary_with([((), ("vip",))]), plan_link="/hilos/plan?dag_id=crm&task_id=sync&run_id=r1&map_index=-1"
    )
    assert "([open it](/hilos/plan?dag_id=crm&task_id=sync&run_id=r1&map_index=-1))" in body
    assert (
        '<a href="/hilos/plan?dag_id=crm&amp;task_id=sync&amp;run_id=r1&amp;map_index=-1">open it</a>'
        in RENDER.render(body)
    )
