"""The batch result: what XCom gets, and the first stop wins."""

from __future__ import annotations

import json

from airflow_provider_hilos.batch.result import BatchResult, StopReason


def test_the_first_stop_is_the_one_recorded():
    result = BatchResult(total=10, skipped=2)
    assert result.stop(StopReason.API_UNAVAILABLE, "the API looks unavailable: 20 consecutive failed requests")
    assert not result.stop(StopReason.KILLED, "later")
    assert (result.stop_reason, result.stopped) == (
        "api_unavailable",
        "the API looks unavailable: 20 consecutive failed requests",
    )
    assert result.sendable == 8


def test_to_dict_is_plain_json_for_xcom():
    result = BatchResult(total=1, updated=1)
    result.failed_rows.append({"row": 1, "conversation_id": "x", "status_code": 404, "error": "not found"})
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()
    assert set(result.to_dict()) >= {"total", "updated", "failed", "stopped", "stop_reason"}
