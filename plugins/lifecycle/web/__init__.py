"""The Lifecycle web app, served by Airflow's api-server: provider webhooks, unsubscribe, subscription
capture, the track endpoint, and the Campaigns page with its contact lookup and actions."""

from __future__ import annotations

from fastapi import FastAPI

from lifecycle.web.actions import router as actions_router
from lifecycle.web.campaigns import router as campaigns_router
from lifecycle.web.signin import SignInRequired, redirect_to_login
from lifecycle.web.subscribe import router as subscribe_router
from lifecycle.web.track import router as track_router
from lifecycle.web.webhooks import router as webhooks_router


def create_app() -> FastAPI:
    """The FastAPI app the Airflow plugin mounts (other pages add their routers to it)."""
    app = FastAPI(title="Lifecycle", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(webhooks_router)
    app.include_router(track_router)
    app.include_router(campaigns_router)
    app.include_router(actions_router)
    app.add_exception_handler(SignInRequired, redirect_to_login)
    app.include_router(subscribe_router)
    return app
