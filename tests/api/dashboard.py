"""Signing in to the dashboard from a test: a fresh httpx client on the app (its own cookie jar), signed in."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from tests.api.conftest import Api


def key_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def csrf_token(page_html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page_html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


@asynccontextmanager
async def browser(api: Api, base_url: str = "http://testserver") -> AsyncIterator[httpx.AsyncClient]:
    """A client with a cookie jar of its own, like one browser."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url=base_url) as client:
        yield client


async def sign_in(client: httpx.AsyncClient, key: str) -> str:
    """Sign in through the form; return the CSRF token the pages then carry."""
    response = await client.post("/ui/login", data={"api_key": key, "next": "/ui/jobs"})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/ui/jobs"
    return csrf_token((await client.get("/ui/jobs")).text)
