"""The two path families, and which one a connection calls."""

from __future__ import annotations

import json

from airflow_provider_hilos.hooks.hilos import HilosHook
from tests.conftest import TEST_TOKEN
from tests.helpers import _Recorder, _serve


def test_a_default_connection_calls_hilos_own_paths(monkeypatch):
    """No family chosen, a host that is not an ActiveCampaign account host: /api/inbox/..., as api.hilos.io serves."""
    _Recorder.paths = []
    server, url = _serve(_Recorder)
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_HILOS_DEFAULT", json.dumps({"conn_type": "hilos", "host": url, "password": TEST_TOKEN})
        )
        cid = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
        HilosHook().update_conversation(cid, {"status": "NEW"})
        HilosHook().test_connection()
    finally:
        server.shutdown()
    assert _Recorder.paths == [
        ("PATCH", f"/api/inbox/conversation/{cid}/update"),
        ("GET", "/api/inbox/conversation?page=1&page_size=1"),
    ]
