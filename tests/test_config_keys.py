"""``[[keys]]`` and ``[auth]`` in the config: what loads, and the message each mistake gets.

Every message names the path of the mistake and, where two entries clash, their names;
none shows a key.
"""

from __future__ import annotations

import pytest

from arbstr_trio.config import ConfigError, KeySource, parse_config
from arbstr_trio.config.apikey import ApiKey

SECRET = "client-key-5e4d3c2b1a09f8e7"


def keys(*entries: tuple[object, object]) -> str:
    """``[[keys]]`` tables; an entry's None leaves that key out."""
    tables = []
    for name, key in entries:
        lines = ["[[keys]]"]
        if name is not None:
            lines.append(f"name = {name}")
        if key is not None:
            lines.append(f"key = {key}")
        tables.append("\n".join(lines))
    return "\n\n".join(tables) + "\n"


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ=environ or {})
    assert SECRET not in caught.value.report()
    return caught.value.problems


def test_keys_load_from_the_environment_and_as_literals_with_a_warning() -> None:
    text = keys(('"team-a"', '"${TEAM_A_KEY}"'), ('"team b"', f'"{SECRET}"'))
    loaded = parse_config(text, environ={"TEAM_A_KEY": "from-env-0123456789"})
    team_a, team_b = loaded.config.keys
    assert (team_a.name, team_a.key, team_a.key_source) == (
        "team-a",
        ApiKey("from-env-0123456789"),
        KeySource.ENV_EXPANDED,
    )
    assert (team_b.name, team_b.key_source) == ("team b", KeySource.LITERAL)
    assert team_b.key.reveal() == SECRET
    assert loaded.warnings == (
        "client key 'team b': key is written in the config file; keep secrets out of files: "
        'export TEAM_B_KEY=... and write key = "${TEAM_B_KEY}"',
    )
    assert SECRET not in repr(loaded)


def test_auth_defaults_keep_health_and_metrics_public() -> None:
    config = parse_config("", environ={}).config
    assert config.keys == ()
    assert (config.auth.public_health, config.auth.public_metrics) == (True, True)
    closed = parse_config("[auth]\npublic_health = false\npublic_metrics = false\n", environ={})
    assert (closed.config.auth.public_health, closed.config.auth.public_metrics) == (False, False)


def test_a_missing_variable_is_reported_as_for_provider_keys() -> None:
    text = keys(('"a"', '"${NOPE}"')) + (
        '[[providers]]\nname = "p"\nurl = "http://p.example/v1"\napi_key = "${NOPE}"\n'
    )
    assert problems(text) == [
        "$.keys[0].key: environment variable NOPE is not set",
        "$.providers[0].api_key: environment variable NOPE is not set",
    ]


def test_names_and_keys_are_required_and_typed() -> None:
    text = keys((None, f'"{SECRET}"'), ('"b"', None), ("1", "2"), ('"d"', '"x"'))
    text += '[auth]\npublic_health = "no"\ncolour = 1\n'
    assert problems(text) == [
        "$.auth.colour: unknown key",
        "$.auth.public_health: must be true or false, not a string",
        "$.keys[0].name: required key missing",
        "$.keys[1].key: required key missing",
        "$.keys[2].key: must be a string",
        "$.keys[2].name: must be a string, not an integer",
    ]
    assert problems('keys = "x"\n') == ["$.keys: must be an array of tables, not a string"]
    assert problems(keys(('"a"', '"x"')).replace("[[keys]]", "[[keys]]\nkey_source = 1")) == [
        "$.keys[0].key_source: unknown key"
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('""', "$.keys[0].key: must not be empty (from literal)"),
        ('"${EMPTY}"', "$.keys[0].key: must not be empty (from env-expanded)"),
        (
            f'" {SECRET}"',
            "$.keys[0].key: must be printable characters with no spaces at either end "
            "(from literal; the value is not shown)",
        ),
        (
            '"${PADDED}"',
            "$.keys[0].key: must be printable characters with no spaces at either end "
            "(from env-expanded; the value is not shown)",
        ),
        (
            f'"{SECRET}\\u0007"',
            "$.keys[0].key: must be printable characters with no spaces at either end "
            "(from literal; the value is not shown)",
        ),
    ],
)
def test_unusable_keys_are_rejected_without_being_shown(value: str, message: str) -> None:
    environ = {"EMPTY": "", "PADDED": SECRET + "\n"}
    assert problems(keys(('"a"', value)), environ) == [message]


def test_names_are_unique_and_so_are_keys() -> None:
    text = keys(
        ('"team-a"', '"${A}"'),
        ('"team-b"', '"${B}"'),
        ('"team-a"', '"other-0123456789abc"'),
        ('"team-c"', '"${A}"'),
        ('"  "', '"blank-0123456789abc"'),
    )
    assert problems(text, {"A": SECRET, "B": SECRET + "x"}) == [
        "$.keys[2].name: duplicate key name 'team-a' (also $.keys[0])",
        "$.keys[3].key: 'team-c' has the same key as 'team-a' ($.keys[0]); "
        "give each client its own key",
        "$.keys[4].name: must not be empty",
    ]
