"""The configuration as immutable values: what a TOML file means once it has been checked.

Every class here is a frozen attrs value with defaults that make a minimal file work.
Field constraints live in the field's *type* (``Rate``, ``HttpUrl``, ``ListenAddress``)
so that the converter in :mod:`arbstr_trio.config.load` checks them while it still
knows the path to report (``$.providers[1].input_rate: must be >= 0``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from decimal import Decimal
from typing import NewType

import attrs

from arbstr_trio.config.apikey import ApiKey, KeySource
from arbstr_trio.mock.behaviour import MockBehaviour

__all__ = [
    "AdminConfig",
    "AuthConfig",
    "BreakerConfig",
    "ChainConfig",
    "ChainEntry",
    "ClientKey",
    "CompletionLimitField",
    "Config",
    "DatabaseConfig",
    "HttpUrl",
    "ListenAddress",
    "LogLevel",
    "LoggingConfig",
    "NonNegativeInt",
    "Percent",
    "PoliciesConfig",
    "PolicyRule",
    "PositiveInt",
    "ProviderConfig",
    "Rate",
    "RateLimitConfig",
    "RetryConfig",
    "RoutingConfig",
    "ServerConfig",
    "Strategy",
    "Tier",
    "UpstreamConfig",
]

Rate = NewType("Rate", Decimal)
"""Sats per 1M tokens (or per request, for ``base_fee``): a decimal >= 0."""
HttpUrl = NewType("HttpUrl", str)
"""An ``http://`` or ``https://`` URL with a host, without a trailing slash."""
PositiveInt = NewType("PositiveInt", int)
"""An integer >= 1."""
NonNegativeInt = NewType("NonNegativeInt", int)
"""An integer >= 0."""
Percent = NewType("Percent", float)
"""A number from 0 to 100."""

_FREE = Rate(Decimal(0))


@attrs.frozen
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class Tier(enum.Enum):
    LOCAL = "local"
    STANDARD = "standard"
    FRONTIER = "frontier"


class CompletionLimitField(enum.Enum):
    """The body field a provider reads its completion limit from, when the proxy sets one.

    OpenAI's reasoning models refuse ``max_tokens``; many other servers know only it.
    """

    MAX_TOKENS = "max_tokens"
    MAX_COMPLETION_TOKENS = "max_completion_tokens"


class Strategy(enum.Enum):
    """How a request's candidates are ordered: who is tried first, and who next."""

    CHEAPEST = "cheapest"
    LOWEST_COST = "cheapest"  # arbstr's name for cheapest: an alias, the same member
    LOWEST_LATENCY = "lowest_latency"
    ROUND_ROBIN = "round_robin"
    ORDERED = "ordered"

    @classmethod
    def _missing_(cls, value: object) -> Strategy | None:
        # arbstr's configs say "lowest_cost"; they load unchanged, meaning cheapest.
        return cls.CHEAPEST if value == "lowest_cost" else None


class LogLevel(enum.Enum):
    TRACE = "trace"
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    WARNING = "warning"
    ERROR = "error"


@attrs.frozen(kw_only=True)
class ServerConfig:
    listen: ListenAddress = ListenAddress("127.0.0.1", 8080)
    max_body_bytes: PositiveInt = PositiveInt(10 * 1024 * 1024)
    """Largest request body accepted; larger ones get 413 before they are read."""
    request_timeout_ms: PositiveInt = PositiveInt(30_000)
    """Deadline from request arrival to the provider's answer (first byte, for streams)."""
    stream_idle_timeout_ms: PositiveInt = PositiveInt(60_000)
    """Longest silence tolerated between two chunks of a stream."""
    client_send_timeout_ms: PositiveInt = PositiveInt(60_000)
    """How long a client may leave what it is sent unread before its connection is
    dropped (Linux: ``TCP_USER_TIMEOUT``), so a client that stops reading frees its slot."""
    graceful_shutdown_ms: PositiveInt = PositiveInt(10_000)
    """On SIGINT/SIGTERM, how long in-flight requests may take to finish."""
    max_in_flight: PositiveInt = PositiveInt(1024)
    """Chat requests served at once; more wait for a slot."""
    admission_wait_ms: NonNegativeInt = NonNegativeInt(1_000)
    """How long a request waits for a slot before 503 ``overloaded``."""


@attrs.frozen(kw_only=True)
class DatabaseConfig:
    path: str = "./arbstr.db"
    """The SQLite request log, created (and migrated) on start."""
    max_age_days: PositiveInt | None = None
    """Records older than this are pruned (checked hourly); None keeps everything."""


@attrs.frozen(kw_only=True)
class ModelRates:
    """One model's prices at a provider that prices its models differently; a rate left
    out is the provider's own."""

    input_rate: Rate | None = None
    output_rate: Rate | None = None
    base_fee: Rate | None = None


@attrs.frozen(kw_only=True)
class ProviderConfig:
    name: str
    url: HttpUrl
    api_key: ApiKey | None = None
    key_source: KeySource = attrs.field(default=KeySource.NONE, eq=False)
    models: tuple[str, ...] = ()
    """Models this provider serves; with ``model_map`` also empty, any model."""
    model_map: Mapping[str, str] = attrs.field(factory=dict)
    """Client model name -> the name this provider knows it by (also served)."""
    input_rate: Rate = _FREE
    output_rate: Rate = _FREE
    base_fee: Rate = _FREE
    model_rates: Mapping[str, ModelRates] = attrs.field(factory=dict)
    """Model (as clients ask for it) -> its own rates at this provider."""
    tier: Tier = Tier.STANDARD
    requests_per_minute: PositiveInt | None = None
    requests_per_day: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None
    max_concurrent: PositiveInt | None = None
    completion_limit_field: CompletionLimitField = CompletionLimitField.MAX_TOKENS
    """Where the proxy puts the completion cap it sets for budgeted requests."""
    mock: MockBehaviour | None = None
    """How ``--mock`` answers for this provider; ignored without ``--mock``."""

    @property
    def serves_any_model(self) -> bool:
        return not self.models and not self.model_map

    def serves(self, model: str) -> bool:
        return self.serves_any_model or model in self.models or model in self.model_map

    def upstream_model(self, model: str) -> str:
        return self.model_map.get(model, model)


@attrs.frozen(kw_only=True)
class PolicyRule:
    """A named set of constraints, chosen by ``X-Arbstr-Policy`` or by its keywords."""

    name: str
    allowed_models: tuple[str, ...] = ()
    """Models a request under this policy may ask for; empty: any."""
    strategy: Strategy | None = None
    """How candidates are ordered; None: ``policies.default_strategy``."""
    max_sats_per_1m_output: Rate | None = None
    """Candidates whose output rate for the model is above this are left out."""
    max_cost_sats: Rate | None = None
    """Candidates whose estimated cost for the request is above this are left out."""
    hedge_after_ms: PositiveInt | None = None
    """This policy's hedge delay; None: ``retry.hedge_after_ms``."""
    keywords: tuple[str, ...] = ()
    """Whole words (any case) in the user's messages that choose this policy."""


@attrs.frozen(kw_only=True)
class PoliciesConfig:
    default_strategy: Strategy = Strategy.CHEAPEST
    rules: tuple[PolicyRule, ...] = ()


@attrs.frozen(kw_only=True)
class ChainEntry:
    provider: str
    model: str
    """The model as this provider is asked for it (mapped by its ``model_map`` if listed)."""


@attrs.frozen(kw_only=True)
class ChainConfig:
    """A name clients use as a model, served by its entries (429chain's waterfall)."""

    name: str
    entries: tuple[ChainEntry, ...]
    strategy: Strategy = Strategy.ORDERED


@attrs.frozen(kw_only=True)
class LoggingConfig:
    level: LogLevel = LogLevel.INFO
    log_requests: bool = True


@attrs.frozen(kw_only=True)
class RoutingConfig:
    default_completion_tokens: PositiveInt = PositiveInt(256)
    """Completion tokens assumed when ranking a request that sets no ``max_tokens``."""
    budget_completion_tokens: PositiveInt = PositiveInt(4096)
    """The completion cap set on a request of a key with a budget when the client set
    none: a budget can only hold against answers of bounded length."""


@attrs.frozen(kw_only=True)
class RetryConfig:
    max_attempts_per_provider: PositiveInt = PositiveInt(2)
    """Attempts on one provider for one request (1: no retry on the same provider)."""
    backoff_base_ms: NonNegativeInt = NonNegativeInt(100)
    backoff_max_ms: NonNegativeInt = NonNegativeInt(2_000)
    budget_percent: Percent = Percent(20.0)
    """Retries in flight at most this share of requests in flight (Envoy's retry budget)."""
    min_retry_concurrency: NonNegativeInt = NonNegativeInt(3)
    """Retries always allowed in flight, however few requests there are."""
    hedge_after_ms: PositiveInt | None = None
    """Start the next candidate too if the first has not answered by then."""
    attempt_timeout_ms: PositiveInt | None = None
    """One attempt's allowance to its usable answer (a stream's first bytes); then it is a
    timeout, counted against the provider, and the next attempt starts. None: the whole
    deadline, as Envoy's per-try timeout defaults to the route's."""


@attrs.frozen(kw_only=True)
class BreakerConfig:
    failure_threshold: PositiveInt = PositiveInt(5)
    """Consecutive failures that open a provider's breaker."""
    open_ms: PositiveInt = PositiveInt(30_000)
    """How long it stays open before one probe request is let through."""


@attrs.frozen(kw_only=True)
class RateLimitConfig:
    default_cooldown_ms: PositiveInt = PositiveInt(30_000)
    """Cooldown after a 429 that says nothing of when to come back."""


@attrs.frozen(kw_only=True)
class UpstreamConfig:
    ca_bundle: str | None = None
    """PEM file of extra certificate authorities to trust for https providers."""
    connect_timeout_ms: PositiveInt = PositiveInt(10_000)
    max_connections: PositiveInt = PositiveInt(512)
    max_keepalive_connections: PositiveInt = PositiveInt(128)
    keepalive_expiry_ms: PositiveInt = PositiveInt(30_000)


@attrs.frozen(kw_only=True)
class ClientKey:
    """A key a client presents to use the proxy; only its ``name`` is ever recorded."""

    name: str
    key: ApiKey
    key_source: KeySource = attrs.field(default=KeySource.LITERAL, eq=False)
    max_sats_per_day: Rate | None = None
    """Sats (a decimal >= 0) this key may spend per UTC calendar day; None: no limit."""
    max_sats_per_month: Rate | None = None
    """Sats this key may spend per UTC calendar month; None: no limit."""


@attrs.frozen(kw_only=True)
class AuthConfig:
    """Which endpoints stay open when ``[[keys]]`` are configured (without keys, all are)."""

    public_health: bool = True
    """``/health`` without a key: load balancers and orchestrators probe it bare."""
    public_metrics: bool = True
    """``/metrics`` without a key: Prometheus scrapers rarely carry one."""


@attrs.frozen(kw_only=True)
class AdminConfig:
    """``[admin]``: the runtime admin API under ``/v1/admin/``, off without a token."""

    token: ApiKey | None = None
    """``Authorization: Bearer <token>`` for ``/v1/admin/*``; ``${VAR}`` allowed."""


@attrs.frozen(kw_only=True)
class Config:
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    providers: tuple[ProviderConfig, ...] = ()
    policies: PoliciesConfig = PoliciesConfig()
    chains: tuple[ChainConfig, ...] = ()
    logging: LoggingConfig = LoggingConfig()
    routing: RoutingConfig = RoutingConfig()
    upstream: UpstreamConfig = UpstreamConfig()
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    ratelimit: RateLimitConfig = RateLimitConfig()
    keys: tuple[ClientKey, ...] = ()
    """Client keys; with none, the proxy is open to whoever can reach it."""
    auth: AuthConfig = AuthConfig()
    admin: AdminConfig = AdminConfig()

    def chain(self, name: str) -> ChainConfig | None:
        for chain in self.chains:
            if chain.name == name:
                return chain
        return None

    def provider(self, name: str) -> ProviderConfig:
        for provider in self.providers:
            if provider.name == name:
                return provider
        raise KeyError(name)
