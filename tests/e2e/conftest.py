"""The end-to-end suite drives Airflow 3's REST API (/api/v2) and UI: it does not apply to Airflow 2."""

from tests.conftest import AIRFLOW_V3

collect_ignore_glob = [] if AIRFLOW_V3 else ["test_*.py"]
