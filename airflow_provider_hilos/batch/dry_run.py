"""The dry run of every update path: validate, resolve the connection, say exactly what would be sent, send nothing.

The single update and the batch both plan through :func:`dry_run` (the single one is a batch of one), so they
validate, skip and describe requests alike.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from airflow_provider_hilos.batch.options import BatchOptions
from airflow_provider_hilos.batch.pipeline import ItemKind, Pipeline
from airflow_provider_hilos.batch.verdict import validation_verdict
from airflow_provider_hilos.transport import Log

if TYPE_CHECKING:
    from airflow_provider_hilos.checkpoint import Checkpoint
    from airflow_provider_hilos.hooks.hilos import HilosHook


def dry_run(
    hook: HilosHook,
    pipeline: Pipeline,
    options: BatchOptions | None = None,
    *,
    checkpoint: Checkpoint | None = None,
    shown: int = 20,
    log: Log | None = None,
    single: bool = False,
) -> dict[str, Any]:
    """Plan the requests of ``pipeline``'s rows without sending any.

    :param hook: the hook whose connection the requests would use (resolved and checked: a bad connection fails).
    :param pipeline: the rows.
    :param options: ``skip_invalid_rows`` and ``max_invalid_ratio`` decide whether invalid rows refuse the batch,
        as in a real run.
    :param checkpoint: rows an earlier try applied are counted as such, not planned.
    :param shown: how many planned requests are logged in full and returned.
    :param log: where the plan is logged (the hook's by default).
    :param single: log the one request as a single update does (one line), not as a batch.
    :return: ``{"dry_run": True, "total", "to_send", "skipped", "already_applied", "method", "url",
        "requests": [the first planned requests: row, method, url, body]}``.
    :raises HilosValidationError: invalid rows the options do not allow.
    """
    options = options or BatchOptions()
    log = log or hook.log
    if refusal := validation_verdict(pipeline.survey(), options):
        raise refusal
    applied = checkpoint.applied() if checkpoint is not None else {}
    counts = dict.fromkeys(ItemKind, 0)
    planned: list[dict[str, Any]] = []
    for item in pipeline.items(applied):
        counts[item.kind] += 1
        if item.kind is ItemKind.SEND and len(planned) < shown:
            assert item.update is not None
            planned.append({"row": item.number, **hook.planned_update(item.update)})
    settings = hook.settings
    url = settings.url(settings.api_family.update_path("{id}"))
    total, to_send = sum(counts.values()), counts[ItemKind.SEND]
    if single:
        for request in planned:
            log.info(
                "Dry run, nothing sent: would send %s %s with body %s",
                request["method"],
                request["url"],
                json.dumps(request["body"], sort_keys=True),
            )
    else:
        log.info(
            "Hilos batch dry run, nothing sent: %d row(s), %d would be sent as PATCH %s, %d invalid "
            "(skipped), %d already applied by an earlier try",
            total,
            to_send,
            url,
            counts[ItemKind.INVALID],
            counts[ItemKind.ALREADY_APPLIED],
        )
        for request in planned:
            log.info(
                "Dry run: row %d: %s %s %s",
                request["row"],
                request["method"],
                request["url"],
                json.dumps(request["body"], sort_keys=True),
            )
        if to_send > len(planned):
            log.info("Dry run: ... and %d more request(s)", to_send - len(planned))
    return {
        "dry_run": True,
        "total": total,
        "to_send": to_send,
        "skipped": counts[ItemKind.INVALID],
        "already_applied": counts[ItemKind.ALREADY_APPLIED],
        "method": "PATCH",
        "url": url,
        "requests": planned,
    }
