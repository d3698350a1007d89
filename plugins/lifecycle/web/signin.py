"""Who is asking: the signed-in Airflow user of a Lifecycle page, and the way back to sign-in.

The Campaigns page and its contact lookup are HTML pages a person opens in a browser (inside
Airflow's iframe or on their own). When the browser brings no valid Airflow session (no ``_token``
cookie, or an expired or unreadable one), the page answers ``303 See Other`` to the auth manager's
login page (:meth:`BaseAuthManager.get_url_login`, SimpleAuthManager's or FAB's) with the page as
the return path, rather than Airflow's JSON ``{"detail": "Not authenticated"}``. A request that
presents its own ``Authorization: Bearer`` token is a program, not a browser: a bad token keeps
Airflow's JSON answer (401 or 403), as every JSON endpoint of the app does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from airflow.api_fastapi.app import create_auth_manager
from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import bearer_scheme, get_user
from fastapi import Depends, HTTPException, Request, status
from fastapi.responses import RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials


class SignInRequired(Exception):
    """A browser asked for a page without a valid Airflow session."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


@dataclass(frozen=True)
class SignedIn:
    """The signed-in user and the token that proves it (forwarded to Airflow's REST API, so an
    action runs with the user's own permissions)."""

    user: BaseUser
    token: str


def _presented_bearer(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return credentials.credentials if credentials and credentials.scheme.lower() == "bearer" else None


def return_path(request: Request) -> str:
    """Where to come back after signing in: the page asked for (its path and query, mount prefix
    included), or for a form post the page that posted it (a post cannot be replayed by a link)."""
    url = request.url if request.method == "GET" else urlsplit(request.headers.get("referer", "/"))
    return (url.path or "/") + (f"?{url.query}" if url.query else "")


async def signed_in_page(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> SignedIn:
    """FastAPI dependency of the HTML pages: the signed-in user, else :class:`SignInRequired`
    (which the app answers with the login redirect). Airflow's own ``get_user`` decides."""
    token = _presented_bearer(bearer)
    try:
        user = await get_user(request, None, bearer)
    except HTTPException as exc:
        if token is None and exc.status_code in (status.HTTP_401_UNAUTHORIZED, status.HTTP_403_FORBIDDEN):
            raise SignInRequired(return_path(request)) from exc
        raise
    return SignedIn(user, token or request.cookies.get(COOKIE_NAME_JWT_TOKEN, ""))


def login_url(next_path: str) -> str:
    """The auth manager's login page, returning to ``next_path`` after signing in."""
    return create_auth_manager().get_url_login(next_url=next_path)


async def redirect_to_login(_request: Request, exc: Exception) -> RedirectResponse:
    """The app's handler of :class:`SignInRequired`: 303 to the login page."""
    next_path = exc.next_path if isinstance(exc, SignInRequired) else "/"
    return RedirectResponse(login_url(next_path), status_code=status.HTTP_303_SEE_OTHER)
