"""The per-row report: every row once, in input order, and only once complete."""

from __future__ import annotations

import io
import json
import threading
from collections import Counter

import pytest

from airflow_provider_hilos.batch import BatchOptions
from airflow_provider_hilos.batch.engine import BatchEngine
from airflow_provider_hilos.batch.pipeline import pipeline_for
from airflow_provider_hilos.batch.report import ReportWriter
from tests.helpers import StubHook, ids


def test_the_report_lists_rows_in_input_order_whatever_order_outcomes_arrive_in():
    conversations = ids(300)
    # early rows are retried (they finish last), some fail for good, one is invalid: outcomes arrive out of order
    script = {cid: [503, 503, 200] for cid in conversations[:40:3]} | {cid: [400] for cid in conversations[50:60]}

    class Slow(StubHook):
        def send_update(self, update, *, attempt=None):
            if update.conversation_id in conversations[:10]:
                threading.Event().wait(0.02)  # the first rows answer after the later ones
            return super().send_update(update, attempt=attempt)

    sender = Slow(script)
    rows = [{"conversation_id": cid, "status": "CLOSED"} for cid in conversations]
    rows[100] = {"conversation_id": conversations[100], "status": "DONE"}
    report = io.StringIO()
    options = BatchOptions(progress_interval=3600, max_concurrency=16, skip_invalid_rows=True, failure_policy="never")
    result = BatchEngine(sender, options, report=report).run(pipeline_for(rows))
    lines = [json.loads(line) for line in report.getvalue().splitlines()]
    assert [line["row"] for line in lines] == list(range(1, 301))
    assert [line["conversation_id"] for line in lines] == conversations
    assert Counter(line["outcome"] for line in lines) == {"updated": 289, "failed": 10, "skipped": 1}
    assert result.retried == 2 * len(conversations[:40:3])


def test_a_report_file_appears_only_once_every_row_is_accounted_for(tmp_path):
    """Written to a temporary name beside the target and moved into place at the end: a batch that dies half-way
    (here: the hook raises something unexpected mid-batch) leaves no half report under the target name."""
    from airflow_provider_hilos.storage import AtomicText, storage_path

    target = tmp_path / "reports" / "run.jsonl"
    rows = [{"conversation_id": cid, "status": "CLOSED"} for cid in ids(20)]
    seen: list[str] = []

    class Watching(StubHook):
        def send_update(self, update, *, attempt=None):
            seen.append(sorted(p.name for p in target.parent.iterdir()))
            return super().send_update(update, attempt=attempt)

    result = BatchEngine(Watching(), BatchOptions(max_concurrency=1), report=AtomicText(storage_path(str(target)))).run(
        pipeline_for(rows)
    )
    assert result.updated == 20 and len(target.read_text().splitlines()) == 20
    assert all(names and names[0].startswith(".run.jsonl.") and names[0].endswith(".tmp") for names in seen)
    assert sorted(p.name for p in target.parent.iterdir()) == ["run.jsonl"]  # the temporary file became the report

    class Broken(StubHook):
        def ensure_pool(self, size):
            raise RuntimeError("the machine went away")

    other = tmp_path / "reports" / "other.jsonl"
    with pytest.raises(RuntimeError):
        BatchEngine(Broken(), BatchOptions(), report=AtomicText(storage_path(str(other)))).run(pipeline_for(rows))
    assert not other.exists() and sorted(p.name for p in target.parent.iterdir()) == ["run.jsonl"]


def test_the_writer_holds_a_line_until_the_rows_before_it_are_written():
    stream = io.StringIO()
    writer = ReportWriter(stream)
    for number in (1, 2, 3):
        writer.row_read(number)
    writer.outcome({"row": 3, "outcome": "updated"})
    writer.outcome({"row": 2, "outcome": "failed"})
    assert stream.getvalue() == ""
    writer.outcome({"row": 1, "outcome": "skipped"})
    assert [json.loads(line)["row"] for line in stream.getvalue().splitlines()] == [1, 2, 3]
    ReportWriter(None).outcome({"row": 1})  # no report: nothing to do


def test_a_listener_hears_every_outcome_as_it_arrives_report_or_not():
    heard: list[dict] = []
    conversations = ids(30)
    sender = StubHook({cid: [400] for cid in conversations[:3]})
    engine = BatchEngine(sender, BatchOptions(max_failed_ratio=1.0), on_outcome=heard.append)
    engine.run(pipeline_for([{"conversation_id": cid, "status": "CLOSED"} for cid in conversations]))
    assert sorted(record["conversation_id"] for record in heard) == sorted(conversations)
    assert Counter(record["outcome"] for record in heard) == {"updated": 27, "failed": 3}


# -- issue 27 (A13): a report that can't be written is said so, before sending or with the result -------------


def test_a_report_path_that_is_a_folder_is_refused_before_the_first_request(sb, tmp_path):
    from airflow_provider_hilos.exceptions import HilosConfigurationError
    from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator
    from tests.conftest import FakeTI
    from tests.helpers import patches

    folder = tmp_path / "reports"
    folder.mkdir()
    rows = [{"conversation_id": cid, "status": "CLOSED"} for cid in sb.conversation_ids()[:50]]
    with pytest.raises(HilosConfigurationError, match=rf"the report {folder} can't be written .*Nothing was sent"):
        ConversationBatchUpdateOperator(task_id="b", updates=rows, report_path=str(folder)).execute({"ti": FakeTI()})
    assert patches(sb) == []


def test_a_report_on_a_full_disk_stops_the_batch_and_the_result_says_why(sb, tmp_path, monkeypatch):
    import errno

    from airflow_provider_hilos.exceptions import HilosBatchError
    from airflow_provider_hilos.operators.conversation import BATCH_RESULT_XCOM_KEY, ConversationBatchUpdateOperator
    from airflow_provider_hilos.storage import AtomicText
    from tests.conftest import FakeTI

    opened = AtomicText.open

    def full_after_ten_lines(self):
        stream = opened(self)
        written = [0]
        real_write = stream.write

        def write(text):
            written[0] += 1
            if written[0] > 10:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(text)

        stream.write = write
        return stream

    monkeypatch.setattr(AtomicText, "open", full_after_ten_lines)
    rows = [{"conversation_id": cid, "status": "CLOSED"} for cid in sb.conversation_ids()[:200]]
    report = tmp_path / "report.jsonl"
    ti = FakeTI()
    with pytest.raises(HilosBatchError, match=rf"the report {report} could not be written \(No space left") as caught:
        ConversationBatchUpdateOperator(task_id="b", updates=rows, report_path=str(report), max_concurrency=2).execute(
            {"ti": ti}
        )
    result = ti.pushed[BATCH_RESULT_XCOM_KEY]
    from airflow.providers.common.compat.sdk import AirflowFailException

    assert result["stop_reason"] == "report" and result["updated"] >= 10
    assert not isinstance(caught.value, AirflowFailException)  # a retry resumes from the checkpoint
    assert not report.exists() and list(tmp_path.iterdir()) == [tmp_path / "_hilos_checkpoints"]
