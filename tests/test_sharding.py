"""One change set split over K batch tasks: every row in exactly one shard, one quota shared.

The same K tasks on real Celery workers are in tests/distributed/; here the split itself, the
arguments, four shards running at once against a token-bucket sandbox, and the example DAG.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_hilos.batch import BatchOptions
from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator
from airflow_provider_hilos.rows import rows_from_csv, rows_from_json_lines, rows_in_shard, shard_of, shard_problem
from airflow_provider_hilos.sandbox import HilosSandbox
from tests.conftest import TEST_TOKEN, run_dag, xcom_value
from tests.test_examples import load_example_module

ids = st.uuids().map(str) | st.text(min_size=1, max_size=12) | st.integers(0, 10**9)
rows = st.lists(
    st.fixed_dictionaries({"conversation_id": ids, "status": st.sampled_from(["CLOSED", "NEW"])})
    | st.none()
    | st.text(max_size=5),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(rows=rows, count=st.integers(1, 7))
def test_every_row_lands_in_exactly_one_shard_with_its_row_number(rows, count):
    source = lambda: enumerate(rows, start=1)  # noqa: E731
    seen = [pair for index in range(count) for pair in rows_in_shard(source, index, count)()]
    assert sorted(n for n, _ in seen) == list(range(1, len(rows) + 1))
    assert all(rows[n - 1] is row for n, row in seen)


@settings(max_examples=100, deadline=None)
@given(cid=st.uuids(), count=st.integers(1, 16))
def test_one_conversation_is_one_shard_however_its_id_is_written(cid, count):
    forms = [str(cid), str(cid).upper(), f"  {cid} ", cid.hex]
    assert len({shard_of({"conversation_id": form}, count) for form in forms}) == 1


def test_the_split_is_stable_across_processes_and_even():
    """A stable hash (not Python's salted hash()): these values are fixed, so every worker computes them."""
    assert [shard_of({"conversation_id": f"00000000-0000-4000-8000-{i:012d}"}, 4) for i in range(8)] == [
        shard_of({"conversation_id": f"00000000-0000-4000-8000-{i:012d}"}, 4) for i in range(8)
    ]
    assert shard_of({"conversation_id": "6513270e-269e-4d37-b2a7-4de452e6b438"}, 4) == 3
    sizes = Counter(shard_of({"conversation_id": str(uuid.UUID(int=i * 7919 + 1))}, 4) for i in range(4000))
    assert min(sizes.values()) > 900, sizes  # 1,000 each +- 10 %


def test_a_repeated_conversation_is_refused_by_its_shard_before_anything_is_sent(sandbox):
    """Both rows of a conversation land in one shard, whose batch refuses the repeat as an unsharded one does."""
    ids = sandbox.conversation_ids()[:12]
    rows = [{"conversation_id": cid, "status": "CLOSED"} for cid in ids]
    rows.append({"conversation_id": ids[4], "status": "NEW"})
    source = lambda: enumerate(rows, start=1)  # noqa: E731
    home = shard_of(rows[4], 3)
    assert shard_of(rows[-1], 3) == home
    with HilosHook() as hook:
        with pytest.raises(HilosValidationError, match="is already updated by row 5"):
            hook.update_conversations(rows_in_shard(source, home, 3))
        assert sandbox.requests() == []
        others = [i for i in range(3) if i != home]
        sent = sum(hook.update_conversations(rows_in_shard(source, i, 3)).updated for i in others)
    assert sent == sum(shard_of(r, 3) != home for r in rows)


@pytest.mark.parametrize("row", [None, "text", {"conversation_id": None}, {"conversation_id": True}, {}])
def test_rows_without_a_usable_id_go_to_shard_zero_so_they_are_reported_once(row):
    assert shard_of(row, 5) == 0


@pytest.mark.parametrize(
    ("index", "count", "message"),
    [
        (0, None, "give shard_index and shard_count together"),
        (None, 4, "give shard_index and shard_count together"),
        (4, 4, "shard_index=4: must be from 0 to shard_count - 1 (3)"),
        (-1, 4, "shard_index=-1: must be from 0"),
        (0, 0, "shard_count=0: must be at least 1"),
        (True, 4, "shard_index=True"),
        ("1", 4, "shard_index='1'"),
    ],
)
def test_bad_shard_arguments_are_refused_when_the_dag_is_parsed(index, count, message):
    assert message in (shard_problem(index, count) or "")
    with pytest.raises(ValueError, match="'b'") as info:
        ConversationBatchUpdateOperator(task_id="b", updates=[], shard_index=index, shard_count=count)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shards": 0}, "shards=0: must be an integer, at least 1"),
        ({"shards": True}, "shards=True"),
        ({"shards": 2, "max_requests_per_second": 5}, "sets max_requests_per_second itself"),
        ({"shards": 2, "shard_index": 1}, "sets shard_index itself"),
        ({"shards": 2, "total_requests_per_second": 0}, "total_requests_per_second=0 must be a number greater than 0"),
    ],
)
def test_sharded_refuses_what_it_cannot_honour(kwargs, message):
    with pytest.raises(ValueError) as info:
        ConversationBatchUpdateOperator.sharded(task_id="s", updates_path="x.jsonl", **kwargs)
    assert message in str(info.value)


def test_sharded_maps_one_task_per_shard_at_a_share_of_the_quota():
    from airflow.providers.common.compat.sdk import DAG

    with DAG("sharded_shape", schedule=None):
        mapped = ConversationBatchUpdateOperator.sharded(
            task_id="s", shards=4, total_requests_per_second=100, updates_path="x.jsonl", pool="hilos_api"
        )
    op = mapped
    assert op.partial_kwargs["shard_count"] == 4
    assert op.partial_kwargs["max_requests_per_second"] == 25.0
    assert op.partial_kwargs["pool"] == "hilos_api"
    assert op.expand_input.value == {"shard_index": [0, 1, 2, 3]}
    assert op.partial_kwargs["map_index_template"] == "shard {{ task.shard_index }} of 4"


def test_four_shards_at_once_share_one_quota_and_meet_no_429(tmp_path, monkeypatch):
    """Four shards running at once (threads here, workers in production) against a token bucket of
    exactly the quota: every row lands once, no one-second window exceeds the quota by more than 10 %."""
    quota, shards = 120.0, 4
    with HilosSandbox(
        conversations=600,
        seed=5,
        token=TEST_TOKEN,
        request_log_limit=10_000,
        faults={"rate_limit_per_second": quota, "rate_limit_burst": int(quota // 4)},  # 250 ms of slack
    ) as sb:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sb.connection_json())
        changes = tmp_path / "changes.jsonl"
        intended = {cid: {"status": "RESOLVED", "tags": ["wave-1"]} for cid in sb.conversation_ids()}
        changes.write_text("".join(json.dumps({"conversation_id": c, **p}) + "\n" for c, p in intended.items()))
        results: dict[int, dict] = {}

        def run(index: int) -> None:
            """What each shard task's execute does (the operator path runs in the example DAG below; Airflow
            2 does not let an operator's execute run outside the thread that built it)."""
            source = rows_in_shard(rows_from_json_lines(changes.open), index, shards)
            options = BatchOptions(max_requests_per_second=quota / shards, max_concurrency=8)
            with HilosHook() as hook:
                results[index] = hook.update_conversations(source, options).to_dict()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(shards)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        patches = [r for r in sb.requests() if r["method"] == "PATCH"]
        assert sorted(results) == [0, 1, 2, 3]
        assert sum(r["updated"] for r in results.values()) == 600
        assert [r["total"] for _, r in sorted(results.items())] == [
            sum(1 for _ in rows_in_shard(rows_from_json_lines(changes.open), i, shards)()) for i in range(shards)
        ]
        assert Counter(r["status"] for r in patches) == {200: 600}  # no 429, nothing sent twice
        per_second = Counter(int(r["time"]) for r in patches)
        assert max(per_second.values()) <= quota * 1.1, per_second
        assert all(sb.mismatches(cid, payload) == [] for cid, payload in intended.items())


@pytest.mark.usefixtures("airflow_db")
def test_the_sharded_example_applies_the_change_set_once(monkeypatch, tmp_path):
    module = load_example_module("hilos_crm_sync_sharded")
    with HilosSandbox(conversations=40, seed=7, token=TEST_TOKEN) as sb:
        monkeypatch.setenv("AIRFLOW_CONN_HILOS_DEFAULT", sb.connection_json())
        # the shipped change set is CSV: read it the way the operator does
        rows = [row for _, row in rows_from_csv(lambda: module.CHANGES_FILE.open(newline=""))()]
        assert len(rows) == 10
        dag_run = run_dag("hilos_crm_sync_sharded", {"checkpoint_path": str(tmp_path)})
        assert dag_run.state == "success"
        summary = xcom_value(dag_run, "summarize")
        assert (summary["shards"], summary["total"], summary["updated"]) == (module.SHARDS, 10, 10)
        named = sorted((ti.map_index, ti.rendered_map_index) for ti in dag_run.get_task_instances())
        assert named[1:] == [(i, f"shard {i} of {module.SHARDS}") for i in range(module.SHARDS)]  # after summarize
        per_shard = [xcom_value(dag_run, "sync_shard", map_index=i)["total"] for i in range(module.SHARDS)]
        assert per_shard == [sum(shard_of(r, module.SHARDS) == i for r in rows) for i in range(module.SHARDS)]
        for row in rows:
            fields = {k: v for k, v in row.items() if k != "conversation_id"}
            assert sb.mismatches(row["conversation_id"], fields) == [], row
        assert len([r for r in sb.requests() if r["method"] == "PATCH"]) == 10
