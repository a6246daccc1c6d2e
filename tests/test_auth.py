"""Client keys end to end: the gate in front of every endpoint, through the real server.

A proxy without ``[[keys]]`` stays open; with them, a request needs one of the keys
(``Authorization: Bearer`` or ``X-API-Key``), is told 401 or 403 otherwise, is logged
under the key's *name*, and never passes its key on to a provider or into any output.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3

import openai
import pytest

from arbstr_trio.errors import InvalidApiKey, MissingApiKey
from arbstr_trio.server import Started
from arbstr_trio.web.auth import Gate
from tests.conftest import TWO_PROVIDERS, chat_body, config_from, http_client, running_proxy

TEAM_A = "team-a-7f3c2d1e9b8a6f5e4d3c"
TEAM_B = "team-b-0a1b2c3d4e5f6a7b8c9d"
KEYS = f"""
[[keys]]
name = "team-a"
key = "${{TEAM_A_KEY}}"

[[keys]]
name = "team-b"
key = "{TEAM_B}"
"""
GATED = TWO_PROVIDERS + KEYS
ENVIRON = {"TEAM_A_KEY": TEAM_A}

# Every endpoint that needs a key once keys are configured (a GET for each).
PRIVATE_GETS = ("/v1/models", "/providers", "/v1/stats", "/v1/requests", "/v1/requests/x")


def client_key_column(started: Started) -> dict[str, str | None]:
    """request_id -> client_key, read from the request log file."""
    uri = f"file:{started.config.database.path}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        return dict(db.execute("SELECT request_id, client_key FROM requests").fetchall())


async def test_without_keys_everything_stays_open() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        for path in (*PRIVATE_GETS[:-1], "/health", "/metrics"):
            response = await client.get(path)
            assert response.status_code == 200, (path, response.text)
        response = await client.post(
            "/v1/chat/completions", json=chat_body(), headers={"x-request-id": "open"}
        )
        assert response.status_code == 200
        await started.runtime.writer.flushed(1)
        assert client_key_column(started) == {"open": None}


async def test_no_credentials_is_401_with_www_authenticate() -> None:
    config = config_from(GATED, ENVIRON)
    async with running_proxy(config) as started, http_client(started) as client:
        answers = [await client.get(path) for path in PRIVATE_GETS]
        answers.append(await client.post("/v1/chat/completions", json=chat_body()))
        answers.append(await client.get("/nope"))  # before routing: no map of the endpoints
        # A scheme other than Bearer is no key either.
        answers.append(await client.get("/v1/models", headers={"authorization": f"Basic {TEAM_A}"}))
        answers.append(await client.get("/v1/models", headers={"x-api-key": ""}))
        for response in answers:
            assert response.status_code == 401, response.request.url
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.headers["x-arbstr-request-id"]
            error = response.json()["error"]
            assert error["type"] == "authentication_error"
            assert error["code"] == "missing_api_key"
            assert "Authorization: Bearer" in error["message"]
        assert list(started.mocks["alpha"].received) == []
        assert list(started.mocks["beta"].received) == []


async def test_a_wrong_key_is_403_and_not_echoed() -> None:
    wrong = "team-c-ffffffffffffffffffff"
    config = config_from(GATED, ENVIRON)
    async with running_proxy(config) as started, http_client(started) as client:
        answers = [
            await client.get("/v1/models", headers={"authorization": f"Bearer {wrong}"}),
            await client.get("/v1/models", headers={"x-api-key": wrong}),
            # A prefix of a real key, and a real key with something appended, are wrong too.
            await client.get("/v1/models", headers={"x-api-key": TEAM_A[:-1]}),
            await client.get("/v1/models", headers={"x-api-key": TEAM_A + "0"}),
            await client.post(
                "/v1/chat/completions",
                json=chat_body(),
                headers={"authorization": f"Bearer {wrong}"},
            ),
        ]
        for response in answers:
            assert response.status_code == 403
            assert "www-authenticate" not in response.headers
            error = response.json()["error"]
            assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
            assert wrong not in response.text
            assert TEAM_A[:10] not in response.text
        assert list(started.mocks["alpha"].received) == []


async def test_the_right_key_in_either_header_is_let_in_and_logged_by_name() -> None:
    config = config_from(GATED, ENVIRON)
    async with running_proxy(config) as started, http_client(started) as client:
        by_bearer = await client.post(
            "/v1/chat/completions",
            json=chat_body(),
            headers={"authorization": f"Bearer {TEAM_A}", "x-request-id": "bearer"},
        )
        by_header = await client.post(
            "/v1/chat/completions",
            json=chat_body(),
            headers={"x-api-key": TEAM_B, "x-request-id": "x-api-key"},
        )
        # An SDK always sends a bearer token: a placeholder there and the key in X-API-Key.
        beside = await client.post(
            "/v1/chat/completions",
            json=chat_body(),
            headers={
                "authorization": "Bearer placeholder",
                "x-api-key": TEAM_B,
                "x-request-id": "beside",
            },
        )
        assert [by_bearer.status_code, by_header.status_code, beside.status_code] == [200] * 3
        for path in PRIVATE_GETS[:-1]:
            response = await client.get(path, headers={"x-api-key": TEAM_A})
            assert response.status_code == 200, path
        await started.runtime.writer.flushed(3)
        assert client_key_column(started) == {
            "bearer": "team-a",
            "x-api-key": "team-b",
            "beside": "team-b",
        }
        listed = await client.get("/v1/requests/bearer", headers={"x-api-key": TEAM_A})
        assert listed.json()["client_key"] == "team-a"


async def test_the_openai_sdk_works_with_its_api_key() -> None:
    config = config_from(GATED, ENVIRON)
    async with running_proxy(config) as started:
        sdk = openai.AsyncOpenAI(base_url=f"{started.url}/v1", api_key=TEAM_A, max_retries=0)
        completion = await sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert completion.choices[0].message.content
        models = await sdk.models.list()
        assert {model.id for model in models.data} >= {"gpt-4o-mini"}
        stranger = openai.AsyncOpenAI(
            base_url=f"{started.url}/v1", api_key="not-a-key", max_retries=0
        )
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await stranger.models.list()
        assert denied.value.code == "invalid_api_key"


async def test_health_and_metrics_are_public_unless_configured() -> None:
    config = config_from(GATED, ENVIRON)
    async with running_proxy(config) as started, http_client(started) as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200

    closed = config_from(GATED + "[auth]\npublic_health = false\npublic_metrics = false\n", ENVIRON)
    async with running_proxy(closed) as started, http_client(started) as client:
        for path in ("/health", "/metrics"):
            assert (await client.get(path)).status_code == 401
            assert (await client.get(path, headers={"x-api-key": "wrong"})).status_code == 403
            assert (await client.get(path, headers={"x-api-key": TEAM_B})).status_code == 200


async def test_client_keys_never_reach_the_provider() -> None:
    provider_key = "sk-provider-0123456789abcdef"
    text = GATED.replace('name = "alpha"\n', f'name = "alpha"\napi_key = "{provider_key}"\n', 1)
    config = config_from(text, ENVIRON)
    async with running_proxy(config) as started, http_client(started) as client:
        for stream in (False, True):
            response = await client.post(
                "/v1/chat/completions",
                json=chat_body(stream=stream),
                headers={"authorization": f"Bearer {TEAM_A}", "x-api-key": TEAM_A},
            )
            assert response.status_code == 200
        received = started.mocks["alpha"].received
        assert len(received) == 2
        for request in received:
            assert "x-api-key" not in request.headers
            # The provider gets the provider's key, and only that.
            assert request.headers["authorization"] == f"Bearer {provider_key}"
            assert TEAM_A not in repr(request.headers)


async def test_a_client_key_appears_in_no_output(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = config_from(GATED + '\n[logging]\nlevel = "debug"\n', ENVIRON)
    outputs: list[str] = []
    async with running_proxy(config) as started, http_client(started) as client:
        for headers in ({}, {"x-api-key": TEAM_A}, {"authorization": f"Bearer {TEAM_B}"}):
            for path in ("/providers", "/health", "/metrics", "/v1/models", "/v1/stats", "/nope"):
                response = await client.get(path, headers=headers)
                outputs.append(repr(response.headers) + response.text)
            for fault in ("", "status=401", "status=500", "status=400"):
                response = await client.post(
                    "/v1/chat/completions",
                    json=chat_body(),
                    headers={**headers, "x-mock": fault},
                )
                outputs.append(repr(response.headers) + response.text)
        await started.runtime.writer.flushed(8)
        response = await client.get("/v1/requests", headers={"x-api-key": TEAM_A})
        outputs.append(response.text)
        outputs.append(repr(started))
        outputs.append(repr(started.config))
        outputs.append(str(started.config.keys))
    outputs.append(caplog.text)
    everything = "\n".join(outputs)
    for key in (TEAM_A, TEAM_B):
        for start in range(len(key) - 9):
            assert key[start : start + 10] not in everything, f"part of {key[:6]}... leaked"
    assert "team-a" in everything  # the name is what shows


def test_the_gate_reads_either_header_in_any_case_of_the_scheme() -> None:
    gate = Gate.from_config(config_from(GATED, ENVIRON))
    assert gate.admit("/v1/models", [(b"authorization", b"bearer " + TEAM_A.encode())]) == "team-a"
    assert gate.admit("/v1/models", [(b"authorization", b"BEARER  " + TEAM_B.encode())]) == "team-b"
    assert gate.admit("/v1/models", [(b"x-api-key", TEAM_B.encode() + b" ")]) == "team-b"
    assert gate.admit("/health", []) is None
    with pytest.raises(MissingApiKey):
        gate.admit("/v1/models", [(b"authorization", b"Bearer ")])
    with pytest.raises(InvalidApiKey):
        gate.admit("/v1/models", [(b"authorization", b"Bearer " + TEAM_A.upper().encode())])
    assert Gate.from_config(config_from(TWO_PROVIDERS)).admit("/v1/models", []) is None
