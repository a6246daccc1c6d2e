"""Configuration: immutable models, and the loader that checks a TOML file into them."""

from arbstr_trio.config.apikey import ApiKey, KeySource
from arbstr_trio.config.load import ConfigError, LoadedConfig, load_config, parse_config
from arbstr_trio.config.models import (
    AuthConfig,
    ClientKey,
    Config,
    DatabaseConfig,
    ListenAddress,
    LoggingConfig,
    LogLevel,
    PoliciesConfig,
    PolicyRule,
    ProviderConfig,
    RoutingConfig,
    ServerConfig,
    Strategy,
    Tier,
    UpstreamConfig,
)

__all__ = [
    "ApiKey",
    "AuthConfig",
    "ClientKey",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "KeySource",
    "ListenAddress",
    "LoadedConfig",
    "LogLevel",
    "LoggingConfig",
    "PoliciesConfig",
    "PolicyRule",
    "ProviderConfig",
    "RoutingConfig",
    "ServerConfig",
    "Strategy",
    "Tier",
    "UpstreamConfig",
    "load_config",
    "parse_config",
]
