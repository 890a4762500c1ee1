"""Airflow 3 plugin: the copyhunt run report inside the Airflow UI.

Mounts ``copyhunt.inbox.run_report`` (a FastAPI app) in the Airflow API server at ``/copyhunt``
and adds a "copyhunt runs" entry to the UI's Browse menu that shows it in an iframe. Airflow does
not guard plugin apps by itself, so every route requires an Airflow user allowed to see plugin
views (the same JWT the UI sends, from its cookie or an ``Authorization: Bearer`` header).

Thin by design, like the DAGs: the report's logic lives in ``copyhunt``. Airflow's API security
module is imported on the first request, not at import, so that loading plugins (every Airflow
process does) stays cheap.
"""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request

from airflow.plugins_manager import AirflowPlugin
from copyhunt.inbox.run_report import create_run_report_app

URL_PREFIX = "/copyhunt"


async def require_airflow_viewer(request: Request) -> None:
    """401 without an Airflow session or token; 403 for a user not allowed to see plugin views."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    user = await get_user(request, None, await bearer_scheme(request))
    if not get_auth_manager().is_authorized_view(access_view=AccessView.PLUGINS, user=user):
        raise HTTPException(403, "Forbidden")


def _settings():
    from copyhunt.config import load_settings

    return load_settings()


run_report_app = create_run_report_app(_settings, dependencies=[Depends(require_airflow_viewer)])


class CopyhuntPlugin(AirflowPlugin):
    name = "copyhunt"
    fastapi_apps = [{"app": run_report_app, "url_prefix": URL_PREFIX, "name": "copyhunt run report"}]
    external_views = [
        {
            "name": "copyhunt runs",
            # Relative (no leading slash): resolved against the UI's base URL, so it works behind a prefix.
            "href": URL_PREFIX.lstrip("/") + "/",
            "url_route": "copyhunt-runs",
            "destination": "nav",
            "category": "browse",
        }
    ]
