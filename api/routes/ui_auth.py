"""The dashboard's door: `/` (to the jobs or the sign-in page), /ui/login (a key in, a session cookie out), /ui/logout.

The key travels only in the login form's POST body; the cookie holds a signed reference to it, never the key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.deps import CommittingRoute, RuntimeDep, SessionDep, SignedInDep, check_csrf, check_same_origin
from api.pages import templates
from api.services import signin

router = APIRouter(include_in_schema=False, route_class=CommittingRoute)

HOME = "/ui/jobs"


def _local(next_path: str | None) -> str:
    """Where to go after signing in: a path of this site only (never `//host` or a scheme: no open redirect)."""
    if not next_path or not next_path.startswith("/") or next_path.startswith("//") or "\\" in next_path:
        return HOME
    return next_path


@router.get("/")
def root(request: Request, session: SessionDep, runtime: RuntimeDep) -> RedirectResponse:
    """The dashboard: the jobs page when signed in, else the sign-in page."""
    who = signin.signed_in(session, runtime.cookies, request.cookies.get(signin.COOKIE))
    return RedirectResponse(HOME if who is not None else "/ui/login", status_code=303)


@router.get("/ui/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> Response:
    return templates.TemplateResponse(request, "login.html", {"next": _local(next), "error": None})


@router.post("/ui/login", response_class=HTMLResponse)
def login(request: Request, session: SessionDep, runtime: RuntimeDep,
          api_key: Annotated[str, Form(max_length=256)], next: Annotated[str, Form(max_length=2048)] = HOME
          ) -> Response:
    """Trade an API key for a session cookie (HttpOnly, SameSite=Strict, Secure over https, signed, expiring)."""
    check_same_origin(request)  # no other site may sign a browser in (login CSRF)
    cookie = signin.sign_in(session, runtime.cookies, api_key.strip())
    if cookie is None:
        return templates.TemplateResponse(request, "login.html", status_code=401, context={
            "next": _local(next), "error": "That key is not valid, or it was revoked."})
    response = RedirectResponse(_local(next), status_code=303)
    response.set_cookie(signin.COOKIE, cookie, max_age=runtime.cookies.max_age_seconds, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


@router.post("/ui/logout")
def logout(request: Request, who: SignedInDep, csrf_token: Annotated[str, Form(max_length=256)] = ""
           ) -> RedirectResponse:
    """Sign out: the cookie is cleared (the form carries the page's CSRF token, like every UI state change)."""
    check_csrf(request, csrf_token, who)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(signin.COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
    return response
