"""``check``, ``providers`` and ``init`` as a user runs them: output, exit codes, no secrets.

Each runs through the console script's own ``main()`` with its argv, environment and
working directory, in this process: the same code as ``arbstr-trio check``, without a
Python start per run (``test_cli.py`` runs the real processes).
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import subprocess
from pathlib import Path
from unittest import mock

from arbstr_trio.cli import main

LITERAL_KEY = "sk-literal-0123456789abcdef"
EXPANDED_KEY = "sk-expanded-0123456789abcdef"
CONVENTION_KEY = "sk-convention-0123456789abcdef"
SECRETS = (LITERAL_KEY, EXPANDED_KEY, CONVENTION_KEY)

FOUR_KEY_SOURCES = f"""
[[providers]]
name = "expanded"
url = "https://expanded.example/v1"
api_key = "${{TEST_EXPANDED_KEY}}"
models = ["gpt-4o", "gpt-4o-mini"]
input_rate = 2500
output_rate = 10000
tier = "frontier"

[[providers]]
name = "by-convention"
url = "https://convention.example/v1"
model_map = {{ "llama" = "meta/llama-3" }}
input_rate = 0.5
output_rate = 1.25
base_fee = 2

[[providers]]
name = "literal"
url = "https://literal.example/v1"
api_key = "{LITERAL_KEY}"
models = ["gpt-4o-mini"]

[[providers]]
name = "keyless"
url = "http://127.0.0.1:11434/v1"
tier = "local"
"""

CONVENTION_VARIABLE = "ARBSTR_BY_CONVENTION_API_KEY"


def run(
    *args: str,
    set_env: dict[str, str] | None = None,
    unset: tuple[str, ...] = (),
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """The CLI with exactly these variables set and unset, whatever the caller's environment."""
    gone = {
        "ARBSTR_CONFIG",
        "TEST_EXPANDED_KEY",
        "TEST_TEAM_A_KEY",
        CONVENTION_VARIABLE,
        "OPENAI_API_KEY",
        *unset,
    }
    env = {key: value for key, value in os.environ.items() if key not in gone}
    env.update(set_env or {})
    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, env, clear=True),
        contextlib.chdir(cwd or Path.cwd()),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            status = main(list(args))
        except SystemExit as exit_:  # argparse: --help, a usage error
            status = exit_.code if isinstance(exit_.code, int) else 1
    return subprocess.CompletedProcess(list(args), status, out.getvalue(), err.getvalue())


def write_config(tmp_path: Path, text: str = FOUR_KEY_SOURCES, mode: int = 0o600) -> Path:
    path = tmp_path / "arbstr.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def assert_no_secret(result: subprocess.CompletedProcess[str]) -> None:
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


ALL_KEYS = {"TEST_EXPANDED_KEY": EXPANDED_KEY, CONVENTION_VARIABLE: CONVENTION_KEY}


def test_providers_prints_an_aligned_table_with_keys_masked(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    result = run("providers", "-c", str(path), set_env=ALL_KEYS)
    assert result.returncode == 0, result.stderr
    assert_no_secret(result)
    header, *rows, legend = result.stdout.splitlines()
    assert header.split() == [
        *("NAME", "URL", "MODELS", "INPUT", "OUTPUT", "BASE", "FEE", "TIER", "KEY", "KEY"),
        "SOURCE",
    ]
    assert legend == "rates: sats per 1M tokens; base fee: sats per request"
    assert [row.split()[0] for row in rows] == ["expanded", "by-convention", "literal", "keyless"]
    cells = {row.split()[0]: row.split() for row in rows}
    assert cells["expanded"][1:] == [
        "https://expanded.example/v1",
        "gpt-4o,gpt-4o-mini",
        *("2500", "10000", "0", "frontier", "sk-exp...***", "env-expanded"),
        "(${TEST_EXPANDED_KEY})",
    ]
    assert cells["by-convention"][2:9] == [
        *("llama", "0.5", "1.25", "2", "standard", "sk-con...***", "convention")
    ]
    assert cells["literal"][7:] == ["sk-lit...***", "literal", "(in", "the", "file)"]
    assert cells["keyless"][2] == "any"
    assert cells["keyless"][7:] == ["-", "missing"]
    # Aligned: every column starts at the same offset on every line.
    for column in ("URL", "MODELS", "TIER", "KEY SOURCE"):
        offset = header.index(column)
        assert all(row[offset - 2 : offset] == "  " and row[offset] != " " for row in rows)
    # The literal key's warning goes to stderr, keeping the table clean.
    assert "provider 'literal': api_key is written in the config file" in result.stderr


def test_providers_and_check_read_arbstr_config_or_say_what_is_missing(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    for command in ("providers", "check"):
        via_env = run(command, set_env={**ALL_KEYS, "ARBSTR_CONFIG": str(path)})
        assert via_env.returncode == 0, via_env.stderr
        assert "expanded" in via_env.stdout
        nothing = run(command)
        assert nothing.returncode == 1
        assert (
            nothing.stderr.strip() == "error: no configuration: pass -c FILE or set ARBSTR_CONFIG"
        )


def test_check_reports_each_key_source(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    result = run("check", "-c", str(path), set_env=ALL_KEYS)
    assert result.returncode == 0, result.stderr
    assert_no_secret(result)
    lines = result.stdout.splitlines()
    assert f"{path}: ok (4 providers)" in lines
    assert "  expanded       key: env-expanded (${TEST_EXPANDED_KEY})" in lines
    assert f"  by-convention  key: convention ({CONVENTION_VARIABLE})" in lines
    assert "  literal        key: literal (in the file)" in lines
    assert (
        "  keyless        key: missing: no key is sent "
        "(set ARBSTR_KEYLESS_API_KEY if the provider needs one)"
    ) in lines
    assert any("provider 'literal': api_key is written in the config file" in x for x in lines)
    assert not any("can be read by group or others" in line for line in lines)

    # The convention variable unset: that provider has no key now.
    unset = run("check", "-c", str(path), set_env={"TEST_EXPANDED_KEY": EXPANDED_KEY})
    assert unset.returncode == 0, unset.stderr
    assert "  by-convention  key: missing: no key is sent" in unset.stdout

    # The convention variable set for the literal one: it wins, and the file's is ignored.
    overridden = run(
        "check", "-c", str(path), set_env={**ALL_KEYS, "ARBSTR_LITERAL_API_KEY": CONVENTION_KEY}
    )
    assert "  literal        key: convention (ARBSTR_LITERAL_API_KEY)" in overridden.stdout
    assert_no_secret(overridden)

    # ${VAR} unset: an error naming it, exit 1.
    missing = run("check", "-c", str(path), set_env={CONVENTION_VARIABLE: CONVENTION_KEY})
    assert missing.returncode == 1
    assert (
        "$.providers[0].api_key: environment variable TEST_EXPANDED_KEY is not set"
        in missing.stderr
    )
    assert_no_secret(missing)


CLIENT_EXPANDED_KEY = "team-a-expanded-0123456789abcdef"
CLIENT_LITERAL_KEY = "ci-literal-0123456789abcdef"
CLIENT_SECRETS = (CLIENT_EXPANDED_KEY, CLIENT_LITERAL_KEY)

CHAINS_AND_CLIENT_KEYS = (
    FOUR_KEY_SOURCES
    + f"""
[[chains]]
name = "fast"
entries = [
  {{ provider = "expanded", model = "gpt-4o-mini" }},
  {{ provider = "literal", model = "gpt-4o-mini" }},
]

[[keys]]
name = "team-a"
key = "${{TEST_TEAM_A_KEY}}"

[[keys]]
name = "ci"
key = "{CLIENT_LITERAL_KEY}"
"""
)

WITH_CLIENT_KEYS = {**ALL_KEYS, "TEST_TEAM_A_KEY": CLIENT_EXPANDED_KEY}


def assert_no_client_secret(result: subprocess.CompletedProcess[str]) -> None:
    assert_no_secret(result)
    for secret in CLIENT_SECRETS:
        assert secret not in result.stdout + result.stderr


def test_check_reports_each_client_key_source(tmp_path: Path) -> None:
    path = write_config(tmp_path, CHAINS_AND_CLIENT_KEYS)
    result = run("check", "-c", str(path), set_env=WITH_CLIENT_KEYS)
    assert result.returncode == 0, result.stderr
    assert_no_client_secret(result)
    lines = result.stdout.splitlines()
    assert "  expanded       key: env-expanded (${TEST_EXPANDED_KEY})" in lines
    assert "  client key team-a: env-expanded (${TEST_TEAM_A_KEY})" in lines
    assert "  client key ci:     literal (in the file)" in lines
    # Not even the masked prefix: check prints no key material at all.
    assert "...***" not in result.stdout
    assert any("client key 'ci': key is written in the config file" in x for x in lines)

    # The client key's ${VAR} unset: an error naming it, never a key.
    missing = run("check", "-c", str(path), set_env=ALL_KEYS, unset=("TEST_TEAM_A_KEY",))
    assert missing.returncode == 1
    assert "$.keys[0].key: environment variable TEST_TEAM_A_KEY is not set" in missing.stderr
    assert_no_client_secret(missing)


def test_check_without_client_keys_prints_no_client_key_lines(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    result = run("check", "-c", str(path), set_env=ALL_KEYS)
    assert result.returncode == 0, result.stderr
    assert "client key" not in result.stdout


def test_providers_lists_chains_and_masked_client_keys(tmp_path: Path) -> None:
    path = write_config(tmp_path, CHAINS_AND_CLIENT_KEYS)
    result = run("providers", "-c", str(path), set_env=WITH_CLIENT_KEYS)
    assert result.returncode == 0, result.stderr
    assert_no_client_secret(result)
    providers, chains, client_keys = result.stdout.rstrip("\n").split("\n\n")
    assert providers.splitlines()[-1] == "rates: sats per 1M tokens; base fee: sats per request"
    assert len(providers.splitlines()) == 6  # header, four providers, legend
    chain_header, *chain_rows = chains.splitlines()
    assert chain_header.split() == ["CHAIN", "STRATEGY", "ENTRIES"]
    assert [row.split() for row in chain_rows] == [
        ["fast", "ordered", "expanded/gpt-4o-mini,", "literal/gpt-4o-mini"]
    ]
    key_header, *key_rows = client_keys.splitlines()
    assert key_header.split() == ["CLIENT", "KEY", "KEY", "KEY", "SOURCE"]
    assert [row.split() for row in key_rows] == [
        ["team-a", "team-a...***", "env-expanded", "(${TEST_TEAM_A_KEY})"],
        ["ci", "ci-lit...***", "literal", "(in", "the", "file)"],
    ]
    for column in ("KEY", "KEY SOURCE"):
        offset = key_header.index(column, len("CLIENT KEY"))
        assert all(row[offset - 2 : offset] == "  " and row[offset] != " " for row in key_rows)
    # The literal client key's warning goes to stderr.
    assert "client key 'ci': key is written in the config file" in result.stderr


def test_check_warns_about_a_readable_file_and_fails_on_a_bad_one(tmp_path: Path) -> None:
    readable = write_config(tmp_path, mode=0o644)
    warned = run("check", "-c", str(readable), set_env=ALL_KEYS)
    assert warned.returncode == 0
    assert f"warning: config file {readable} can be read by group or others" in warned.stdout
    bad = write_config(tmp_path, '[[providers]]\nname = "a"\nurl = "ftp://x"\n')
    failed = run("check", "-c", str(bad))
    assert failed.returncode == 1
    assert "$.providers[0].url: must be an http:// or https:// URL" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_init_writes_a_private_starter_that_check_accepts(tmp_path: Path) -> None:
    result = run("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wrote arbstr.toml (mode 0600)")
    path = tmp_path / "arbstr.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert text.startswith("# arbstr-trio configuration")
    assert 'api_key = "${OPENAI_API_KEY}"' in text

    checked = run("check", "-c", str(path), set_env={"OPENAI_API_KEY": EXPANDED_KEY})
    assert checked.returncode == 0, checked.stderr
    assert "warning" not in checked.stdout + checked.stderr
    assert f"{path}: ok (2 providers)" in checked.stdout
    assert "  openai  key: env-expanded (${OPENAI_API_KEY})" in checked.stdout
    assert_no_secret(checked)
    listed = run("providers", "-c", str(path), set_env={"OPENAI_API_KEY": EXPANDED_KEY})
    assert listed.returncode == 0
    assert "sk-exp...***" in listed.stdout
    assert_no_secret(listed)

    # Without the variable it names, check says which one.
    unset = run("check", "-c", str(path))
    assert unset.returncode == 1
    assert "environment variable OPENAI_API_KEY is not set" in unset.stderr


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text("# my own config\n")
    result = run("init", str(path))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {path} already exists; not overwriting it (move it away or name another PATH)"
    )
    assert path.read_text() == "# my own config\n"
    nowhere = run("init", str(tmp_path / "no-such-dir" / "arbstr.toml"))
    assert nowhere.returncode == 1
    assert "cannot create" in nowhere.stderr
    assert "no such file or directory" in nowhere.stderr
    assert "Traceback" not in nowhere.stderr


def test_help_for_the_config_commands() -> None:
    for command, phrase in (
        ("providers", "masked to its first 6 characters"),
        ("check", "env-expanded"),
        ("check", "each client key's"),
        ("providers", "the chains"),
        ("init", "never overwritten"),
    ):
        result = run(command, "--help")
        assert result.returncode == 0
        assert f"usage: arbstr-trio {command}" in result.stdout
        assert phrase in " ".join(result.stdout.split())
    assert "--config FILE" in run("providers", "--help").stdout
    assert "PATH" in run("init", "--help").stdout
