"""The config loader: what loads, and the message each mistake gets."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from arbstr_trio.config import ConfigError, KeySource, Strategy, Tier, load_config, parse_config
from arbstr_trio.config.apikey import ApiKey, convention_variable
from arbstr_trio.config.models import ListenAddress

REPO = Path(__file__).resolve().parent.parent

ARBSTR_EXAMPLE = """
[server]
listen = "127.0.0.1:8080"

[database]
path = "./arbstr.db"

[[providers]]
name = "provider-alpha"
url = "https://alpha.example.com/v1"
api_key = "${ALPHA_KEY}"
models = ["gpt-4o", "claude-3.5-sonnet"]
input_rate = 10
output_rate = 30
base_fee = 1
tier = "frontier"

[[providers]]
name = "provider beta"
url = "https://beta.example.com/v1/"
models = ["gpt-4o"]
input_rate = 8
output_rate = 35

[policies]
default_strategy = "cheapest"

[[policies.rules]]
name = "code_generation"
allowed_models = ["claude-3.5-sonnet", "gpt-4o"]
strategy = "lowest_cost"
max_sats_per_1m_output = 50
keywords = ["code", "function"]

[logging]
level = "debug"
log_requests = true
"""


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ=environ or {})
    return caught.value.problems


def provider(extra: str = "", name: str = "alpha") -> str:
    return f'[[providers]]\nname = "{name}"\nurl = "http://a.example/v1"\n{extra}\n'


def test_arbstr_format_loads_unchanged() -> None:
    loaded = parse_config(
        ARBSTR_EXAMPLE,
        environ={
            "ALPHA_KEY": "sk-alpha-0123456789",
            "ARBSTR_PROVIDER_BETA_API_KEY": "sk-beta-0123456789",
        },
    )
    config = loaded.config
    assert config.server.listen == ListenAddress("127.0.0.1", 8080)
    alpha, beta = config.providers
    assert alpha.tier is Tier.FRONTIER
    assert alpha.base_fee == Decimal(1)
    assert alpha.key_source is KeySource.ENV_EXPANDED
    assert alpha.api_key is not None
    assert alpha.api_key.reveal() == "sk-alpha-0123456789"
    assert beta.url == "https://beta.example.com/v1"  # trailing slash dropped
    assert beta.key_source is KeySource.CONVENTION
    assert config.policies.rules[0].strategy is Strategy.LOWEST_COST
    assert config.policies.rules[0].max_sats_per_1m_output == Decimal(50)


def test_shipped_configs_load() -> None:
    for path in sorted((REPO / "configs").glob("*.toml")):
        loaded = load_config(path, environ={"OPENAI_API_KEY": "sk-test-0123456789abcdef"})
        assert loaded.config.providers, path


def test_embedded_mock_config_is_configs_mock_toml() -> None:
    embedded = REPO / "arbstr_trio" / "data" / "mock.toml"
    assert embedded.read_text() == (REPO / "configs" / "mock.toml").read_text()


def test_empty_file_is_a_valid_config_with_defaults() -> None:
    config = parse_config("").config
    assert config.providers == ()
    assert str(config.server.listen) == "127.0.0.1:8080"
    assert config.database.path == "./arbstr.db"


def test_unknown_keys_are_named_by_path() -> None:
    found = problems(
        "[server]\nlistne = 'x'\n"
        + provider("colour = 'red'\n[providers.mock]\nchunk = 3")
        + "[extra]\n"
    )
    assert found == [
        "$.extra: unknown key",
        "$.providers[0].colour: unknown key",
        "$.providers[0].mock.chunk: unknown key",
        "$.server.listne: unknown key",
    ]


def test_bad_types_and_values_name_the_path() -> None:
    text = (
        provider("input_rate = 1")
        + provider(
            'input_rate = -1\noutput_rate = "cheap"\nmodels = "gpt-4o"\ntier = "mega"', "beta"
        )
        + "[logging]\nlog_requests = 1\n"
    )
    assert problems(text) == [
        "$.logging.log_requests: must be true or false, not an integer",
        "$.providers[1].input_rate: must be >= 0",
        "$.providers[1].models: must be an array of strings, not a string",
        "$.providers[1].output_rate: must be a number, not a string",
        "$.providers[1].tier: must be one of 'local', 'standard', 'frontier', got 'mega'",
    ]


def test_booleans_are_not_numbers() -> None:
    assert problems(provider("input_rate = true")) == [
        "$.providers[0].input_rate: must be a number, not a boolean"
    ]


def test_missing_required_keys() -> None:
    assert problems("[[providers]]\nurl = 'http://a/v1'\n") == [
        "$.providers[0].name: required key missing"
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://a.example/v1", "must be an http:// or https:// URL, got 'ftp://a.example/v1'"),
        ("a.example/v1", "must be an http:// or https:// URL, got 'a.example/v1'"),
        ("http:///v1", "must be an http:// or https:// URL, got 'http:///v1'"),
        ("http://a.example/v1?x=1", "must be a base URL without query or fragment"),
        ("https://user:pw@a.example/v1", "must not carry credentials; put the key in api_key"),
        ("ftp://u:pw@a.example/v1", "must not carry credentials; put the key in api_key"),
        ("https://a.example:99999/v1", "has a bad port: 'https://a.example:99999/v1'"),
    ],
)
def test_provider_url_must_be_http(url: str, message: str) -> None:
    text = f'[[providers]]\nname = "a"\nurl = "{url}"\n'
    assert problems(text) == [f"$.providers[0].url: {message}"]


def test_duplicate_provider_names() -> None:
    text = provider() + provider(name="beta") + provider()
    assert problems(text) == [
        "$.providers[2].name: duplicate provider name 'alpha' (also $.providers[0])"
    ]


@pytest.mark.parametrize(
    "listen", ["localhost", "127.0.0.1:99999", ":8080", "::1:8080", "host:port"]
)
def test_bad_listen_address(listen: str) -> None:
    [found] = problems(f'[server]\nlisten = "{listen}"\n')
    assert found.startswith("$.server.listen: must be HOST:PORT")


@pytest.mark.parametrize(
    ("listen", "host", "port"), [("0.0.0.0:0", "0.0.0.0", 0), ("[::1]:8080", "::1", 8080)]
)
def test_good_listen_address(listen: str, host: str, port: int) -> None:
    config = parse_config(f'[server]\nlisten = "{listen}"\n').config
    assert config.server.listen == ListenAddress(host, port)
    assert str(config.server.listen) == listen


def test_toml_syntax_error() -> None:
    [found] = problems("[server\nlisten = 1")
    assert found.startswith("TOML syntax error:")
    assert "line 1" in found


def test_mock_table_validation() -> None:
    assert problems(provider("[providers.mock]\nchunks = -2")) == [
        "$.providers[0].mock: chunks must be >= 0"
    ]


# --- secrets ---------------------------------------------------------------------------


def test_env_expansion_missing_variable_is_named() -> None:
    assert problems(provider('api_key = "${NOT_SET_ANYWHERE}"')) == [
        "$.providers[0].api_key: environment variable NOT_SET_ANYWHERE is not set"
    ]


def test_env_expansion_unclosed() -> None:
    assert problems(provider('api_key = "${OOPS"')) == [
        "$.providers[0].api_key: '${' without a closing '}'"
    ]


def test_env_expansion_within_text() -> None:
    config = parse_config(
        provider('api_key = "Bearer-${A}-${B}"'), environ={"A": "x", "B": "y"}
    ).config
    assert config.providers[0].api_key == ApiKey("Bearer-x-y")


def test_convention_variable_name() -> None:
    assert convention_variable("my-provider one") == "ARBSTR_MY_PROVIDER_ONE_API_KEY"


def test_convention_variable_is_used_when_no_key_configured() -> None:
    loaded = parse_config(provider(), environ={"ARBSTR_ALPHA_API_KEY": "sk-conv-0123456789"})
    [alpha] = loaded.config.providers
    assert alpha.key_source is KeySource.CONVENTION
    assert alpha.api_key == ApiKey("sk-conv-0123456789")
    assert loaded.warnings == ()


def test_literal_key_is_used_with_a_warning_that_never_shows_it() -> None:
    secret = "sk-literal-SECRET-0123456789"
    loaded = parse_config(provider(f'api_key = "{secret}"'))
    [alpha] = loaded.config.providers
    assert alpha.key_source is KeySource.LITERAL
    assert alpha.api_key == ApiKey(secret)
    [warning] = loaded.warnings
    assert "ARBSTR_ALPHA_API_KEY" in warning
    assert secret not in warning
    assert secret not in repr(loaded)


def test_convention_variable_overrides_a_literal_key() -> None:
    loaded = parse_config(
        provider('api_key = "sk-in-file-0123456789"'),
        environ={"ARBSTR_ALPHA_API_KEY": "sk-env-0123456789"},
    )
    assert loaded.config.providers[0].api_key == ApiKey("sk-env-0123456789")
    assert "ignored" in loaded.warnings[0]


def test_no_key_at_all_is_allowed() -> None:
    [alpha] = parse_config(provider()).config.providers
    assert alpha.api_key is None
    assert alpha.key_source is KeySource.NONE


def test_api_key_must_be_a_string() -> None:
    assert problems(provider("api_key = 5")) == ["$.providers[0].api_key: must be a string"]


def test_key_source_cannot_be_set_in_the_file() -> None:
    assert problems(provider('key_source = "literal"')) == [
        "$.providers[0].key_source: unknown key"
    ]


def test_api_key_redaction() -> None:
    key = ApiKey("sk-abcdef-0123456789")
    for shown in (repr(key), str(key), f"{key}", f"{key:>30}", "%s" % key):  # noqa: UP031
        assert "0123456789" not in shown
        assert "sk-abc" not in shown
    assert key.masked() == "sk-abc...***"
    assert ApiKey("short-key").masked() == "...***"
    with pytest.raises(TypeError):
        __import__("pickle").dumps(key)


def test_permission_warning(tmp_path: Path) -> None:
    path = tmp_path / "arbstr.toml"
    path.write_text(provider())
    os.chmod(path, 0o644)
    [warning] = load_config(path).warnings
    assert "chmod 600" in warning
    assert "0644" in warning
    os.chmod(path, 0o600)
    assert load_config(path).warnings == ()


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.toml")
    assert caught.value.problems == ["cannot read the file: no such file or directory"] or (
        "cannot read the file" in caught.value.problems[0]
    )
    assert "missing.toml" in caught.value.report()


def test_provider_tables_must_be_an_array() -> None:
    assert problems('providers = "abc"\n') == [
        "$.providers: must be an array of tables, not a string"
    ]


@pytest.mark.parametrize("key", [" sk-leading", "sk-trailing ", "sk-has\\nnewline", "sk-\\u00e9"])
def test_keys_that_cannot_be_sent_are_refused_without_being_shown(key: str) -> None:
    text = f'[[providers]]\nname = "a"\nurl = "https://a.example/v1"\napi_key = "{key}"\n'
    [message] = problems(text)
    assert message.startswith("$.providers[0].api_key: must be printable characters")
    assert key.strip() not in message
    assert "sk-" not in message


def test_ca_bundle_must_be_readable(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    assert problems(f'[upstream]\nca_bundle = "{missing}"\n') == [
        f"$.upstream.ca_bundle: {str(missing)!r} is not a readable file"
    ]


def test_model_rates_override_the_providers_rates_per_model() -> None:
    text = provider() + 'models = ["a", "b"]\nmodel_rates = { a = { output_rate = 9 } }\n'
    [loaded] = parse_config(text).config.providers
    assert loaded.model_rates["a"].output_rate == Decimal(9)
    assert loaded.model_rates["a"].input_rate is None  # the provider's own


def test_model_rates_must_name_a_served_model_and_be_tables() -> None:
    text = provider() + 'models = ["a"]\nmodel_rates = { z = { input_rate = 1 }, a = 5 }\n'
    assert problems(text) == [
        "$.providers[0].model_rates['a']: must be a table, not an integer",
    ]
    text = provider() + 'models = ["a"]\nmodel_rates = { z = { input_rate = -1 } }\n'
    assert problems(text) == ["$.providers[0].model_rates['z'].input_rate: must be >= 0"]
    text = provider() + 'models = ["a"]\nmodel_rates = { z = { input_rate = 1 } }\n'
    assert problems(text) == [
        "$.providers[0].model_rates['z']: provider 'alpha' does not serve this model"
    ]
