"""The row pipeline: read, validate, de-duplicate, skip; raw rows read twice, validated updates once; shards."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_hilos.batch import BatchOptions
from airflow_provider_hilos.batch.engine import BatchEngine
from airflow_provider_hilos.batch.pipeline import ItemKind, RowPipeline, UpdatePipeline, pipeline_for
from airflow_provider_hilos.batch.verdict import validation_verdict
from airflow_provider_hilos.checkpoint import fingerprint
from airflow_provider_hilos.exceptions import (
    HilosValidationError,
)
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.inputs import rows_from_json_lines
from airflow_provider_hilos.rows import shard_of
from airflow_provider_hilos.schemas import validate_update
from tests.helpers import StubHook, fast_hook, ids

id_values = st.uuids().map(str) | st.text(min_size=1, max_size=12) | st.integers(0, 10**9)

rows = st.lists(
    st.fixed_dictionaries({"conversation_id": id_values, "status": st.sampled_from(["CLOSED", "NEW"])})
    | st.none()
    | st.text(max_size=5),
    max_size=40,
)


def test_invalid_rows_are_refused_together_before_anything_is_sent():
    sender = StubHook()
    rows = [{"conversation_id": cid, "status": "CLOSED"} for cid in ids(5)] + [{"conversation_id": "x"}]
    with pytest.raises(HilosValidationError, match=r"1 of 6 row\(s\) are invalid and nothing was sent"):
        BatchEngine(sender, BatchOptions()).run(pipeline_for(rows))
    assert not sender.sent


def test_json_lines_rows_keep_their_line_numbers_and_bad_lines_are_named(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_text('{"conversation_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "status": "NEW"}\n\n{oops\n')
    rows = list(rows_from_json_lines(lambda: path.open())())
    assert [n for n, _ in rows] == [1, 3]
    survey = RowPipeline(rows_from_json_lines(lambda: path.open())).survey()
    with pytest.raises(HilosValidationError, match=r"row 3: row: line is not JSON"):
        raise validation_verdict(survey, BatchOptions())


def test_a_conversation_repeated_in_one_batch_is_refused_naming_both_rows(sb):
    cid, other = sb.conversation_ids()[:2]
    rows = [
        {"conversation_id": cid, "status": "NEW"},
        {"conversation_id": other, "status": "NEW"},
        {"conversation_id": cid.upper(), "status": "CLOSED"},
    ]
    with pytest.raises(
        HilosValidationError,
        match=rf"row 3 \(conversation '{cid.upper()}'\): conversation_id: "
        rf"{cid} is already updated by row 1",
    ):
        fast_hook().update_conversations(rows)
    assert sb.requests() == []
    result = fast_hook().update_conversations(rows, skip_invalid_rows=True)
    assert (result.updated, result.skipped) == (2, 1)
    assert sb.conversation(cid)["status"] == "NEW"  # the first row wins, deterministically


@settings(max_examples=150, deadline=None)
@given(rows=rows, count=st.integers(1, 7))
def test_every_row_lands_in_exactly_one_shard_with_its_row_number(rows, count):
    source = lambda: enumerate(rows, start=1)  # noqa: E731
    seen = [
        item.number
        for index in range(count)
        for item in RowPipeline(source, shard_index=index, shard_count=count).items()
        if shard_of(rows[item.number - 1], count) == index
    ]
    assert sorted(seen) == list(range(1, len(rows) + 1))


def test_a_repeated_conversation_is_refused_by_every_shard_before_anything_is_sent(sandbox):
    """Both rows of a conversation land in one shard; every shard refuses the change set, as an unsharded batch
    does (a shard's verdict is the whole batch's)."""
    ids = sandbox.conversation_ids()[:12]
    rows = [{"conversation_id": cid, "status": "CLOSED"} for cid in ids]
    rows.append({"conversation_id": ids[4], "status": "NEW"})
    source = lambda: enumerate(rows, start=1)  # noqa: E731
    assert shard_of(rows[-1], 3) == shard_of(rows[4], 3)
    with HilosHook() as hook:
        for index in range(3):
            with pytest.raises(HilosValidationError, match="is already updated by row 5"):
                hook.update_conversations(RowPipeline(source, shard_index=index, shard_count=3))
    assert sandbox.requests() == []


def test_a_shard_reaches_the_verdict_of_the_whole_batch(sb):
    """Audit 2 point 9: 1 invalid row in 100 with skip_invalid_rows passes unsharded, so it passes in every shard
    (the shard that holds only that row used to fail "every row is invalid")."""
    ids = sb.conversation_ids()[:99]
    rows = [{"conversation_id": cid, "status": "CLOSED"} for cid in ids]
    rows.insert(50, {"conversation_id": ids[0][:-1] + "z", "status": "CLOSED"})  # not a UUID
    source = lambda: enumerate(rows, start=1)  # noqa: E731
    # a shard count whose shard of the invalid row holds no valid row (the case the audit found)
    shards = next(
        k for k in range(2, 500) if all(shard_of(r, k) != shard_of(rows[50], k) for i, r in enumerate(rows) if i != 50)
    )
    with HilosHook() as hook:
        results = [
            hook.update_conversations(
                RowPipeline(source, shard_index=index, shard_count=shards), skip_invalid_rows=True, max_concurrency=2
            )
            for index in range(shards)
        ]
    assert sum(result.updated for result in results) == 99
    assert sum(result.skipped for result in results) == 1


# -- validated updates: read once ----------------------------------------------------------------------------


class OnePass:
    """An iterator of validated updates that refuses to be read twice."""

    def __init__(self, updates):
        self.updates = updates
        self.reads = 0

    def __iter__(self):
        self.reads += 1
        assert self.reads == 1, "the updates were read twice"
        yield from self.updates


def test_validated_updates_are_sent_reading_their_input_once():
    updates = [validate_update(cid, {"status": "RESOLVED"}) for cid in ids(40)]
    source = OnePass(updates)
    hook = StubHook()
    result = BatchEngine(hook, BatchOptions(max_concurrency=4)).run(pipeline_for(iter(source)))
    assert (result.total, result.updated, source.reads) == (40, 40, 1)
    assert set(hook.sent) == {u.conversation_id for u in updates}


def test_the_hook_takes_validated_updates_from_a_generator_as_they_come(sb):
    """A plan (here a generator) goes straight to the engine: no second pass, no list in memory."""
    produced = []

    def plan():
        for cid in sb.conversation_ids()[:25]:
            produced.append(cid)
            yield validate_update(cid, {"status": "CLOSED"})

    with HilosHook() as hook:
        result = hook.update_conversations(plan(), max_concurrency=4)
    assert (result.total, result.updated) == (25, 25) and len(produced) == 25
    assert all(sb.conversation(cid)["status"] == "CLOSED" for cid in produced)


def test_a_repeated_conversation_among_validated_updates_is_skipped_and_named():
    cid, other = ids(2)
    updates = [validate_update(cid, {"status": "NEW"}), validate_update(other, {"status": "NEW"})]
    updates.append(validate_update(cid, {"status": "CLOSED"}))
    items = list(UpdatePipeline(updates).items())
    assert [item.kind for item in items] == [ItemKind.SEND, ItemKind.SEND, ItemKind.INVALID]
    assert items[2].reason == f"conversation_id: {cid} is already updated by update 1"
    result = BatchEngine(StubHook(), BatchOptions(skip_invalid_rows=True)).run(UpdatePipeline(updates))
    assert (result.updated, result.skipped) == (2, 1)


def test_pipeline_for_tells_rows_from_validated_updates():
    update = validate_update(ids(1)[0], {"status": "NEW"})
    assert isinstance(pipeline_for([update]), UpdatePipeline)
    assert isinstance(pipeline_for(iter([update])), UpdatePipeline)
    assert UpdatePipeline([update]).survey().total == 1  # a list says how long it is
    assert isinstance(pipeline_for([{"conversation_id": "x"}]), RowPipeline)
    assert isinstance(pipeline_for(lambda: iter(())), RowPipeline)
    rows = pipeline_for(iter([{"conversation_id": update.conversation_id, "status": "NEW"}]))  # an iterator of rows
    assert [item.kind for item in rows.items()] == [ItemKind.SEND] and rows.survey().total == 1  # held: read twice
    with pytest.raises(TypeError, match="update 2 is a dict, not a ValidatedUpdate"):
        list(UpdatePipeline([update, {"conversation_id": "x"}]).items())  # type: ignore[list-item]


def test_a_conversation_already_applied_with_the_same_body_is_skipped():
    update = validate_update(ids(1)[0], {"status": "NEW"})
    applied = {update.conversation_id: fingerprint(update.conversation_id, update.body)}
    (item,) = UpdatePipeline([update]).items(applied)
    assert item.kind is ItemKind.ALREADY_APPLIED
    changed = {update.conversation_id: fingerprint(update.conversation_id, {"status": "CLOSED"})}
    (item,) = UpdatePipeline([update]).items(changed)
    assert item.kind is ItemKind.SEND  # the same conversation, another body: sent again
