"""The three things a benchmark calls: the fast upstream, arbstr-trio, and LiteLLM.

Each runs as its own process on its own port, all against the one fast upstream, so
that "direct", "arbstr-trio" and "LiteLLM" differ only in what sits in between.

arbstr-trio runs as a user would run it: ``arbstr-trio serve -c <config>`` (``python
-m arbstr_trio serve``, from a copy of the working tree taken when the run starts) with the
request log on (a fresh SQLite file), two providers that are both the fast upstream
under different path prefixes (``a`` cheaper, so it serves unless it fails; ``b`` is
where failover goes), everything else at its defaults.

LiteLLM runs from its own virtualenv (``bench/.venv-litellm``, created on first use
with the version pinned here) so that its hundred dependencies never meet ours, and
offline: ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (no cost map download),
``--telemetry False``, no ``DATABASE_URL`` (no Postgres, no spend logs), one uvicorn
worker. Its model group is two deployments, the same two prefixes, with
``router_settings.num_retries`` so that it, too, retries and falls over.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import attrs
from procs import Server, free_port, start_server

__all__ = [
    "LITELLM_VERSION",
    "MODEL",
    "ArbstrCommand",
    "arbstr_supports_workers",
    "ensure_litellm",
    "installed_arbstr",
    "snapshot_arbstr",
    "start_arbstr",
    "start_litellm",
    "start_upstream",
]

LITELLM_VERSION = "1.103.7"
MODEL = "bench-model"
BENCH_DIR = Path(__file__).resolve().parent
LITELLM_VENV = BENCH_DIR / ".venv-litellm"
LITELLM_NUM_RETRIES = 3


def start_upstream(workdir: Path, seed: int = 1) -> Server:
    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    command = [
        sys.executable,
        str(BENCH_DIR / "fast_upstream.py"),
        "--port",
        str(port),
        "--seed",
        str(seed),
    ]
    return start_server(
        "upstream", command, base, base + "/models", workdir / "upstream.log", timeout=15
    )


@attrs.frozen
class ArbstrCommand:
    """How to start the arbstr-trio under test: a command prefix, its environment, and
    which code that is."""

    prefix: tuple[str, ...]
    env: dict[str, str] | None
    version: str


def snapshot_arbstr(workdir: Path) -> ArbstrCommand:
    """A copy of the working tree's ``arbstr_trio`` package, run as ``python -m
    arbstr_trio`` with it first on ``PYTHONPATH``.

    Others edit the tree while a run takes a quarter of an hour; without a copy, servers
    started later in the run (the workers table) would measure different code from
    those started first. The version is a hash of the copied sources.
    """
    source = BENCH_DIR.parent / "arbstr_trio"
    target = workdir / "src" / "arbstr_trio"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    digest = hashlib.sha256()
    for path in sorted(target.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(target)).encode() + b"\0" + path.read_bytes())
    env = dict(os.environ)
    env["PYTHONPATH"] = str(workdir / "src")
    return ArbstrCommand((sys.executable, "-m", "arbstr_trio"), env, digest.hexdigest()[:12])


def installed_arbstr(executable: str) -> ArbstrCommand:
    """An ``arbstr-trio`` executable as it is (``--arbstr PATH``)."""
    return ArbstrCommand((executable,), None, executable)


def arbstr_supports_workers(arbstr: ArbstrCommand) -> bool:
    """Whether ``arbstr-trio serve`` knows ``--workers`` yet."""
    result = subprocess.run(
        [*arbstr.prefix, "serve", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env=arbstr.env,
        cwd=tempfile.gettempdir(),
    )
    return "--workers" in result.stdout


def arbstr_config(upstream: Server, port: int, database: Path, log_level: str) -> str:
    root = upstream.base_url.removesuffix("/v1")
    return (
        f'[server]\nlisten = "127.0.0.1:{port}"\n\n'
        f'[database]\npath = "{database}"\n\n'
        f'[logging]\nlevel = "{log_level}"\n\n'
        f'[[providers]]\nname = "a"\nurl = "{root}/a/v1"\nmodels = ["{MODEL}"]\n'
        "input_rate = 100\noutput_rate = 400\n\n"
        f'[[providers]]\nname = "b"\nurl = "{root}/b/v1"\nmodels = ["{MODEL}"]\n'
        "input_rate = 150\noutput_rate = 600\n"
    )


def start_arbstr(
    upstream: Server, workdir: Path, *, arbstr: ArbstrCommand, workers: int = 1, log_level: str
) -> Server:
    """``arbstr-trio serve -c <generated config>``; ``--workers`` only when above one."""
    port = free_port()
    run_dir = Path(tempfile.mkdtemp(prefix=f"arbstr-w{workers}-", dir=workdir))
    config = run_dir / "arbstr.toml"
    config.write_text(arbstr_config(upstream, port, run_dir / "requests.db", log_level))
    config.chmod(0o600)
    command = [*arbstr.prefix, "serve", "-c", str(config)]
    if workers > 1:
        command += ["--workers", str(workers)]
    base = f"http://127.0.0.1:{port}/v1"
    return start_server(
        f"arbstr-trio x{workers}",
        command,
        base,
        f"http://127.0.0.1:{port}/health",
        run_dir / "serve.log",
        env=arbstr.env,
        timeout=30,
        cwd=str(run_dir),  # not the repository: python -m puts the cwd first on sys.path
    )


def litellm_config(upstream: Server) -> str:
    """Two deployments of one model group, retried and fallen over by LiteLLM's router."""
    root = upstream.base_url.removesuffix("/v1")
    deployments = "".join(
        f"  - model_name: {MODEL}\n"
        f"    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {root}/{prefix}/v1\n"
        f"      api_key: sk-bench-unused\n"
        for prefix in ("a", "b")
    )
    return (
        f"model_list:\n{deployments}"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
        "router_settings:\n"
        f"  num_retries: {LITELLM_NUM_RETRIES}\n"
        "general_settings: {}\n"
    )


def ensure_litellm() -> tuple[Path | None, str]:
    """The ``litellm`` executable of bench/.venv-litellm, created on first use; or None
    and why not."""
    executable = LITELLM_VENV / "bin" / "litellm"
    python = LITELLM_VENV / "bin" / "python"
    if executable.exists():
        check = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.stdout.strip() == LITELLM_VERSION:
            return executable, ""
    print(f"setting up LiteLLM {LITELLM_VERSION} in {LITELLM_VENV} (first run only) ...")
    steps = [
        [sys.executable, "-m", "venv", str(LITELLM_VENV)],
        [str(python), "-m", "pip", "install", "--quiet", f"litellm[proxy]=={LITELLM_VERSION}"],
    ]
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            errors = [line for line in result.stderr.splitlines() if "WARNING" not in line]
            return None, f"could not install litellm[proxy]=={LITELLM_VERSION}: " + " ".join(
                errors[-3:]
            )
    return (executable, "") if executable.exists() else (None, "litellm not found after install")


def start_litellm(upstream: Server, workdir: Path, executable: Path) -> Server:
    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(litellm_config(upstream))
    env = dict(os.environ)
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", NO_DOCS="True")
    for variable in ("DATABASE_URL", "LITELLM_MASTER_KEY", "REDIS_HOST"):
        env.pop(variable, None)
    command = [
        str(executable),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
        "--telemetry",
        "False",
    ]
    return start_server(
        "litellm",
        command,
        f"http://127.0.0.1:{port}/v1",
        f"http://127.0.0.1:{port}/health/liveliness",
        workdir / "litellm.log",
        env=env,
        timeout=120,
        cwd=str(workdir),
    )
