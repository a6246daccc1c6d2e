"""``serve --workers``: several processes on one socket, supervised, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import trio

from tests.conftest import chat_body
from tests.test_cli import DEADLINE_S, cli_process, run_cli

ADMIN_TOKEN = "admin-4d5e6f7a8b9c0d1e2f3a"
CONFIG = """
[server]
listen = "127.0.0.1:0"

[[providers]]
name = "alpha"
url = "http://mock.invalid/v1"
models = ["gpt-4o-mini"]

[admin]
token = "{token}"
"""


def children_of(pid: int) -> set[int]:
    """Child processes, whichever of the process's threads started them."""
    return {
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    }


async def exited(pid: int) -> None:
    """Return once ``pid`` (not our child) has ended: a pidfd turns readable then."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


async def test_workers_share_the_port_take_admin_changes_together_and_stop_on_sigterm(
    tmp_path: Path,
) -> None:
    config = tmp_path / "arbstr.toml"
    config.write_text(CONFIG.format(token=ADMIN_TOKEN))
    config.chmod(0o600)
    async with cli_process("serve", "--mock", "--workers", "2", "-c", str(config)) as proxy:
        assert proxy.stdout[0].endswith("(2 workers)")
        url = proxy.url.split()[0]
        workers = children_of(proxy.process.pid)
        assert len(workers) == 2
        # A fresh connection each time, so the kernel may hand any to either worker.
        for _ in range(6):
            async with httpx.AsyncClient(base_url=url) as client:
                response = await client.post("/v1/chat/completions", json=chat_body())
                assert response.status_code == 200, response.text

        async with httpx.AsyncClient(base_url=url) as client:
            created = await client.post(
                "/v1/admin/providers",
                json={"name": "beta", "url": "http://beta.invalid/v1", "models": ["gpt-4o"]},
                headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            assert created.status_code == 201, created.text

        # Changes made at once in different workers all survive: each is made under
        # the overlay's lock, on the overlay as the file holds it then.
        async def create(name: str) -> None:
            async with httpx.AsyncClient(base_url=url) as client:
                response = await client.put(
                    f"/v1/admin/providers/{name}",
                    json={"url": f"http://{name}.invalid/v1", "models": ["gpt-4o"]},
                    headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                )
                assert response.status_code in (200, 201), response.text

        async with trio.open_nursery() as nursery:
            for n in range(8):
                nursery.start_soon(create, f"extra{n}")
        overlay = json.loads((tmp_path / "arbstr.toml.admin.json").read_text())
        assert sorted(overlay["providers"]) == ["beta", *(f"extra{n}" for n in range(8))]

        # The other worker reloads on the supervisor's SIGHUP: every connection, on
        # whichever worker, sees every change once it has (within the deadline; a
        # worker that never reloaded would fail here).
        expected = {"alpha", "beta", *(f"extra{n}" for n in range(8))}
        in_a_row = 0
        while in_a_row < 10:
            async with httpx.AsyncClient(base_url=url) as client:
                providers = (await client.get("/providers")).json()["providers"]
            in_a_row = in_a_row + 1 if {p["name"] for p in providers} == expected else 0

        proxy.process.send_signal(signal.SIGTERM)
        assert await proxy.process.wait() == 0
        assert not any(alive(pid) for pid in workers)
        assert proxy.process.stderr is not None
        log = bytearray()
        while chunk := await proxy.process.stderr.receive_some():
            log.extend(chunk)
        # Both workers reloaded, not only the one a change reached (SIGHUPs pending at
        # once are delivered as one, so not once per change).
        assert log.count(b"SIGHUP: reloading the configuration") >= 2, log.decode()
        assert ADMIN_TOKEN.encode() not in log


async def test_workers_stop_by_themselves_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    async with cli_process("serve", "--mock", "--workers", "2", "-l", "127.0.0.1:0") as proxy:
        workers = children_of(proxy.process.pid)
        assert len(workers) == 2
        proxy.process.kill()  # SIGKILL: the supervisor cannot stop them itself
        await proxy.process.wait()
        with trio.fail_after(DEADLINE_S):
            for pid in workers:
                await exited(pid)


def test_budgets_need_a_single_worker(tmp_path: Path) -> None:
    config = tmp_path / "arbstr.toml"
    config.write_text(
        CONFIG.format(token=ADMIN_TOKEN)
        + '\n[[keys]]\nname = "team"\nkey = "team-1a2b3c4d5e6f"\nmax_sats_per_day = 10\n'
    )
    config.chmod(0o600)
    result = run_cli("serve", "--mock", "--workers", "2", "-c", str(config))
    assert result.returncode == 1
    assert "$.keys[0]: budgets" in result.stderr
    assert "single worker" in result.stderr
    assert "team-1a2b3c4d5e6f" not in result.stderr + result.stdout


async def test_sigterm_to_the_whole_group_still_lets_streams_finish() -> None:
    # systemd's default KillMode sends SIGTERM to every process of the unit: each
    # worker hears it twice (once relayed), which must not mean "stop at once".
    async with cli_process("serve", "--mock", "--workers", "2", "-l", "127.0.0.1:0") as proxy:
        url = proxy.url.split()[0]
        workers = children_of(proxy.process.pid)
        slow = {"x-mock": "chunks=20; chunk_delay_ms=25"}
        async with (
            httpx.AsyncClient(base_url=url, timeout=10) as client,
            client.stream(
                "POST", "/v1/chat/completions", json=chat_body(stream=True), headers=slow
            ) as stream,
        ):
            assert stream.status_code == 200
            texts = stream.aiter_text()
            assert (await anext(texts)).startswith("data: ")
            for pid in (proxy.process.pid, *workers):
                os.kill(pid, signal.SIGTERM)
            rest = "".join([text async for text in texts])
        assert rest.endswith("data: [DONE]\n\n")
        assert await proxy.process.wait() == 0
