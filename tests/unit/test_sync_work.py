"""The run's work database: rows on disk joined by key (desired, listed, previous, plan, outcome), so a run's memory
does not grow with the account; removed when the run ends."""

from __future__ import annotations

import os

from airflow_provider_hilos.contacts import ABSENT
from airflow_provider_hilos.conversations import UNKNOWN
from airflow_provider_hilos.sync.work import WorkStore, pack, unpack


def test_fields_survive_the_round_trip_with_unknown_and_absent_kept_apart():
    fields = {"tags": ("a", "b"), "status": None, "meta.plan": ABSENT, "email": UNKNOWN, "assigned": (1, 2)}
    back = unpack(pack(fields))
    assert back == fields and back["meta.plan"] is ABSENT and back["email"] is UNKNOWN
    assert pack(None) is None and unpack(None) is None


def test_keys_in_several_rows_are_found_and_left_out_of_the_plan(tmp_path):
    with WorkStore(str(tmp_path)) as work:
        work.add_desired([(1, "a", {"x": "1"}), (2, "b", {}), (3, "a", {"x": "2"}), (4, "c", {"x": "3"})])
        assert work.finish_desired() == [("a", [1, 3])]
        assert work.desired_count() == 2 and work.managed_field_count() == 1
        assert [k for _, k, *_ in work.to_plan()] == ["b", "c"]


def test_the_listing_and_the_last_snapshot_are_joined_to_each_desired_row(tmp_path):
    with WorkStore(str(tmp_path)) as work:
        work.add_desired([(1, "a", {"x": "1"}), (2, "b", {"x": "2"})])
        work.finish_desired()
        assert work.add_previous([("a", "id-a", {"x": "0"}, False), ("gone", "id-g", {"x": "9"}, True)]) == 2
        assert work.previous_count() == (2, 1)
        desired, managed, before = work.interesting(["a", "gone", "other"])
        assert (desired, managed, before) == ({"a"}, {"a", "gone"}, set())
        work.add_listed([("a", "id-a", {"x": "0"}), ("other", "id-o", None)])
        work.add_listed([("a", "id-a2", {"x": "5"})])  # a later copy wins
        assert work.interesting(["a"])[2] == {"a"} and work.listed_count() == 2
        assert work.unlisted_desired() == {"b"} and work.unlisted_count() == 1
        plan = {k: (oid, current, previous, failed) for _, k, _, oid, current, previous, _, failed in work.to_plan()}
        assert plan["a"] == ("id-a2", {"x": "5"}, {"x": "0"}, False) and plan["b"] == (None, None, None, False)
        assert [(k, oid) for k, oid, _, _ in work.managed_not_desired()] == [("gone", None)]
        assert work.managed_count() == 2


def test_the_plan_its_writes_and_the_outcomes(tmp_path):
    with WorkStore(str(tmp_path)) as work:
        work.add_desired([(1, "a", {"x": "1"}), (2, "b", {"x": "2"})])
        work.finish_desired()
        work.add_plan(
            [("b", 2, "update", True, '{"b": 1}', ("w", "b"), "h1"), ("a", 1, "unchanged", False, None, None, None)]
        )
        assert list(work.writes()) == [(2, "b", ("w", "b"))] and work.write_count() == 1
        assert [k for k, _, _ in work.entries()] == ["b"] and [k for k, _, _ in work.entries(unchanged=True)] == [
            "a",
            "b",
        ]
        assert work.actions() == {"update": 1, "unchanged": 1}
        work.add_outcomes([("b", "updated", None)])
        assert work.outcome_counts() == {"updated": 1} and work.drift_landed(["updated"]) == 1
        assert work.outcomes() == {"b": ("updated", None)}
        snapshot = {k: (action, outcome) for k, _, action, outcome, *_ in work.for_snapshot()}
        assert snapshot == {"a": ("unchanged", None), "b": ("update", "updated")}


def test_the_database_is_on_disk_and_removed_when_the_run_ends(tmp_path):
    work = WorkStore(str(tmp_path))
    work.add_desired([(n, f"k{n}", {"x": str(n)}) for n in range(5000)])
    assert os.path.exists(work.path) and work.size_on_disk() > 0
    work.close()
    assert not os.path.exists(work.folder) and os.listdir(tmp_path) == []
