"""Asking a person to approve a sync's plan, through Airflow's own Human-in-the-loop (Airflow 3.1+), and reading
the answer.

The task writes its request (a subject, a Markdown body a person can decide from, the options ``Approve`` and
``Reject``) with Airflow's ``upsert_hitl_detail``, then waits the way Airflow's ``HITLOperator`` waits: parked in
the ``awaiting_input`` state on Airflow 3.3+ (no trigger, no worker slot), deferred to Airflow's ``HITLTrigger``
before that. The answer comes back to the operator's ``execute_approval``.

What was approved is kept beside the sync's state (``approvals/<digest>.tsv``: each approved write's key and
hash), so the run that resumes, on whatever worker, sends those writes and no others.

Every value in the body that comes from the warehouse or from Hilos is escaped: a tag named ``**x**`` or
``<script>`` is shown as typed, never rendered.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider_hilos.storage import AtomicText, StoragePath
from airflow_provider_hilos.sync.guard import Verdict

if TYPE_CHECKING:
    from airflow_provider_hilos.sync.plan import PlanSummary

APPROVE = "Approve"
REJECT = "Reject"
OPTIONS = (APPROVE, REJECT)
#: How many diffs the body shows, and how many transitions per field.
SHOWN_DIFFS = 10
SHOWN_TRANSITIONS = 6
_PUNCTUATION = frozenset(string.punctuation)
_APPROVALS = "approvals"


def can_ask() -> bool:
    """Whether this Airflow has Human-in-the-loop (3.1+): a person can be asked in the UI."""
    try:
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail  # noqa: F401
    except ImportError:
        return False
    return True


def parks() -> bool:
    """Whether a task waiting for input is parked (Airflow 3.3+'s ``awaiting_input``) rather than deferred."""
    try:
        from airflow.sdk.exceptions import TaskAwaitingInput  # noqa: F401
    except ImportError:
        return False
    return True


def md(value: Any) -> str:
    """``value`` as literal Markdown text: every ASCII punctuation character backslash-escaped (CommonMark shows
    it as typed: no emphasis, link, HTML or table cell break can come from it), line breaks as spaces."""
    text = str(value).replace("\r", " ").replace("\n", " ")
    return "".join("\\" + c if c in _PUNCTUATION else c for c in text)


def approval_subject(sync: str, noun: str, changes: int) -> str:
    """``Approve Hilos sync crm.sync_conversations: 240 conversation changes``."""
    return f"Approve Hilos sync {sync}: {changes:,} {noun} change(s)"


def approval_body(
    *,
    sync: str,
    noun: str,
    key_field: str,
    counts: Mapping[str, Any],
    summary: PlanSummary,
    costs: Mapping[str, Mapping[str, Any]],
    verdict: Verdict,
    digest: str,
    limits: str,
    plan_path: str | None,
    timeout: timedelta | None,
    plan_link: str | None = None,
) -> str:
    """The Markdown a person decides from: why it waits, the counts, each field's changes and transitions, the
    first diffs with from → to, what each compare mode would cost, the plan file (``plan_link``: where the UI
    serves it) and the digest."""
    lines = [
        f"**Hilos sync {md(sync)}** plans to write **{_changes(counts):,}** change(s) to {noun}s "
        f"(limits: {md(limits)}).",
        "",
        f"Waits because: {md(verdict.reason)}.",
        "",
        "| what | count |",
        "|---|---:|",
        f"| desired rows | {counts.get('desired', 0):,} |",
        f"| unchanged | {counts.get('unchanged', 0):,} |",
    ]
    if "to_create" in counts:
        lines.append(f"| to create | {counts['to_create']:,} |")
    lines.append(f"| to update | {counts.get('to_update', 0):,} |")
    if "to_delete" in counts:
        lines.append(f"| to delete | {counts['to_delete']:,} |")
    lines += [
        f"| hand edits put back | {counts.get('drift_found', 0):,} |",
        f"| retried from the last run | {counts.get('retried_from_last_run', 0):,} |",
        f"| not found | {counts.get('not_found', 0):,} |",
        f"| invalid | {counts.get('invalid', 0):,} |",
        "",
    ]
    if summary.fields:
        lines += ["**Changes per field**", "", "| field | changes | transitions |", "|---|---:|---|"]
        for name, number in summary.fields.most_common():
            moves = summary.transitions.get(name)
            shown = moves.most_common(SHOWN_TRANSITIONS) if moves else []
            rest = number - sum(n for _, n in shown) if moves else 0
            text = ", ".join(f"{md(what)} {n:,}" for what, n in shown) + (f", {rest:,} other" if rest > 0 else "")
            lines.append(f"| {md(name)} | {number:,} | {text} |")
        lines.append("")
    diffs = [record for record in summary.shown if record.get("changes")][:SHOWN_DIFFS]
    if diffs:
        lines += [
            f"**The first {len(diffs)} change(s)**",
            "",
            f"| {md(key_field)} | action | field | from | to |",
            "|---|---|---|---|---|",
        ]
        for record in diffs:
            for name, change in record["changes"].items():
                lines.append(
                    f"| {md(record.get(key_field, ''))} | {md(record.get('action', ''))} | {md(name)} | "
                    f"{_value(change.get('from'))} | {_value(change.get('to'))} |"
                )
        lines.append("")
    lines += ["**What each compare mode would cost** (requests)", ""]
    for mode, cost in costs.items():
        reads = cost.get("reads")
        reads_text = f"{reads:,}" if isinstance(reads, int) else f"at least {cost.get('reads_at_least', 0):,}"
        writes = cost.get("writes")
        lines.append(f"* `compare_with={mode}`: {reads_text} read(s), {writes if writes is not None else '?'} write(s)")
    lines += [
        "",
        (f"Plan file: `{plan_path}`" + (f" ([open it]({plan_link}))" if plan_link else ""))
        if plan_path
        else "No plan file (give the sync a `plan_path` or `report_path`).",
        "",
        f"Plan digest: `{digest}`",
        "",
        "**Approve** sends exactly these writes: one whose object changed in Hilos or in the warehouse before the "
        "approval is not sent (the next run plans it again). **Reject** sends nothing and fails the task; the state "
        "of the last run is kept as it was."
        + (f" Without an answer within {duration(timeout)}, nothing is sent." if timeout else ""),
    ]
    return "\n".join(lines)


def _changes(counts: Mapping[str, Any]) -> int:
    return int(sum(int(counts.get(name, 0) or 0) for name in ("to_update", "to_create", "to_delete")))


def _value(value: Any) -> str:
    if value is None:
        return "*none*"
    if isinstance(value, list):
        return md(", ".join(map(str, value))) if value else "*empty*"
    return md(value)


def duration(timeout: timedelta) -> str:
    seconds = int(timeout.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400} day(s)"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} hour(s)"
    return f"{seconds // 60} minute(s)" if seconds >= 60 else f"{seconds} s"


def request_approval(
    task: Any,
    context: Any,
    *,
    subject: str,
    body: str,
    timeout: timedelta | None,
    method_name: str,
    kwargs: Mapping[str, Any],
) -> NoReturn:
    """Write the Human-in-the-loop request of this task instance and wait as Airflow's ``HITLOperator`` does:
    parked awaiting input (3.3+), else deferred to ``HITLTrigger``. ``method_name`` gets the answer (``event``) and
    ``kwargs``. No token or secret is in any of it."""
    from airflow.sdk.execution_time.hitl import upsert_hitl_detail

    ti_id = context["task_instance"].id
    upsert_hitl_detail(
        ti_id=ti_id, options=list(OPTIONS), subject=subject, body=body, defaults=None, multiple=False, params={}
    )
    if parks():
        from airflow.sdk.exceptions import TaskAwaitingInput

        raise TaskAwaitingInput(method_name=method_name, kwargs=dict(kwargs), timeout=timeout)
    from airflow.providers.standard.triggers.hitl import HITLTrigger
    from airflow.sdk.timezone import utcnow

    task.defer(
        trigger=HITLTrigger(
            ti_id=ti_id,
            options=list(OPTIONS),
            defaults=None,
            params={},
            multiple=False,
            timeout_datetime=utcnow() + timeout if timeout else None,
        ),
        method_name=method_name,
        kwargs=dict(kwargs),
        timeout=None,
    )
    raise AssertionError("defer() returned")  # pragma: no cover - defer always raises


@dataclass(frozen=True)
class Answer:
    """A person's answer (or its absence).

    :param approved: ``Approve`` was chosen.
    :param by: who answered (the user's name, else id), ``None`` when nobody did.
    :param at: when (ISO 8601), if known.
    :param why: what the answer means, for the log and the error.
    :param timed_out: nobody answered in time.
    """

    approved: bool
    by: str | None
    at: str | None
    why: str
    timed_out: bool = False


def read_answer(event: Mapping[str, Any], timeout: timedelta | None = None) -> Answer:
    """The answer in the event Airflow resumes the task with (a response, or the timeout's error)."""
    if "error" in event:
        kind = event.get("error_type")
        if kind == "timeout":
            waited = f" within approval_timeout ({duration(timeout)})" if timeout else ""
            return Answer(False, None, None, f"nobody answered{waited}", timed_out=True)
        return Answer(False, None, None, f"the approval request failed ({event.get('error')})")
    chosen = list(event.get("chosen_options") or [])
    user = event.get("responded_by_user")
    by = None
    if isinstance(user, Mapping):
        by = str(user.get("name") or user.get("id") or "") or None
    elif user:
        by = str(user)
    at_value = event.get("responded_at")
    at = at_value.isoformat() if isinstance(at_value, datetime) else (str(at_value) if at_value else None)
    if chosen == [APPROVE]:
        return Answer(True, by, at, f"approved by {by or 'an unnamed user'}")
    if event.get("timedout"):
        return Answer(False, by, at, "nobody answered in time", timed_out=True)
    return Answer(False, by, at, f"rejected by {by or 'an unnamed user'}")


# -- what was approved, beside the sync's state ------------------------------------------------------------------


def approval_path(folder: StoragePath, digest: str) -> StoragePath:
    """Where the approved writes of the plan ``digest`` are kept."""
    return folder / _APPROVALS / f"{digest}.tsv"


def keep_approved(folder: StoragePath, digest: str, hashes: Iterable[tuple[str, str]]) -> StoragePath:
    """Write each planned write's ``(key, hash)`` (atomically); the file's path."""
    path = approval_path(folder, digest)
    target = AtomicText(path)
    try:
        handle = target.open()
        handle.write(f"# hilos-sync-approval v1 {digest}\n")
        for key, hashed in hashes:
            handle.write(f"{key}\t{hashed}\n")
        target.commit()
    finally:
        target.abort()
    return path


def approved_writes(path: StoragePath) -> Iterator[tuple[str, str]]:
    """The ``(key, hash)`` pairs kept by :func:`keep_approved`, read a line at a time."""
    with path.open("r", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("#") or not line.strip():
                continue
            key, _, hashed = line.rstrip("\n").partition("\t")
            yield key, hashed


def forget_approved(path: StoragePath) -> None:
    """Remove an approval's file (the run that used it ended, or it was rejected)."""
    try:
        if path.exists():
            path.unlink()
    except OSError:
        pass


def names(values: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` of ``values`` for a message (``a, b, c and 4 more``)."""
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")
