"""The lease that keeps one run of a sync at a time: taken atomically, held while renewed, taken over once expired,
lost (and said so) when another run took it over; a folder that can't be written is found before any request."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from airflow_provider_hilos.exceptions import HilosConfigurationError
from airflow_provider_hilos.storage import storage_path
from airflow_provider_hilos.sync.lease import LEASE_FILE, SyncLease, lease_is_free


@pytest.fixture
def folder(tmp_path):
    return storage_path(str(tmp_path / "state" / "crm"))


def test_one_run_holds_the_lease_and_a_second_is_told_who(folder):
    first = SyncLease(folder, run_id="scheduled__2026-01-02", try_number=1)
    second = SyncLease(folder, run_id="manual__2026-01-02")
    assert first.try_acquire() is None and first.held
    holder = second.try_acquire()
    assert holder is not None and not second.held
    assert holder.run_id == "scheduled__2026-01-02" and holder.pid == os.getpid()
    assert "run scheduled__2026-01-02 (try 1)" in holder.describe() and "lease valid" in holder.describe()
    assert not lease_is_free(folder)
    first.release()
    assert lease_is_free(folder) and second.try_acquire() is None
    second.release()


def test_of_many_runs_taking_a_free_lease_at_once_exactly_one_gets_it(folder):
    leases = [SyncLease(folder, run_id=f"r{i}") for i in range(16)]
    start = threading.Barrier(len(leases))
    got: list[SyncLease] = []

    def take(lease: SyncLease) -> None:
        start.wait()
        if lease.try_acquire() is None:
            got.append(lease)

    threads = [threading.Thread(target=take, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 1


def test_an_expired_lease_is_taken_over_and_exactly_once(folder):
    dead = SyncLease(folder, run_id="killed", seconds=0.2)
    assert dead.try_acquire() is None  # its process is then killed: nobody renews it
    time.sleep(0.3)
    takers = [SyncLease(folder, run_id=f"next{i}") for i in range(8)]
    start = threading.Barrier(len(takers))
    got: list[SyncLease] = []

    def take(lease: SyncLease) -> None:
        start.wait()
        if lease.try_acquire() is None:
            got.append(lease)

    threads = [threading.Thread(target=take, args=(lease,)) for lease in takers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 1
    assert json.loads((storage_path(str(folder)) / LEASE_FILE).read_text())["run_id"] == got[0].run_id


def test_a_kept_lease_is_renewed_past_its_duration(folder):
    lease = SyncLease(folder, run_id="long", seconds=0.6)
    assert lease.try_acquire() is None
    lease.keep()
    time.sleep(1.5)  # two and a half lease durations
    holder = SyncLease(folder, run_id="other").try_acquire()
    assert holder is not None and holder.run_id == "long" and not lease.lost.is_set()
    lease.release()
    assert lease_is_free(folder)


def test_a_run_whose_lease_was_taken_over_finds_out_and_says_why(folder):
    stalled = SyncLease(folder, run_id="stalled", seconds=0.3)
    assert stalled.try_acquire() is None  # not kept: as if its process were stalled
    time.sleep(0.4)
    other = SyncLease(folder, run_id="other")
    assert other.try_acquire() is None
    told: list[str] = []
    stalled._on_lost = told.append
    stalled.renew()
    assert stalled.lost.is_set() and told and "taken over" in told[0] and "run other" in told[0]
    stalled.release()  # must not remove the other run's lease
    assert SyncLease(folder, run_id="third").try_acquire() is not None
    other.release()


def test_an_unwritable_state_folder_is_found_before_anything_is_sent(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    lease = SyncLease(storage_path(str(blocker / "state")), run_id="r")
    with pytest.raises(HilosConfigurationError, match=r"can't be written .*set state_store.*Nothing was sent"):
        lease.try_acquire()
