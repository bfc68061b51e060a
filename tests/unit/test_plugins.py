"""The provider's plugin: the "Hilos syncs" app under /hilos and its entry in the navigation (Airflow 3); nothing on
Airflow 2."""

from __future__ import annotations

from importlib.metadata import entry_points

from airflow_provider_hilos.plugins import URL_PREFIX, HilosPlugin


def test_loading_the_plugin_imports_no_web_framework():
    import subprocess
    import sys

    heavy = ("fastapi", "starlette", "airflow.api_fastapi.core_api.security")
    code = f"import sys, airflow_provider_hilos.plugins; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_the_plugin_is_registered_through_its_entry_point():
    (found,) = [e for e in entry_points(group="airflow.plugins") if e.name == "hilos"]
    assert found.load() is HilosPlugin and HilosPlugin.name == "hilos"


def test_it_mounts_the_syncs_page_and_links_it_from_the_navigation_on_airflow_3():
    try:
        import airflow.api_fastapi  # noqa: F401
    except ImportError:
        assert HilosPlugin.fastapi_apps == [] and HilosPlugin.external_views == []
        return
    (app,) = HilosPlugin.fastapi_apps
    assert app["url_prefix"] == URL_PREFIX and {r.path for r in app["app"].app.routes} >= {"/syncs", "/plan"}
    (view,) = HilosPlugin.external_views
    assert view["href"] == f"{URL_PREFIX}/syncs" and view["destination"] == "nav" and view["name"] == "Hilos syncs"
