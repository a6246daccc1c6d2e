"""Chat completions end to end: the official SDK -> the proxy under Hypercorn -> mocks."""

from __future__ import annotations

from pathlib import Path

import orjson
import trio
import trustme

from arbstr_trio.config.models import ProviderConfig
from arbstr_trio.mock.behaviour import MockBehaviour
from arbstr_trio.mock.provider import MockProvider
from arbstr_trio.mock.server import serve_mock
from arbstr_trio.pricing import Rates, Usage, cost_msat, format_sats, msat_to_sats
from tests.conftest import (
    TWO_PROVIDERS,
    chat_body,
    config_from,
    http_client,
    openai_client,
    running_proxy,
)


def expected_cost(provider: ProviderConfig, prompt: int, completion: int) -> int:
    rates = Rates(provider.input_rate, provider.output_rate, provider.base_fee)
    return cost_msat(rates, Usage(prompt, completion))


async def test_non_streaming_goes_to_the_cheaper_provider_with_cost_headers() -> None:
    async with running_proxy(TWO_PROVIDERS) as started:
        client = openai_client(started)
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "What is a satoshi?"}]
        )
        completion = raw.parse()
        alpha = started.config.provider("alpha")
        assert raw.headers["x-arbstr-provider"] == "alpha"
        assert completion.usage is not None
        cost = expected_cost(
            alpha, completion.usage.prompt_tokens, completion.usage.completion_tokens
        )
        assert raw.headers["x-arbstr-cost-sats"] == format_sats(cost)
        assert int(raw.headers["x-arbstr-latency-ms"]) >= 0
        assert len(raw.headers["x-arbstr-request-id"]) == 32
        assert completion.choices[0].message.content
        assert completion.id.startswith("chatcmpl-")
        assert len(started.mocks["alpha"].received) == 1
        assert len(started.mocks["beta"].received) == 0
        await client.close()


async def test_body_is_forwarded_unchanged_and_returned_unchanged() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        body = orjson.dumps(chat_body(temperature=0.3, x_vendor_extension={"keep": [1, 2]}))
        response = await client.post("/v1/chat/completions", content=body)
        assert response.status_code == 200
        [received] = started.mocks["alpha"].received
        assert received.body == body  # the client's own bytes
        assert response.json()["object"] == "chat.completion"
        assert response.headers["content-length"] == str(len(response.content))


async def test_request_id_idempotency_key_and_credentials() -> None:
    config = config_from(TWO_PROVIDERS, environ={"ARBSTR_ALPHA_API_KEY": "sk-alpha-provider-key"})
    async with running_proxy(config) as started, http_client(started) as client:
        response = await client.post(
            "/v1/chat/completions",
            json=chat_body(),
            headers={
                "authorization": "Bearer client-secret-key",
                "x-api-key": "client-secret-key",
                "cookie": "session=abc",
                "x-request-id": "client-trace-42",
                "x-team": "research",
            },
        )
        assert response.status_code == 200
        assert response.headers["x-arbstr-request-id"] == "client-trace-42"
        [received] = started.mocks["alpha"].received
        assert received.headers["authorization"] == "Bearer sk-alpha-provider-key"
        assert received.headers["idempotency-key"] == "arbstr-client-trace-42"
        assert received.headers["x-request-id"] == "client-trace-42"
        assert received.headers["x-team"] == "research"
        for leaked in ("x-api-key", "cookie"):
            assert leaked not in received.headers
        assert "client-secret-key" not in repr(received.headers)

        # x-correlation-id is echoed too; a client's Idempotency-Key is kept.
        response = await client.post(
            "/v1/chat/completions",
            json=chat_body(),
            headers={"x-correlation-id": "corr-7", "idempotency-key": "client-key-1"},
        )
        assert response.headers["x-arbstr-request-id"] == "corr-7"
        assert started.mocks["alpha"].received[-1].headers["idempotency-key"] == "client-key-1"


async def test_stream_without_usage_option_keeps_the_common_loop_working() -> None:
    async with running_proxy(TWO_PROVIDERS) as started:
        client = openai_client(started)
        async with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        ) as response:
            assert response.headers["x-arbstr-streaming"] == "true"
            assert response.headers["x-arbstr-provider"] == "alpha"
            request_id = response.headers["x-arbstr-request-id"]
            chunks = [chunk async for chunk in await response.parse()]
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
        assert text == "the quick brown fox jumps"
        assert all(chunk.usage is None for chunk in chunks)
        metadata = chunks[-1].model_extra["arbstr"]  # type: ignore[index]
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert all("arbstr" not in (chunk.model_extra or {}) for chunk in chunks[:-1])

        # The proxy asked for usage on the client's behalf, and priced the stream with it.
        [received] = started.mocks["alpha"].received
        assert received.json()["stream_options"] == {"include_usage": True}
        prompt = received_prompt_tokens(received.json())
        cost = expected_cost(started.config.provider("alpha"), prompt, 5)
        assert metadata["cost_sats"] == msat_to_sats(cost)
        assert metadata["provider"] == "alpha"
        assert metadata["request_id"] == request_id
        assert metadata["latency_ms"] >= metadata["ttfb_ms"] >= 0
        await client.close()


async def test_stream_with_usage_option_gets_usage_and_metadata() -> None:
    async with running_proxy(TWO_PROVIDERS) as started:
        client = openai_client(started)
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        last = chunks[-1]
        assert last.choices == []
        assert last.usage is not None
        assert last.usage.completion_tokens == 5
        cost = expected_cost(started.config.provider("alpha"), last.usage.prompt_tokens, 5)
        assert last.model_extra is not None
        assert last.model_extra["arbstr"]["cost_sats"] == msat_to_sats(cost)
        assert chunks[-2].choices[0].finish_reason == "stop"
        await client.close()


async def test_stream_has_exactly_one_done() -> None:
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        response = await client.post("/v1/chat/completions", json=chat_body(stream=True))
        assert response.text.count("data: [DONE]") == 1
        assert response.text.endswith("data: [DONE]\n\n")


async def test_crlf_and_spaceless_upstream_is_relayed_correctly() -> None:
    config = TWO_PROVIDERS.replace(
        "[providers.mock]\nchunks = 5",
        '[providers.mock]\nchunks = 5\nline_ending = "crlf"\ndata_space = false',
        1,
    )
    async with running_proxy(config) as started:
        client = openai_client(started)
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
        assert (
            "".join(c.choices[0].delta.content or "" for c in chunks) == "the quick brown fox jumps"
        )
        assert chunks[-1].model_extra is not None
        assert chunks[-1].model_extra["arbstr"]["cost_sats"] is not None
        await client.close()


async def test_stream_is_relayed_as_it_arrives_not_buffered() -> None:
    # The mock sends three events, then stalls with the connection open. If the proxy
    # buffered the stream, the client would see nothing until the stall ended.
    async with running_proxy(TWO_PROVIDERS) as started, http_client(started) as client:
        headers = {"x-mock": "stall_ms=60000; stall_after=3"}
        async with client.stream(
            "POST", "/v1/chat/completions", json=chat_body(stream=True), headers=headers
        ) as response:
            assert response.status_code == 200
            seen = ""
            async for text in response.aiter_text():
                seen += text
                if seen.count("data: ") >= 3:
                    break
        assert '"content":" quick"' in seen
        # Leaving mid-stream cancels the upstream request: the mock sees the hang-up.
        with trio.fail_after(5):
            await started.mocks["alpha"].wait_for_disconnects(1)


async def test_model_map_sends_the_providers_name_for_the_model() -> None:
    config = TWO_PROVIDERS.replace(
        'models = ["gpt-4o-mini", "gpt-4o"]\ninput_rate = 150',
        'models = ["gpt-4o"]\n'
        'model_map = { "gpt-4o-mini" = "vendor/gpt-4o-mini-2024" }\n'
        "input_rate = 150",
    )
    async with running_proxy(config) as started, http_client(started) as client:
        response = await client.post("/v1/chat/completions", json=chat_body("gpt-4o-mini"))
        assert response.status_code == 200
        assert started.mocks["alpha"].received[-1].json()["model"] == "vendor/gpt-4o-mini-2024"


async def test_info_endpoints() -> None:
    config = config_from(TWO_PROVIDERS, environ={"ARBSTR_BETA_API_KEY": "sk-beta-0123456789abcdef"})
    async with running_proxy(config) as started, http_client(started) as client:
        models = (await client.get("/v1/models")).json()
        assert models["object"] == "list"
        assert [m["id"] for m in models["data"]] == ["gpt-4o", "gpt-4o-mini"]
        assert models["data"][0]["providers"] == ["alpha", "beta"]

        health = await client.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"

        providers = (await client.get("/providers")).json()["providers"]
        beta = providers[1]
        assert beta["api_key"] == "sk-bet...***"
        assert beta["key_source"] == "convention"
        assert beta["input_rate"] == 300
        assert providers[0]["api_key"] is None


async def test_models_of_an_any_model_provider_are_discovered() -> None:
    config = """
[[providers]]
name = "open"
url = "http://mock.invalid/v1"
"""
    async with running_proxy(config) as started, http_client(started) as client:
        models = (await client.get("/v1/models")).json()
        assert [m["id"] for m in models["data"]] == ["mock-model"]


async def test_tls_provider_with_a_private_ca(tmp_path: Path) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    server_context = __import__("ssl").create_default_context(__import__("ssl").Purpose.CLIENT_AUTH)
    certificate.configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    mock = MockProvider("secure", MockBehaviour(chunks=3), models=["gpt-4o-mini"])
    async with trio.open_nursery() as nursery:
        url = await nursery.start(
            lambda task_status: serve_mock(
                mock, ssl_context=server_context, task_status=task_status
            )
        )
        assert url.startswith("https://")
        config = f"""
[upstream]
ca_bundle = "{ca_file}"

[[providers]]
name = "secure"
url = "{url}"
models = ["gpt-4o-mini"]
input_rate = 1
output_rate = 2
"""
        async with running_proxy(config, mock=False) as started:
            client = openai_client(started)
            completion = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
            assert completion.choices[0].message.content == "the quick brown"
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            assert len([c async for c in stream]) == 5
            await client.close()
        # Without the CA the same provider is refused: the proxy verifies certificates.
        untrusted = config.replace(f'ca_bundle = "{ca_file}"', "")
        async with running_proxy(untrusted, mock=False) as started, http_client(started) as http:
            response = await http.post("/v1/chat/completions", json=chat_body())
            assert response.status_code == 502
            assert response.json()["error"]["code"] == "upstream_unreachable"
        nursery.cancel_scope.cancel()


def received_prompt_tokens(body: dict[str, object]) -> int:
    from arbstr_trio.tokens import estimate_prompt_tokens

    messages = body["messages"]
    assert isinstance(messages, list)
    return estimate_prompt_tokens(messages)
