"""The dashboard's files under ``/ui/``: what is served, with which headers, to whom.

The page is public (it holds no data) while everything it fetches keeps needing the
key; only the shipped files are reachable, whatever the path tries.
"""

from __future__ import annotations

import re

import trio

from arbstr_trio.server import Started
from arbstr_trio.web.ui import shipped_files
from tests.conftest import TWO_PROVIDERS, config_from, http_client, receive_until, running_proxy
from tests.test_auth import ENVIRON, GATED, TEAM_A

EXPECTED_TYPES = {
    "/ui/": "text/html; charset=utf-8",
    "/ui/index.html": "text/html; charset=utf-8",
    "/ui/app.js": "text/javascript; charset=utf-8",
    "/ui/api.js": "text/javascript; charset=utf-8",
    "/ui/style.css": "text/css; charset=utf-8",
}


async def test_files_are_served_with_their_types_and_an_etag() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        for path, content_type in EXPECTED_TYPES.items():
            response = await client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"] == content_type, path
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert "script-src 'self'" in response.headers["content-security-policy"]
            etag = response.headers["etag"]
            again = await client.get(path, headers={"if-none-match": etag})
            assert again.status_code == 304, path
            assert again.content == b""
            assert again.headers["etag"] == etag
        index = await client.get("/ui/")
        assert index.text == (await client.get("/ui/index.html")).text
        assert '<script type="module" src="app.js">' in index.text


async def test_ui_without_a_slash_redirects_to_the_page() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        response = await client.get("/ui")
        assert response.status_code == 308
        assert response.headers["location"] == "/ui/"


async def test_every_module_the_page_imports_is_shipped() -> None:
    """A missing or misnamed module would leave a blank page: follow every import."""
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        seen: set[str] = set()
        pending = ["app.js", "style.css"]
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            response = await client.get(f"/ui/{name}")
            assert response.status_code == 200, name
            pending.extend(re.findall(r'from "\./([\w.-]+)"', response.text))
        assert {"api.js", "charts.js", "live.js", "overview.js", "providers.js"} <= seen
        assert {"requests.js", "playground.js"} <= seen
        # Every shipped script is used: no stray file in the package.
        assert {name for name in shipped_files() if name.endswith(".js")} <= seen


async def raw_get(started: Started, target: bytes) -> tuple[int, bytes]:
    """The status and body of ``GET target`` sent byte for byte, unnormalised by any client."""
    host, port = started.url.removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                b"GET " + target + b" HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
            )
            head = await receive_until(stream, b"\r\n\r\n")
            rest = b""
            while chunk := await stream.receive_some(65536):
                rest += chunk
    status = int(head.split(b" ", 2)[1])
    return status, head.split(b"\r\n\r\n", 1)[1] + rest


TRAVERSALS = (
    b"/ui/nope.js",
    b"/ui/../pyproject.toml",
    b"/ui/..%2fpyproject.toml",
    b"/ui/%2e%2e/%2e%2e/pyproject.toml",
    b"/ui/../../../../etc/passwd",
    b"/ui//etc/passwd",
    b"/ui/./index.html",
    b"/ui/%2fetc%2fpasswd",
    b"/ui/index.html%00.js",
    b"/ui/ui.py",
    b"/ui/__init__.py",
)


async def test_anything_but_a_shipped_file_is_404() -> None:
    async with running_proxy(TWO_PROVIDERS) as started:
        for target in TRAVERSALS:
            status, body = await raw_get(started, target)
            assert status == 404, target
            assert b'"code":"not_found"' in body, target
            assert b"root:" not in body  # nothing of /etc/passwd
            assert b"[project]" not in body  # nothing of pyproject.toml


async def test_the_page_needs_no_key_but_what_it_fetches_does() -> None:
    async with (
        running_proxy(config_from(GATED, ENVIRON)) as started,
        http_client(started) as client,
    ):
        for path in ("/ui/", "/ui/app.js", "/ui/style.css"):
            assert (await client.get(path)).status_code == 200, path
        assert (await client.get("/ui")).status_code == 308
        assert (await client.get("/ui/missing.js")).status_code == 404
        # Only /ui and what is under it: a path that merely starts with "/ui" is gated.
        assert (await client.get("/uix")).status_code == 401
        assert (await client.get("/ui-admin/")).status_code == 401
        for path in ("/v1/stats", "/v1/requests", "/providers", "/v1/models"):
            assert (await client.get(path)).status_code == 401, path
            keyed = await client.get(path, headers={"authorization": f"Bearer {TEAM_A}"})
            assert keyed.status_code == 200, path


async def test_only_get_is_allowed() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        response = await client.post("/ui/", content=b"x")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET"
