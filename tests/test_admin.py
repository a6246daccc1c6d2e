"""The admin API and SIGHUP reload, end to end through the real server.

A change made under ``/v1/admin/`` is checked by the config loader, written to the
admin overlay next to the config file, and seen by the next request; a request under
way finishes on what it started with; keys are only ever shown masked.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from arbstr_trio import reconfigure
from arbstr_trio.reconfigure import ConfigSource, reload
from arbstr_trio.server import Started
from tests.conftest import TWO_PROVIDERS, chat_body, http_client, running_proxy

ADMIN_TOKEN = "admin-9c8b7a6f5e4d3c2b1a00"
TEAM_A = "team-a-7f3c2d1e9b8a6f5e4d3c"
TEAM_B = "team-b-0a1b2c3d4e5f6a7b8c9d"
PROVIDER_KEY = "sk-provider-5e4d3c2b1a0f9e8d"
SECRETS = (ADMIN_TOKEN, TEAM_A, TEAM_B, PROVIDER_KEY)
ENVIRON = {"ADMIN_TOKEN": ADMIN_TOKEN, "TEAM_A_KEY": TEAM_A}

ADMIN = """
[admin]
token = "${ADMIN_TOKEN}"

[[keys]]
name = "team-a"
key = "${TEAM_A_KEY}"

[[keys]]
name = "team-b"
key = "team-b-0a1b2c3d4e5f6a7b8c9d"
"""
AS_ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
AS_TEAM_A = {"authorization": f"Bearer {TEAM_A}"}
AS_TEAM_B = {"authorization": f"Bearer {TEAM_B}"}


def write_config(tmp_path: Path, text: str = TWO_PROVIDERS + ADMIN) -> ConfigSource:
    path = tmp_path / "arbstr.toml"
    text += f'\n[database]\npath = "{tmp_path / "arbstr.db"}"\n'
    path.write_text(text)
    path.chmod(0o600)
    return ConfigSource(path, environ=ENVIRON)


@asynccontextmanager
async def proxy_from(source: ConfigSource) -> AsyncIterator[tuple[Started, httpx.AsyncClient]]:
    config = source.load().config
    async with running_proxy(config, source=source) as started, http_client(started) as client:
        yield started, client


async def chat(
    client: httpx.AsyncClient, model: str = "gpt-4o-mini", **headers: str
) -> httpx.Response:
    return await client.post(
        "/v1/chat/completions", json=chat_body(model), headers={**AS_TEAM_A, **headers}
    )


async def test_admin_api_is_404_without_a_token(tmp_path: Path) -> None:
    source = write_config(tmp_path, TWO_PROVIDERS)
    async with proxy_from(source) as (_, client):
        for headers in ({}, AS_ADMIN):
            response = await client.get("/v1/admin/providers", headers=headers)
            assert response.status_code == 404, response.text
    # Nor from a config that came from no file at all.
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        assert (await client.get("/v1/admin/providers", headers=AS_ADMIN)).status_code == 404


async def test_admin_token_is_required_and_separate_from_client_keys(tmp_path: Path) -> None:
    async with proxy_from(write_config(tmp_path)) as (_, client):
        missing = await client.get("/v1/admin/keys")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        for wrong in ("Bearer nope", f"Bearer {TEAM_A}", f"Bearer {ADMIN_TOKEN}x"):
            response = await client.get("/v1/admin/keys", headers={"authorization": wrong})
            assert response.status_code == 403, wrong
        assert (await client.get("/v1/admin/keys", headers=AS_ADMIN)).status_code == 200
        # The admin token is no client key.
        assert (await client.get("/v1/models", headers=AS_ADMIN)).status_code == 403
        unknown = await client.get("/v1/admin/nothing", headers=AS_ADMIN)
        assert unknown.status_code == 404


async def test_a_provider_added_serves_the_next_request(tmp_path: Path) -> None:
    async with proxy_from(write_config(tmp_path)) as (started, client):
        assert (await chat(client, "gamma-model")).status_code == 404
        body = {
            "name": "gamma",
            "url": started.config.provider("alpha").url,
            "models": ["gamma-model"],
            "input_rate": 1,
            "output_rate": 2,
        }
        created = await client.post("/v1/admin/providers", json=body, headers=AS_ADMIN)
        assert created.status_code == 201, created.text
        assert created.json()["name"] == "gamma"
        response = await chat(client, "gamma-model")
        assert response.status_code == 200, response.text
        assert response.headers["x-arbstr-provider"] == "gamma"
        again = await client.post("/v1/admin/providers", json=body, headers=AS_ADMIN)
        assert again.status_code == 409
        listed = await client.get("/v1/admin/providers", headers=AS_ADMIN)
        assert [p["name"] for p in listed.json()["providers"]] == ["alpha", "beta", "gamma"]
        models = await client.get("/v1/models", headers=AS_TEAM_A)
        assert "gamma-model" in {m["id"] for m in models.json()["data"]}


async def test_new_rates_price_the_next_request(tmp_path: Path) -> None:
    async with proxy_from(write_config(tmp_path)) as (_, client):
        before = await chat(client)
        assert before.headers["x-arbstr-provider"] == "alpha"
        alpha = (await client.get("/v1/admin/providers/alpha", headers=AS_ADMIN)).json()
        assert alpha["output_rate"] == 600
        # Read, edit, put back: the shape the API answers in is the shape it takes.
        body = {k: alpha[k] for k in ("url", "models", "input_rate", "output_rate")}
        body["output_rate"] = 6000
        body["input_rate"] = 1500
        put = await client.put("/v1/admin/providers/alpha", json=body, headers=AS_ADMIN)
        assert put.status_code == 200, put.text
        assert put.json()["output_rate"] == 6000
        after = await chat(client)
        # alpha is now dearer than beta, so beta answers, at beta's price.
        assert after.headers["x-arbstr-provider"] == "beta"
        assert after.headers["x-arbstr-cost-sats"] != before.headers["x-arbstr-cost-sats"]
        body["output_rate"] = 60
        body["input_rate"] = 15
        await client.put("/v1/admin/providers/alpha", json=body, headers=AS_ADMIN)
        cheap = await chat(client)
        assert cheap.headers["x-arbstr-provider"] == "alpha"
        assert float(cheap.headers["x-arbstr-cost-sats"]) < float(
            before.headers["x-arbstr-cost-sats"]
        )


async def test_a_deleted_key_is_refused_on_its_next_request(tmp_path: Path) -> None:
    async with proxy_from(write_config(tmp_path)) as (_, client):
        assert (await chat(client, authorization=f"Bearer {TEAM_B}")).status_code == 200
        deleted = await client.delete("/v1/admin/keys/team-b", headers=AS_ADMIN)
        assert deleted.status_code == 200, deleted.text
        assert (await chat(client, authorization=f"Bearer {TEAM_B}")).status_code == 403
        assert (await chat(client)).status_code == 200  # team-a still in
        gone = await client.delete("/v1/admin/keys/team-b", headers=AS_ADMIN)
        assert gone.status_code == 404
        added = await client.put(
            "/v1/admin/keys/team-c", json={"key": "team-c-secret-value-1234"}, headers=AS_ADMIN
        )
        assert added.status_code == 200, added.text
        assert "team-c-secret-value-1234" not in added.text
        ok = await chat(client, authorization="Bearer team-c-secret-value-1234")
        assert ok.status_code == 200


async def test_a_change_while_another_process_holds_the_overlay_is_a_503_not_a_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconfigure, "_LOCK_WAIT_S", 0.05)
    source = write_config(tmp_path)
    async with proxy_from(source) as (_, client):
        assert source.overlay_path is not None
        lock_path = source.overlay_path.with_name(source.overlay_path.name + ".lock")
        held = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(held, fcntl.LOCK_EX)  # as another worker in the middle of a change
            busy = await client.delete("/v1/admin/keys/team-b", headers=AS_ADMIN)
        finally:
            os.close(held)
        assert busy.status_code == 503
        assert busy.json()["error"]["code"] == "admin_busy"
        done = await client.delete("/v1/admin/keys/team-b", headers=AS_ADMIN)
        assert done.status_code == 200, done.text


async def test_an_invalid_change_is_a_400_with_the_loader_s_messages(tmp_path: Path) -> None:
    source = write_config(tmp_path)
    async with proxy_from(source) as (started, client):
        running = started.runtime.config
        bad = {"name": "gamma", "url": "ftp://x", "input_rate": -1, "colour": "red"}
        response = await client.post("/v1/admin/providers", json=bad, headers=AS_ADMIN)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_config"
        assert "$.providers[2].input_rate: must be >= 0" in error["problems"]
        assert "$.providers[2].colour: unknown key" in error["problems"]
        assert any(p.startswith("$.providers[2].url: must be an http") for p in error["problems"])
        # Deleting a provider a chain... or a key still needed: checked as a whole config.
        chain = {"entries": [{"provider": "nobody", "model": "x"}]}
        response = await client.put("/v1/admin/chains/c", json=chain, headers=AS_ADMIN)
        assert response.status_code == 400
        assert response.json()["error"]["problems"][0].startswith("$.chains[0].entries[0]")
        not_json = await client.post("/v1/admin/keys", content=b"{", headers=AS_ADMIN)
        assert not_json.status_code == 400
        assert started.runtime.config is running
        assert source.overlay_path is not None
        assert not source.overlay_path.exists()


async def test_a_request_in_flight_during_a_change_completes(tmp_path: Path) -> None:
    async with proxy_from(write_config(tmp_path)) as (started, client):
        slow = {"x-mock": "chunks=10; chunk_delay_ms=50"}
        body = chat_body(stream=True)
        async with client.stream(
            "POST", "/v1/chat/completions", json=body, headers={**AS_TEAM_A, **slow}
        ) as response:
            assert response.status_code == 200
            assert response.headers["x-arbstr-provider"] == "alpha"
            chunks = response.aiter_bytes()
            received = await anext(chunks)
            # Its provider and its key both go while it streams.
            await client.delete("/v1/admin/keys/team-a", headers=AS_ADMIN)
            assert (await client.get("/v1/admin/providers/alpha", headers=AS_ADMIN)).is_success
            new_alpha = {"url": "http://mock.invalid/v1", "models": ["other"]}
            changed = await client.put(
                "/v1/admin/providers/alpha", json=new_alpha, headers=AS_ADMIN
            )
            assert changed.status_code == 200, changed.text
            async for chunk in chunks:
                received += chunk
        assert received.rstrip().endswith(b"data: [DONE]")
        assert (await chat(client)).status_code == 403
        await started.runtime.writer.flushed(1)


async def test_changes_survive_a_restart(tmp_path: Path) -> None:
    source = write_config(tmp_path)
    async with proxy_from(source) as (started, client):
        gamma = {"url": "http://mock.invalid/v1", "models": ["gamma-model"], "output_rate": 7}
        put = await client.put("/v1/admin/providers/gamma", json=gamma, headers=AS_ADMIN)
        assert put.status_code == 200, put.text
        await client.delete("/v1/admin/keys/team-b", headers=AS_ADMIN)
        await client.put(
            "/v1/admin/keys/team-c", json={"key": "team-c-x1y2z3w4v5"}, headers=AS_ADMIN
        )
    overlay = source.overlay_path
    assert overlay is not None
    assert stat.S_IMODE(os.stat(overlay).st_mode) == 0o600
    leftovers = [name for name in os.listdir(tmp_path) if name.startswith(".arbstr.toml.admin")]
    assert not leftovers  # no temporary file left behind

    again = ConfigSource(source.path, environ=ENVIRON)
    async with proxy_from(again) as (started, client):
        names = [p.name for p in started.runtime.config.providers]
        assert names == ["alpha", "beta", "gamma"]
        assert started.runtime.config.provider("gamma").output_rate == 7
        assert (await chat(client, authorization=f"Bearer {TEAM_B}")).status_code == 403
        ok = await chat(client, authorization="Bearer team-c-x1y2z3w4v5")
        assert ok.status_code == 200


async def test_reload_applies_the_file_or_keeps_the_running_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = write_config(tmp_path)
    assert source.path is not None
    async with proxy_from(source) as (started, client):
        runtime = started.runtime
        await client.put(
            "/v1/admin/keys/team-c", json={"key": "team-c-x1y2z3w4v5"}, headers=AS_ADMIN
        )
        text = source.path.read_text()
        source.path.write_text(text.replace("output_rate = 600", "output_rate = 6000"))
        assert reload(runtime)
        assert runtime.config.provider("alpha").output_rate == 6000
        assert (await chat(client)).headers["x-arbstr-provider"] == "beta"
        # The overlay is laid over the reloaded file.
        ok = await chat(client, authorization="Bearer team-c-x1y2z3w4v5")
        assert ok.status_code == 200
        # A broken file: every problem logged, the running config kept.
        kept = runtime.config
        broken = text.replace("input_rate = 150", "input_rate = -1").replace(
            "output_rate = 1200", 'output_rate = "lots"'
        )
        source.path.write_text(broken)
        with caplog.at_level(logging.ERROR, logger="arbstr_trio.reconfigure"):
            assert not reload(runtime)
        logged = caplog.text
        assert "$.providers[0].input_rate: must be >= 0" in logged
        assert "$.providers[1].output_rate: must be a number" in logged
        assert runtime.config is kept
        assert (await chat(client)).status_code == 200


async def test_keys_never_appear_unmasked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = TWO_PROVIDERS.replace('name = "alpha"', f'name = "alpha"\napi_key = "{PROVIDER_KEY}"', 1)
    source = write_config(tmp_path, text + ADMIN)
    answers: list[str] = []
    caplog.set_level(logging.DEBUG)
    async with proxy_from(source) as (_, client):
        for section in ("providers", "keys", "chains"):
            listed = await client.get(f"/v1/admin/{section}", headers=AS_ADMIN)
            assert listed.status_code == 200
            answers.append(listed.text)
        alpha = await client.get("/v1/admin/providers/alpha", headers=AS_ADMIN)
        answers.append(alpha.text)
        masked = alpha.json()["api_key"]
        assert masked.endswith("...***")
        # Put back as shown: the configured key is kept, not replaced by the mask.
        body = {k: alpha.json()[k] for k in ("url", "models", "api_key", "output_rate")}
        put = await client.put("/v1/admin/providers/alpha", json=body, headers=AS_ADMIN)
        answers.append(put.text)
        assert put.json()["api_key"] == masked
        key = await client.get("/v1/admin/keys/team-a", headers=AS_ADMIN)
        answers.append(key.text)
        assert key.json()["key"].endswith("...***")
        bad = {"key": 5, "max_sats_per_day": -1}
        answers.append((await client.put("/v1/admin/keys/x", json=bad, headers=AS_ADMIN)).text)
        answers.append((await client.get("/v1/admin/keys", headers=AS_TEAM_B)).text)
    everything = "\n".join([*answers, caplog.text])
    for secret in SECRETS:
        assert secret not in everything


async def test_the_api_cannot_read_the_environment_or_store_what_it_cannot_show(
    tmp_path: Path,
) -> None:
    source = write_config(tmp_path)
    async with proxy_from(source) as (started, client):
        running = started.runtime.config
        # ${VAR} through the API would copy the proxy's environment into a key.
        peek = {"name": "peek", "key": "${ADMIN_TOKEN}"}
        response = await client.post("/v1/admin/keys", json=peek, headers=AS_ADMIN)
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "key"
        # A number past any real budget is refused before it is kept.
        huge = {"name": "huge", "key": "k-0123456789abcdef", "max_sats_per_day": 1e308}
        response = await client.post("/v1/admin/keys", json=huge, headers=AS_ADMIN)
        assert response.status_code == 400
        assert "$.keys[2].max_sats_per_day: must be at most" in response.text
        # Names go into URLs, logs and metric labels.
        provider = {"url": "http://x.example/v1"}
        response = await client.put("/v1/admin/providers/a%00b", json=provider, headers=AS_ADMIN)
        assert response.status_code == 400
        assert "name: must be printable characters" in response.text
        assert started.runtime.config is running
        assert (await client.get("/v1/admin/keys", headers=AS_ADMIN)).status_code == 200
