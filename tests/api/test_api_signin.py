"""Dashboard sign-in: the session cookie's flags, signature and expiry; CSRF on cookie-authenticated state
changes; sign-out; the key never in a URL, a page or a log line."""

from __future__ import annotations

import logging
import time
from http.cookies import SimpleCookie

import anyio
import pytest

from api.services.keys import revoke_key
from tests.api.conftest import SPEC, Api, ApiFactory
from tests.api.dashboard import browser, csrf_token, key_of, sign_in

pytestmark = pytest.mark.anyio


def session_cookie(set_cookie: str) -> dict[str, str]:
    """The attributes of a Set-Cookie header for the session cookie (flag attributes map to '')."""
    parsed = SimpleCookie()
    parsed.load(set_cookie)
    morsel = parsed["narrownet_session"]
    attributes = {k: str(v) for k, v in morsel.items() if v}
    return {"value": morsel.value, **attributes}


class TestSignIn:
    async def test_a_key_buys_a_signed_httponly_strict_expiring_cookie(self, api: Api) -> None:
        user = api.new_user("alice")
        async with browser(api) as client:
            response = await client.post("/ui/login", data={"api_key": key_of(user)})
            assert response.status_code == 303 and response.headers["location"] == "/ui/jobs"
            cookie = session_cookie(response.headers["set-cookie"])
            assert cookie["httponly"] is not None and cookie["samesite"].lower() == "strict"
            assert int(cookie["max-age"]) == api.settings.session_max_age_seconds
            assert "secure" not in cookie  # plain http here; see the https test
            assert key_of(user) not in response.headers["set-cookie"]  # a signed reference, not the key
            # The cookie now authenticates the pages and the JSON API.
            assert (await client.get("/ui/jobs")).status_code == 200
            assert (await client.get("/v1/jobs")).status_code == 200

    async def test_the_cookie_is_secure_when_served_over_https(self, api: Api) -> None:
        user = api.new_user()
        async with browser(api, base_url="https://testserver") as client:
            response = await client.post("/ui/login", data={"api_key": key_of(user)})
            assert "secure" in session_cookie(response.headers["set-cookie"])

    async def test_a_wrong_key_is_refused_and_never_echoed(self, api: Api) -> None:
        async with browser(api) as client:
            response = await client.post("/ui/login", data={"api_key": "nn_not-a-key-at-all"})
            assert response.status_code == 401 and "set-cookie" not in response.headers
            assert "not valid" in response.text and "nn_not-a-key-at-all" not in response.text

    async def test_the_key_is_in_no_url_page_or_log_line(self, api: Api, caplog: pytest.LogCaptureFixture) -> None:
        user = api.new_user("alice")
        key = key_of(user)
        seen: list[str] = []
        caplog.set_level(logging.DEBUG)
        async with browser(api) as client:
            job_id = (await client.post("/v1/jobs", json=SPEC, headers=user)).json()["id"]
            login = await client.post("/ui/login", data={"api_key": key, "next": f"/ui/jobs/{job_id}"})
            seen += [login.headers["location"], login.text]
            for path in ("/ui/jobs", f"/ui/jobs/{job_id}", f"/ui/compare?ids={job_id}", "/docs", "/ui/login"):
                page = await client.get(path)
                assert page.status_code == 200, path
                seen += [str(page.url), page.text, *page.headers.values()]
        assert not any(key in text or key[3:] in text for text in seen)
        assert key[3:] not in caplog.text

    async def test_only_local_paths_are_followed_after_sign_in(self, api: Api) -> None:
        user = api.new_user()
        async with browser(api) as client:
            for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"):
                response = await client.post("/ui/login", data={"api_key": key_of(user), "next": target})
                assert response.headers["location"] == "/ui/jobs", target
            response = await client.post("/ui/login", data={"api_key": key_of(user), "next": "/ui/jobs?status=running"})
            assert response.headers["location"] == "/ui/jobs?status=running"

    async def test_a_tampered_cookie_is_no_session(self, api: Api) -> None:
        user = api.new_user()
        async with browser(api) as client:
            await sign_in(client, key_of(user))
            value = client.cookies["narrownet_session"]
            client.cookies.set("narrownet_session", value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
            assert (await client.get("/v1/jobs")).status_code == 401
            page = await client.get("/ui/jobs")
            assert page.status_code == 303 and page.headers["location"] == "/ui/login?next=%2Fui%2Fjobs"

    async def test_a_cookie_signed_with_another_secret_is_no_session(self, api_factory: ApiFactory) -> None:
        async with api_factory(session_secret="a" * 40) as first, api_factory(session_secret="b" * 40) as second:
            user = first.new_user()
            async with browser(first) as client:
                await sign_in(client, key_of(user))
                cookie = client.cookies["narrownet_session"]
            async with browser(second) as client:
                client.cookies.set("narrownet_session", cookie)
                assert (await client.get("/v1/jobs")).status_code == 401

    async def test_the_session_expires(self, api_factory: ApiFactory) -> None:
        async with api_factory(session_max_age_seconds=1) as api:
            user = api.new_user()
            async with browser(api) as client:
                await sign_in(client, key_of(user))
                deadline = time.monotonic() + 15
                while (await client.get("/v1/jobs")).status_code == 200:
                    assert time.monotonic() < deadline, "the session outlived its max age"
                    await anyio.sleep(0.2)
                assert (await client.get("/v1/jobs")).status_code == 401

    async def test_revoking_the_key_ends_its_sessions(self, api: Api) -> None:
        user = api.new_user()
        async with browser(api) as client:
            await sign_in(client, key_of(user))
            with api.session() as s:
                assert revoke_key(s, api.owner_id(user))
            assert (await client.get("/v1/jobs")).status_code == 401

    async def test_the_generated_secret_is_kept_under_home_readable_by_its_owner_only(self, api: Api) -> None:
        async with browser(api) as client:
            await sign_in(client, key_of(api.new_user()))
        path = api.settings.session_secret_file
        assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_text().strip()) >= 32


class TestCsrf:
    async def test_a_cookie_authenticated_change_needs_the_pages_token(self, api: Api) -> None:
        user = api.new_user()
        job_id = (await api.client.post("/v1/jobs", json=SPEC, headers=user)).json()["id"]
        async with browser(api) as client:
            token = await sign_in(client, key_of(user))
            for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": token, "Origin": "http://evil.example"},
                            {"X-CSRF-Token": token, "Sec-Fetch-Site": "cross-site"},
                            {"X-CSRF-Token": token, "Sec-Fetch-Site": "same-site"}):
                refused = await client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
                assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed", headers
                assert (await client.post("/v1/jobs", json=SPEC, headers=headers)).status_code == 403
            assert (await client.get(f"/v1/jobs/{job_id}")).json()["status"] == "queued"  # nothing changed
            done = await client.post(f"/v1/jobs/{job_id}/cancel",
                                     headers={"X-CSRF-Token": token, "Origin": "http://testserver"})
            assert done.status_code == 200 and done.json()["status"] == "cancelled"

    async def test_a_bearer_key_needs_no_token(self, api: Api) -> None:
        user = api.new_user()
        job_id = (await api.client.post("/v1/jobs", json=SPEC, headers=user)).json()["id"]
        assert (await api.client.post(f"/v1/jobs/{job_id}/cancel", headers=user)).status_code == 200

    async def test_sign_in_from_another_site_is_refused(self, api: Api) -> None:
        user = api.new_user()
        async with browser(api) as client:
            response = await client.post("/ui/login", data={"api_key": key_of(user)},
                                         headers={"Origin": "http://evil.example"})
            assert response.status_code == 403 and "set-cookie" not in response.headers


class TestSignOut:
    async def test_sign_out_clears_the_cookie_and_needs_the_token(self, api: Api) -> None:
        user = api.new_user()
        async with browser(api) as client:
            token = await sign_in(client, key_of(user))
            refused = await client.post("/ui/logout", data={"csrf_token": "wrong"})
            assert refused.status_code == 403 and (await client.get("/ui/jobs")).status_code == 200
            out = await client.post("/ui/logout", data={"csrf_token": token})
            assert out.status_code == 303 and out.headers["location"] == "/ui/login"
            cleared = session_cookie(out.headers["set-cookie"])
            assert cleared["value"] == "" and int(cleared["max-age"]) == 0
            assert (await client.get("/ui/jobs")).status_code == 303

    async def test_pages_carry_a_token_per_session(self, api: Api) -> None:
        user = api.new_user()
        async with browser(api) as one, browser(api) as two:
            assert await sign_in(one, key_of(user)) != await sign_in(two, key_of(user))
            assert csrf_token((await one.get("/ui/jobs")).text) == csrf_token((await one.get("/ui/jobs")).text)
