"""Files the provider writes appear whole or not at all."""

from __future__ import annotations

import pytest

from airflow_provider_hilos.storage import AtomicText, is_local, local_path, storage_path


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
