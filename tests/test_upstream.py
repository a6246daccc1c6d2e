"""What a provider receives, and what its failures become."""

from __future__ import annotations

import pytest

from arbstr_trio.errors import (
    RateLimited,
    UpstreamAuthFailed,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from arbstr_trio.http1 import TransportError, TransportKind
from arbstr_trio.upstream import error_for_status, forward_headers, map_transport_errors

CLIENT_HEADERS = [
    (b"host", b"proxy.local"),
    (b"authorization", b"Bearer client-secret"),
    (b"x-api-key", b"client-secret"),
    (b"cookie", b"session=1"),
    (b"connection", b"keep-alive, x-custom-hop"),
    (b"x-custom-hop", b"1"),
    (b"keep-alive", b"timeout=5"),
    (b"transfer-encoding", b"chunked"),
    (b"content-length", b"10"),
    (b"x-arbstr-policy", b"fast"),
    (b"user-agent", b"OpenAI/Python"),
    (b"x-stainless-lang", b"python"),
    (b"openai-organization", b"org-client"),
    (b"idempotency-key", b"client-chosen"),
]


def test_client_credentials_and_hop_by_hop_headers_stay_behind() -> None:
    headers = dict(
        forward_headers(
            CLIENT_HEADERS,
            api_key="sk-provider",
            request_id="r1",
            idempotency_key="k1",
        )
    )
    assert headers == {
        b"user-agent": b"OpenAI/Python",
        b"x-stainless-lang": b"python",
        b"content-type": b"application/json",
        b"idempotency-key": b"k1",
        b"x-request-id": b"r1",
        b"authorization": b"Bearer sk-provider",
        b"accept-encoding": b"identity",
    }


def test_no_key_means_no_authorization() -> None:
    headers = forward_headers(CLIENT_HEADERS, api_key=None, request_id="r", idempotency_key="k")
    names = [name for name, _ in headers]
    assert b"authorization" not in names
    assert (b"accept-encoding", b"identity") in headers


def _error(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> object:
    return error_for_status("alpha", status, headers or {}, body)


@pytest.mark.parametrize("status", [401, 403])
def test_refused_provider_key_is_a_502_naming_the_variable(status: int) -> None:
    error = _error(status, b'{"error": {"message": "Incorrect API key provided: sk-abc***xyz"}}')
    assert isinstance(error, UpstreamAuthFailed)
    assert error.status_code() == 502
    assert "ARBSTR_ALPHA_API_KEY" in error.message
    assert "sk-abc" not in error.message


def test_client_fault_is_passed_back_with_the_providers_words() -> None:
    error = _error(
        400, b'{"error": {"message": "bad temperature", "param": "temperature", "code": "x"}}'
    )
    assert isinstance(error, UpstreamRejected)
    assert error.status_code() == 400
    assert error.error_object() == {
        "message": "bad temperature",
        "param": "temperature",
        "code": "x",
        "type": "invalid_request_error",
    }


def test_client_fault_without_json_body() -> None:
    error = _error(422, b"unprocessable")
    assert isinstance(error, UpstreamRejected)
    assert error.error_object()["message"] == "unprocessable"
    empty = _error(404)
    assert isinstance(empty, UpstreamRejected)
    assert empty.error_object()["message"] == "provider 'alpha' rejected the request (HTTP 404)"


def test_rate_limit_keeps_a_sane_retry_after() -> None:
    error = _error(429, headers={"retry-after": "7"})
    assert isinstance(error, RateLimited)
    assert error.headers == ((b"retry-after", b"7"),)
    too_long = _error(429, headers={"retry-after": "x" * 100})
    assert isinstance(too_long, RateLimited)
    assert too_long.headers == ()


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504, 302])
def test_provider_failures_are_502(status: int) -> None:
    error = _error(status)
    assert isinstance(error, UpstreamStatusError)
    assert error.status_code() == 502
    assert error.code == f"upstream_http_{status}"


def test_a_refused_header_is_reported_without_its_value() -> None:
    with pytest.raises(UpstreamProtocolError) as caught, map_transport_errors("alpha"):
        raise TransportError(
            TransportKind.REFUSED_BY_LIBRARY, "Illegal header value b'Bearer sk-secret '"
        )
    assert "sk-secret" not in caught.value.message
    assert "refused a header" in caught.value.message


@pytest.mark.parametrize(
    ("kind", "error", "words"),
    [
        (TransportKind.UNREACHABLE, UpstreamUnreachable, "could not be reached: why"),
        (TransportKind.TIMEOUT, UpstreamTimeout, "stopped answering: why"),
        (TransportKind.PROTOCOL, UpstreamProtocolError, "broke the connection: why"),
    ],
)
def test_each_transport_failure_has_its_error(
    kind: TransportKind, error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as caught, map_transport_errors("alpha"):
        raise TransportError(kind, "why")
    assert f"provider 'alpha' {words}" in str(caught.value)
