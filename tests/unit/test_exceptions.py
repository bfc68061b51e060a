"""The provider's errors: which Airflow retries, and that they survive the trip between processes."""

from __future__ import annotations

import json

import pytest

from airflow_provider_hilos.exceptions import (
    HilosAPIError,
    HilosBatchError,
    HilosValidationError,
)
from tests.helpers import CID, URL


def test_api_error_is_picklable_for_airflow(hook, requests_mock):
    import pickle

    requests_mock.patch(URL, status_code=404, json={"detail": "Not found."})
    with pytest.raises(HilosAPIError) as err:
        hook.update_conversation(CID, {"status": "NEW"})
    clone = pickle.loads(pickle.dumps(err.value))
    assert str(clone) == str(err.value) and clone.status_code == 404
    val = pickle.loads(pickle.dumps(HilosValidationError([("status", "bad")], "Invalid")))
    assert val.problems == [("status", "bad")] and str(val) == "Invalid: 1 problem:\n  - status: bad"
    batch = pickle.loads(pickle.dumps(HilosBatchError("2 failed", result={"failed": 2})))
    assert (str(batch), batch.result) == ("2 failed", {"failed": 2})
    json.dumps(err.value.field_errors)
