"""What the operators share: flags from templates, default checkpoint folders."""

from __future__ import annotations

import pytest

from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.operators._common import default_checkpoint_root, parse_flag


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), ("True", True), (" yes ", True), ("0", False), (False, False)]
)
def test_flags_a_template_renders_are_read(value, expected):
    assert parse_flag(value, field="dry_run") is expected


def test_anything_else_is_refused_naming_the_argument():
    with pytest.raises(HilosValidationError, match="dry_run: must be True or False, got str 'perhaps'"):
        parse_flag("perhaps", field="dry_run")


def test_checkpoints_go_next_to_the_report_or_under_airflow_home(monkeypatch, tmp_path):
    assert str(default_checkpoint_root(str(tmp_path / "r" / "report.jsonl"))) == str(
        tmp_path / "r" / "_hilos_checkpoints"
    )
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    assert str(default_checkpoint_root(None)) == str(tmp_path / "home" / "hilos_checkpoints")
