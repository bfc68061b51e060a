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


def test_a_folder_a_killed_run_left_behind_is_removed_by_a_later_run(tmp_path):
    import os
    import subprocess
    import sys
    import time

    from airflow_provider_hilos.sync import work as work_module

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    host = work_module._host()
    left = tmp_path / f"hilos-sync-work-{host}-{dead_pid}-abc123"  # a run killed before its close
    recent = tmp_path / f"hilos-sync-work-{host}-{dead_pid}-def456"  # the same, but touched recently
    alive = tmp_path / f"hilos-sync-work-{host}-{os.getpid()}-ghi789"  # a run still going
    other_host = tmp_path / f"hilos-sync-work-otherhost-{dead_pid}-jkl012"  # another host's (a shared /tmp)
    for folder in (left, recent, alive, other_host):
        folder.mkdir()
        (folder / "work.sqlite").write_bytes(b"x" * 1000)
    old = time.time() - work_module.LEFT_BEHIND_AFTER - 60
    for folder in (left, alive, other_host):
        os.utime(folder, (old, old))
    with WorkStore(str(tmp_path)) as work:
        assert work.swept == [str(left)]
        assert os.path.basename(work.folder).startswith(f"hilos-sync-work-{host}-{os.getpid()}-")
    assert not left.exists() and recent.exists() and alive.exists() and other_host.exists()


def test_a_key_listed_already_as_desired_is_planned_without_its_fields(tmp_path):
    with WorkStore(str(tmp_path)) as work:
        work.add_desired([(1, "a", {"x": "1"}), (2, "b", {"x": "2"}), (3, "c", {"x": "3"})])
        work.finish_desired()
        work.add_previous([("a", "id-a", {"x": "0"}, False), ("b", "id-b", {"x": "2"}, True)])
        desired, previous, before = work.of_interest(["a", "b", "other"])
        assert {k: unpack(f) for k, f in desired.items()} == {"a": {"x": "1"}, "b": {"x": "2"}}
        assert {k: (unpack(f), failed) for k, (f, failed) in previous.items()} == {
            "a": ({"x": "0"}, False),
            "b": ({"x": "2"}, True),
        } and before == set()
        work.add_listed([("a", "id-a", {"x": "1"}, 2), ("b", "id-b", {"x": "9"}, 0), ("other", "id-o", None)])
        rows = {k: (d, oid, cur, prev, same) for _, k, d, oid, cur, prev, _, _, same in work.plan_rows()}
        assert rows["a"] == (None, "id-a", None, None, 2)  # as desired: no fields read again
        assert rows["b"] == ({"x": "2"}, "id-b", {"x": "9"}, {"x": "2"}, 0)
        assert rows["c"] == ({"x": "3"}, None, None, None, 0)
        work.add_listed([("a", "id-a", {"x": "7"}, 0)])  # a later copy decides again
        assert [r[2:6] for r in work.plan_rows() if r[1] == "a"] == [({"x": "1"}, "id-a", {"x": "7"}, {"x": "0"})]
        assert work.of_interest(["a"])[2] == {"a"}
        work.add_plan([("b", 2, "update", False, "{}", None, "h")])  # "a" and "c" have no plan row: unchanged
        assert {k: a for k, _, a, *_ in work.for_snapshot()} == {"a": None, "b": "update", "c": None}  # not yet
        work.planned()
        assert {k: a for k, _, a, *_ in work.for_snapshot()} == {"a": "unchanged", "b": "update", "c": "unchanged"}


def test_an_id_equal_to_its_key_is_kept_once_and_read_back_as_the_key(tmp_path):
    with WorkStore(str(tmp_path)) as work:
        work.add_desired([(1, "k1", {"x": "1"}), (2, "+52155", {"x": "2"})])
        work.finish_desired()
        work.add_previous([("gone", "gone", {"x": "9"}, False)])
        work.add_listed([("k1", "k1", {"x": "0"}), ("+52155", "c-uuid", {"x": "2"}), ("gone", "gone", {"x": "9"})])
        stored = dict(work.db.execute("SELECT k, id FROM listed"))
        assert stored == {"k1": "", "+52155": "c-uuid", "gone": ""}  # a conversation's id is its key: kept once
        assert {k: oid for _, k, _, oid, *_ in work.plan_rows()} == {"k1": "k1", "+52155": "c-uuid"}
        assert [(k, oid) for k, oid, _, _ in work.managed_not_desired()] == [("gone", "gone")]
        snapshot = {k: oid for k, _, _, _, oid, *_ in work.for_snapshot()}
        assert snapshot == {"k1": "k1", "+52155": "c-uuid", "gone": "gone"}


def test_the_rows_listed_already_as_desired_are_counted_without_being_read(tmp_path):
    with WorkStore(str(tmp_path)) as work:
        work.add_desired([(1, "a", {"x": "1"}), (2, "b", {"x": "2"}), (3, "c", {"x": "3"}), (4, "d", {"x": "4"})])
        work.add_desired([(5, "d", {"x": "5"})])  # "d" twice: a duplicate, never counted
        work.finish_desired()
        work.add_listed([("a", "a", None, 1), ("b", "b", None, 2), ("c", "c", {"x": "0"}, 0), ("d", "d", None, 1)])
        assert work.same_counts() == (2, 1)
        assert [k for _, k, *_ in work.plan_rows(same=False)] == ["c"]
        assert [k for _, k, *_ in work.plan_rows()] == ["a", "b", "c"]


def test_a_transaction_commits_what_it_holds_even_when_the_work_inside_fails(tmp_path):
    with WorkStore(str(tmp_path)) as work:
        work.add_desired([(1, "a", {"x": "1"})])
        work.finish_desired()
        try:
            with work.transaction():
                work.add_listed([("a", "a", {"x": "1"})])
                assert work.db.in_transaction
                with work.transaction():  # inside another: that one
                    work.add_listed([("b", "b", None)])
                assert work.db.in_transaction
                raise RuntimeError("the listing failed")
        except RuntimeError:
            pass
        assert not work.db.in_transaction and work.listed_count() == 2
