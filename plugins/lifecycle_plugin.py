"""The Lifecycle Airflow plugin: the web app (provider webhooks, unsubscribe, Campaigns page)
mounted on the api-server under ``/lifecycle``, and a "Campaigns" entry in the UI's Browse menu
that shows the page inside Airflow."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from lifecycle.web import create_app
from lifecycle.web.campaigns import CAMPAIGNS_PATH

URL_PREFIX = "/lifecycle"


class LifecyclePlugin(AirflowPlugin):
    """Registers the Lifecycle FastAPI app and the Campaigns view."""

    name = "lifecycle"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Lifecycle"}]
    external_views = [
        {
            "name": "Campaigns",
            "href": URL_PREFIX + CAMPAIGNS_PATH,
            "url_route": "campaigns",
            "destination": "nav",
            "category": "browse",
        }
    ]
