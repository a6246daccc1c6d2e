"""Every failure a client can be told about, and the one place each becomes an HTTP answer.

The hierarchy is small on purpose: a handler raises the most specific class it knows,
and the web layer turns any of them into the OpenAI error envelope
``{"error": {"message", "type", "param", "code"}}`` with the status drawn here::

    ArbstrError                         status  type
    ├── ClientError                     400     invalid_request_error
    │   ├── RequestTooLarge             413     invalid_request_error
    │   ├── BodyTimeout                 408       the body did not arrive in time
    │   ├── ClientDisconnected          499       the client left mid-body (logged only)
    │   ├── ModelNotFound               404     invalid_request_error
    │   ├── NotFound                    404     invalid_request_error
    │   │   └── RouteNotFound           404       no such endpoint
    │   └── MethodNotAllowed            405     invalid_request_error
    ├── AuthenticationError             401     authentication_error
    │   ├── MissingApiKey               401       no client key (+ WWW-Authenticate)
    │   └── InvalidApiKey               403       a key that is not configured
    ├── UpstreamRejected                4xx     (the provider's own error, passed back)
    ├── RateLimited                     429     rate_limit_error (+ Retry-After)
    │   └── BudgetExceeded              429       the client key's budget is spent
    ├── Unavailable                     503     service_unavailable (+ Retry-After)
    │   ├── NoHealthyProvider           503       every candidate's breaker is open
    │   └── Overloaded                  503       no slot free within admission_wait_ms
    ├── DeadlineExceeded                504     timeout_error
    ├── UpstreamError                   502     upstream_error
    │   ├── UpstreamUnreachable         502       connect failed or refused
    │   ├── UpstreamAuthFailed          502       the provider refused *our* key
    │   ├── UpstreamProtocolError       502       reset, truncated or unparsable answer
    │   ├── UpstreamStatusError         502       5xx or another status we cannot pass on
    │   └── UpstreamTimeout             504       no answer before the deadline
    └── InternalError                   500     server_error

Messages are written for the person reading the client's logs: they say what was wrong
and, where it helps, what to do. They never contain a provider's key, nor a client's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import orjson

__all__ = [
    "ArbstrError",
    "AuthenticationError",
    "BodyTimeout",
    "BudgetExceeded",
    "ClientDisconnected",
    "ClientError",
    "DeadlineExceeded",
    "InternalError",
    "InvalidApiKey",
    "MethodNotAllowed",
    "MissingApiKey",
    "ModelNotFound",
    "NoHealthyProvider",
    "NotFound",
    "Overloaded",
    "RateLimited",
    "RequestTooLarge",
    "RouteNotFound",
    "Unavailable",
    "UpstreamAuthFailed",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamRejected",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "UpstreamUnreachable",
]

Header = tuple[bytes, bytes]


class ArbstrError(Exception):
    """Base of every error that is answered to a client."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Sequence[Header] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = tuple(headers)
        self.details: dict[str, Any] = {}
        """Extra members of the error object (``attempts``), beyond the four OpenAI keys."""

    def status_code(self) -> int:
        return self.status

    def add_headers(self, *headers: Header) -> None:
        self.headers = (*self.headers, *headers)

    def error_object(self) -> dict[str, Any]:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        if self.details:
            error.update(self.details)
        return error

    def envelope(self) -> bytes:
        return orjson.dumps({"error": self.error_object()})


class ClientError(ArbstrError):
    """The request itself is wrong; sending it again unchanged will fail again."""

    status = 400
    type = "invalid_request_error"
    default_code = "invalid_request"


class PolicyRefusal(ClientError):
    """A policy's limits leave the request nothing to run on; names the policy, so the
    request log can say which one refused."""

    def __init__(self, message: str, *, policy: str, param: str, code: str) -> None:
        super().__init__(message, param=param, code=code)
        self.policy = policy


class RequestTooLarge(ClientError):
    status = 413
    default_code = "request_too_large"


class BodyTimeout(ClientError):
    status = 408
    default_code = "request_timeout"


class ClientDisconnected(ClientError):
    """The client left before its request was whole; nobody is there to read this.
    499 is nginx's status for it, and what the request log records."""

    status = 499
    default_code = "client_disconnected"


class ModelNotFound(ClientError):
    status = 404
    default_code = "model_not_found"


class NotFound(ClientError):
    """What the URL names does not exist: an endpoint, a logged request."""

    status = 404
    default_code = "not_found"


class RouteNotFound(NotFound):
    pass


class MethodNotAllowed(ClientError):
    status = 405
    default_code = "method_not_allowed"


class AuthenticationError(ArbstrError):
    """The client did not prove it may use the proxy (``[[keys]]`` are configured)."""

    status = 401
    type = "authentication_error"
    default_code = "authentication_failed"


class MissingApiKey(AuthenticationError):
    default_code = "missing_api_key"

    def __init__(self, message: str) -> None:
        # RFC 9110 11.6.1: a 401 names the scheme that would be accepted.
        super().__init__(message, headers=[(b"www-authenticate", b"Bearer")])


class InvalidApiKey(AuthenticationError):
    status = 403
    default_code = "invalid_api_key"


class RateLimited(ArbstrError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limited"


class BudgetExceeded(RateLimited):
    """The client key's daily or monthly budget cannot cover this request's worst case.

    A 429 rather than a 402 or 403: it passes with time, and Retry-After says when,
    which is what OpenAI clients already know how to wait for.
    """

    default_code = "budget_exceeded"


class Unavailable(ArbstrError):
    status = 503
    type = "service_unavailable"
    default_code = "unavailable"


class NoHealthyProvider(Unavailable):
    default_code = "no_healthy_provider"


class Overloaded(Unavailable):
    default_code = "overloaded"


class DeadlineExceeded(ArbstrError):
    status = 504
    type = "timeout_error"
    default_code = "deadline_exceeded"


class UpstreamRejected(ArbstrError):
    """A provider answered with a 4xx that is the client's fault: pass it back as it was.

    The provider's error object is kept (so the client sees the provider's own words and
    code) but normalised to carry the four envelope keys every OpenAI client expects.
    """

    type = "invalid_request_error"

    def __init__(self, status: int, error: Mapping[str, Any], *, provider: str) -> None:
        message = error.get("message")
        if not isinstance(message, str) or not message:
            message = f"provider {provider!r} rejected the request (HTTP {status})"
        super().__init__(message)
        self._status = status
        self.provider = provider
        self._error = dict(error)

    def status_code(self) -> int:
        return self._status

    def error_object(self) -> dict[str, Any]:
        error = dict(self._error)
        error["message"] = self.message
        error.setdefault("type", self.type)
        error.setdefault("param", None)
        error.setdefault("code", None)
        error.update(self.details)
        return error


class UpstreamError(ArbstrError):
    """Base for a provider that failed us; the client did nothing wrong."""

    status = 502
    type = "upstream_error"
    default_code = "upstream_error"

    def __init__(self, message: str, *, provider: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.provider = provider


class UpstreamUnreachable(UpstreamError):
    default_code = "upstream_unreachable"


class UpstreamAuthFailed(UpstreamError):
    default_code = "upstream_auth_failed"


class UpstreamProtocolError(UpstreamError):
    default_code = "upstream_protocol_error"


class UpstreamStatusError(UpstreamError):
    def __init__(self, message: str, *, provider: str, upstream_status: int) -> None:
        super().__init__(message, provider=provider, code=f"upstream_http_{upstream_status}")
        self.upstream_status = upstream_status


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
    default_code = "upstream_timeout"


class InternalError(ArbstrError):
    """A bug of ours. The client learns only the request id to report it with."""

    default_code = "internal_error"
