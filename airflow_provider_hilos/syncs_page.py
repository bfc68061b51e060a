"""The "Hilos syncs" page of the Airflow UI (Airflow 3): every sync task with its recent runs, a chart of the changes
per run so a spike stands out, the keys that failed last and why, and the link to each plan.

It reads what the syncs already keep: each run's record (the ``hilos_sync_run`` XCom every sync pushes beside its
result: the counts, the requests, who approved it, the keys that failed and why, the plan's path; a few hundred
bytes, where a result with its plan summary is kilobytes). It is a FastAPI app the api-server mounts (see
:mod:`airflow_provider_hilos.plugins`), behind Airflow's own authentication: a request without a valid session
cookie or bearer token is refused, and a user sees only the DAGs the auth manager lets them read. Results never hold
the token; the page shows nothing else.

FastAPI is imported here only: the operators and the hook never import this module.
"""

from __future__ import annotations

import html
import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse

from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import get_user

from airflow_provider_hilos.sync.state import sync_name

#: Runs shown per sync.
RUNS_PER_SYNC = 100
#: Failed keys shown per sync (its last run's).
FAILED_SHOWN = 20
#: A run whose changes pass this many times the sync's median is a spike (shown red).
SPIKE_FACTOR = 3.0
RESULT_KEY = "hilos_sync_run"


@dataclass
class SyncRun:
    """One run of a sync, as its result says.

    :param run_id: the DAG run.
    :param at: when its result was written.
    :param result: the run's record (the ``hilos_sync_run`` XCom).
    """

    run_id: str
    at: datetime | None
    result: Mapping[str, Any]

    def number(self, name: str) -> int:
        value = self.result.get(name)
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0

    @property
    def changes(self) -> int:
        """What the run wrote (or, refused or waiting, would have written)."""
        done = sum(self.number(n) for n in ("created", "updated", "deleted"))
        if done or "updated" in self.result:
            return done
        return sum(self.number(n) for n in ("to_create", "to_update", "to_delete"))

    @property
    def outcome(self) -> str:
        """``ok``, ``dry run``, ``waiting``, ``refused`` or ``failed``."""
        if self.result.get("dry_run"):
            return "dry run"
        if self.result.get("awaiting_approval"):
            return "waiting for approval"
        if self.result.get("refused"):
            return "refused"
        return "failed" if self.number("failed") else "ok"


@dataclass
class Sync:
    """One sync task (a DAG, a task, a map index) and its recent runs, newest first."""

    dag_id: str
    task_id: str
    map_index: int
    runs: list[SyncRun] = field(default_factory=list)

    @property
    def name(self) -> str:
        return sync_name(self.dag_id, self.task_id, self.map_index)


def read_syncs(session: Any, dag_ids: set[str] | None, runs_per_sync: int = RUNS_PER_SYNC) -> list[Sync]:
    """Every sync task's recent runs from the metadata database (the ``hilos_sync_run`` XComs), newest first.

    :param dag_ids: the DAGs the user may read (``None``: all).
    """
    from sqlalchemy import select

    from airflow.models.xcom import XComModel

    query = select(
        XComModel.dag_id, XComModel.task_id, XComModel.map_index, XComModel.run_id, XComModel.timestamp, XComModel.value
    ).where(XComModel.key == RESULT_KEY)
    if dag_ids is not None:
        query = query.where(XComModel.dag_id.in_(sorted(dag_ids)))
    query = query.order_by(XComModel.timestamp.desc())
    syncs: dict[tuple[str, str, int], Sync] = {}
    for dag_id, task_id, map_index, run_id, at, value in session.execute(query):
        sync = syncs.setdefault((dag_id, task_id, map_index), Sync(dag_id, task_id, map_index))
        if len(sync.runs) >= runs_per_sync:
            continue
        result = _plain(value)
        if isinstance(result, Mapping):
            sync.runs.append(SyncRun(run_id, at, result))
    return sorted((s for s in syncs.values() if s.runs), key=lambda s: s.name)


def read_record(session: Any, dag_id: str, task_id: str, map_index: int, run_id: str) -> Mapping[str, Any] | None:
    """One run's record (``None``: that run kept none)."""
    from sqlalchemy import select

    from airflow.models.xcom import XComModel

    value = session.execute(
        select(XComModel.value).where(
            XComModel.key == RESULT_KEY,
            XComModel.dag_id == dag_id,
            XComModel.task_id == task_id,
            XComModel.map_index == map_index,
            XComModel.run_id == run_id,
        )
    ).scalar()
    record = _plain(value)
    return record if isinstance(record, Mapping) else None


def _plain(value: Any) -> Any:
    """An XCom value as stored (JSON text, or already decoded)."""
    if isinstance(value, str | bytes):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def chart(runs: Sequence[SyncRun], width: int = 600, height: int = 60) -> str:
    """An inline SVG bar chart of the changes per run (oldest left), spikes (past :data:`SPIKE_FACTOR` times the
    median) red, each bar titled with its run and count."""
    ordered = list(reversed(runs))
    if not ordered:
        return ""
    values = [r.changes for r in ordered]
    top = max(values) or 1
    median = statistics.median(values)
    step = min(width / len(ordered), 14.0)  # a few runs do not make a wall of colour
    bars = []
    for i, (run, value) in enumerate(zip(ordered, values, strict=True)):
        h = max(1.0, height * value / top) if value else 0.0
        spike = value > SPIKE_FACTOR * max(median, 1)
        bars.append(
            f'<rect x="{i * step:.1f}" y="{height - h:.1f}" width="{max(step - 1, 1):.1f}" height="{h:.1f}" '
            f'class="{"spike" if spike else "bar"}"><title>{_e(run.run_id)}: {value:,} change(s)</title></rect>'
        )
    return (
        f'<svg class="chart" role="img" aria-label="changes per run" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{"".join(bars)}</svg>'
    )


def render(syncs: Sequence[Sync], *, base: str = "") -> str:
    """The page (every value escaped)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Hilos syncs</title><style>",
        "body{font-family:system-ui,sans-serif;margin:1.5em;color:#1f2937}h1{font-size:1.4em}",
        "h2{font-size:1.1em;margin-top:2em}table{border-collapse:collapse;font-size:.85em}",
        "td,th{border-bottom:1px solid #e5e7eb;padding:.25em .6em;text-align:right}td.l,th.l{text-align:left}",
        ".bar{fill:#075e54}.spike{fill:#dc2626}.failed{color:#b91c1c}.muted{color:#6b7280}",
        "</style></head><body>",
        f"<h1>Hilos syncs</h1><p class='muted'>{len(syncs)} sync task(s), the last {RUNS_PER_SYNC} runs of each, "
        "from the records the syncs keep (XCom <code>hilos_sync_run</code>).</p>",
    ]
    if not syncs:
        parts.append("<p>No sync has run yet.</p>")
    for sync in syncs:
        parts.append(_sync_section(sync, base))
    parts.append("</body></html>")
    return "".join(parts)


def _sync_section(sync: Sync, base: str) -> str:
    last = sync.runs[0]
    obj = last.result.get("object", "conversation")
    rows = []
    for run in sync.runs:
        r = run.result
        plan = r.get("plan_path")
        link = (
            f"<a href='{_e(base)}/plan?dag_id={quote(sync.dag_id)}&task_id={quote(sync.task_id)}"
            f"&map_index={sync.map_index}&run_id={quote(run.run_id)}'>plan</a>"
            if plan
            else ""
        )
        cells = [
            f"<td class='l'>{_e(run.run_id)}</td>",
            f"<td class='l'>{_e(run.at.isoformat(timespec='seconds') if run.at else '')}</td>",
            f"<td class='l{' failed' if run.outcome in ('failed', 'refused') else ''}'>{_e(run.outcome)}</td>",
            *(f"<td>{run.number(n):,}</td>" for n in ("created", "updated", "deleted", "unchanged", "failed")),
            f"<td>{run.number('drift_corrected'):,}</td>",
            f"<td>{run.number('read_requests') + run.number('write_requests'):,}</td>",
            f"<td class='l'>{_e(r.get('approved_by') or '')}</td>",
            f"<td class='l'>{link}</td>",
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    failed = list(last.result.get("failed_keys") or [])[:FAILED_SHOWN]
    key_names = ("conversation_id", "phone", "contact_id")
    failed_html = (
        "<p>Failed in the last run:</p><table><tr><th class='l'>key</th><th class='l'>error</th></tr>"
        + "".join(
            f"<tr><td class='l'>{_e(next((f[k] for k in key_names if f.get(k)), f.get('row', '')))}</td>"
            f"<td class='l failed'>{_e(f.get('error') or '')}</td></tr>"
            for f in failed
            if isinstance(f, Mapping)
        )
        + "</table>"
        if failed
        else "<p class='muted'>Nothing failed in the last run.</p>"
    )
    head = "".join(
        f"<th class='{'l' if i < 3 or i > 9 else ''}'>{name}</th>"
        for i, name in enumerate(
            (
                "run",
                "at",
                "outcome",
                "created",
                "updated",
                "deleted",
                "unchanged",
                "failed",
                "drift corrected",
                "requests",
                "approved by",
                "plan",
            )
        )
    )
    return (
        f"<section class='sync' data-sync='{_e(sync.name)}'><h2>{_e(sync.name)} <span class='muted'>({_e(obj)}s, "
        f"{len(sync.runs)} run(s))</span></h2>{chart(sync.runs)}{failed_html}"
        f"<table><tr>{head}</tr>{''.join(rows)}</table></section>"
    )


def _readable_dags(user: Any) -> set[str] | None:
    """The DAG ids the user may read, from Airflow's auth manager."""
    from airflow.api_fastapi.app import get_auth_manager

    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))


def create_app() -> FastAPI:
    """The app the api-server mounts under ``/hilos``: ``/syncs`` (the page) and ``/plan`` (a run's plan file)."""
    app = FastAPI(title="Hilos syncs", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/syncs", response_class=HTMLResponse)
    def syncs_page(request: Request, session: SessionDep, user: Any = Depends(get_user)) -> HTMLResponse:  # noqa: B008
        syncs = read_syncs(session, _readable_dags(user))
        return HTMLResponse(render(syncs, base=str(request.scope.get("root_path", ""))))

    @app.get("/plan", response_class=PlainTextResponse)
    def plan_file(
        dag_id: str,
        task_id: str,
        run_id: str,
        session: SessionDep,
        map_index: int = -1,
        user: Any = Depends(get_user),  # noqa: B008
    ) -> PlainTextResponse:
        if dag_id not in (_readable_dags(user) or set()):
            raise HTTPException(status_code=403, detail="not allowed to read this DAG")
        record = read_record(session, dag_id, task_id, map_index, run_id)
        path = record.get("plan_path") if record else None
        if not path:
            raise HTTPException(status_code=404, detail="this run wrote no plan")
        from airflow_provider_hilos.storage import storage_path

        try:  # only a path a sync recorded in its own result is read
            with storage_path(str(path)).open("r", encoding="utf-8") as handle:
                return PlainTextResponse(handle.read(), media_type="application/x-ndjson")
        except OSError:
            raise HTTPException(status_code=404, detail="the plan file is gone") from None

    return app


def runs_of(syncs: Iterable[Sync]) -> int:
    """How many runs the page shows."""
    return sum(len(s.runs) for s in syncs)
