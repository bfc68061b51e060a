"""Files the provider writes appear whole or not at all."""

from __future__ import annotations

import os

import pytest

from airflow_provider_hilos.storage import AtomicText, is_local, local_path, make_folder, storage_path


def test_a_file_is_written_beside_its_target_and_moved_into_place_on_commit(tmp_path):
    target = storage_path(str(tmp_path / "deep" / "report.jsonl"))
    writer = AtomicText(target)
    handle = writer.open()
    handle.write("one\n")
    assert not (tmp_path / "deep" / "report.jsonl").exists()  # not under its name until complete
    (temporary,) = (tmp_path / "deep").iterdir()
    assert temporary.name.startswith(".report.jsonl.") and temporary.name.endswith(".tmp")
    writer.commit()
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["report.jsonl"]
    assert (tmp_path / "deep" / "report.jsonl").read_text() == "one\n"
    writer.abort()  # after a commit: nothing to undo
    assert (tmp_path / "deep" / "report.jsonl").read_text() == "one\n"


def test_an_aborted_file_leaves_the_old_one_as_it_was(tmp_path):
    (tmp_path / "report.jsonl").write_text("yesterday\n")
    writer = AtomicText(storage_path(str(tmp_path / "report.jsonl")))
    writer.open().write("half")
    writer.abort()
    assert [p.name for p in tmp_path.iterdir()] == ["report.jsonl"]
    assert (tmp_path / "report.jsonl").read_text() == "yesterday\n"


@pytest.mark.parametrize("form", ["{}", "file://{}"])
def test_local_paths_in_both_spellings(tmp_path, form):
    path = storage_path(form.format(tmp_path / "x"))
    assert is_local(path) and local_path(path) == str(tmp_path / "x")


def test_a_folder_another_task_creates_at_the_same_moment_is_no_error(tmp_path, monkeypatch):
    """ObjectStoragePath.mkdir checks, then creates: a folder made in between raised FileExistsError (two tries
    of one task opening their checkpoint at once failed with "can't be written")."""
    path = storage_path(str(tmp_path / "a" / "b"))

    def racing_mkdir(*args, **kwargs):
        os.makedirs(tmp_path / "a" / "b", exist_ok=True)  # the other task won the race
        raise FileExistsError(str(tmp_path / "a" / "b"))

    monkeypatch.setattr(type(path), "mkdir", racing_mkdir)
    make_folder(path)
    assert (tmp_path / "a" / "b").is_dir()


class _ObjectFolder:
    """An object-store folder whose mkdir loses the same race (or fails for real)."""

    protocol = "s3"

    def __init__(self, *, there_afterwards: bool) -> None:
        self.there_afterwards = there_afterwards

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        raise FileExistsError("s3://bucket/hilos/ti")

    def is_dir(self) -> bool:
        return self.there_afterwards


def test_an_object_store_folder_that_exists_after_a_lost_race_is_no_error():
    make_folder(_ObjectFolder(there_afterwards=True))  # type: ignore[arg-type]
    with pytest.raises(FileExistsError):  # a file where the folder should be: a real error
        make_folder(_ObjectFolder(there_afterwards=False))  # type: ignore[arg-type]
